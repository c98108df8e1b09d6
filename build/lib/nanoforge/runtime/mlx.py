"""An MLX bundle (`nanoforge export BUNDLE --format mlx`) answered on Apple's MLX (`mlx.core`
only: no mlx-lm, no torch), on the Mac's GPU or any CPU (`mlx[cpu]` on Linux).

    nano = load("runs/en-ja/mlx")              # a bundle whose model.runtime is "mlx"
    nano.predict("I'm in the tennis club.")    # the ONNX bundle's answer shape

The models are written out here in MLX, one readable function each: BERT (mean-pooled
classifier or per-token tagger) and Llama (RMSNorm, rotary embeddings, grouped-query
attention, SwiGLU) with its KV cache kept as MLX arrays. A quantised export's Linear weights
run through `mx.quantized_matmul`. The kind's rules are the family's runtime class's, on the
section the weights were exported from (`model.source`), as for the other engines.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from nanoforge.errors import BundleError, NanoforgeError
from nanoforge.manifest import Decoder, Manifest, Mlx
from nanoforge.runtime.base import Nano
from nanoforge.runtime.classifier import ClassifierNano
from nanoforge.runtime.decoder import DecoderNano
from nanoforge.runtime.generation import Stepper
from nanoforge.runtime.tagger import TaggerNano

NEG = -1e9  # additive mask value, as the torch student uses


def _mx():
    try:
        import mlx.core as mx
    except ImportError:
        raise NanoforgeError("an MLX bundle needs MLX: pip install 'nanoforge[mlx]' (mlx, with its [cpu] "
                             "extra on Linux)") from None
    return mx


class Weights:
    """The bundle's tensors as MLX arrays; `linear` runs a (possibly quantised) Linear layer."""

    def __init__(self, path: Path, section: Mlx):
        mx = _mx()
        try:
            self.w = mx.load(str(path))
        except (RuntimeError, ValueError) as e:
            raise BundleError(f"{path}: MLX cannot read these weights ({str(e).splitlines()[0][:200]})") from None
        self.quant = section.quantization or {}

    def __getitem__(self, name: str):
        try:
            return self.w[name]
        except KeyError:
            raise BundleError(f"weights: tensor {name!r} is missing") from None

    def linear(self, x, name: str):
        mx = _mx()
        if f"{name}.scales" in self.w:
            y = mx.quantized_matmul(x, self.w[f"{name}.weight"], self.w[f"{name}.scales"], self.w[f"{name}.biases"],
                                    transpose=True, **self.quant)
        else:
            y = x @ self.w[f"{name}.weight"].T
        bias = self.w.get(f"{name}.bias")
        return y if bias is None else y + bias


def layer_norm(x, w, b, eps: float):
    mx = _mx()
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * mx.rsqrt(var + eps) * w + b


# ----------------------------------------------------------------------------- BERT


class Bert:
    """A Hugging Face BertModel's forward (absolute positions, token type 0, exact GELU) under
    the student's names (`encoder.` + BERT's), its head under `head.`."""

    def __init__(self, weights: Weights, config: dict[str, Any]):
        if config.get("hidden_act", "gelu") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise BundleError("config: the MLX runtime reads BERT with exact GELU and absolute positions")
        self.w, self.c = weights, config
        self.heads, self.eps = int(config["num_attention_heads"]), float(config.get("layer_norm_eps", 1e-12))

    def hidden(self, ids: np.ndarray, mask: np.ndarray):
        mx, w = _mx(), self.w
        e = "encoder.embeddings."
        b, s = ids.shape
        x = w[e + "word_embeddings.weight"][mx.array(ids.astype(np.int32))] + w[e + "position_embeddings.weight"][:s] \
            + w[e + "token_type_embeddings.weight"][0]
        x = layer_norm(x, w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"], self.eps)
        add = mx.where(mx.array(mask)[:, None, None, :] > 0, 0.0, NEG).astype(mx.float32)
        d = x.shape[-1] // self.heads
        for n in range(int(self.c["num_hidden_layers"])):
            p = f"encoder.encoder.layer.{n}."

            def heads(t):
                return t.reshape(b, s, self.heads, d).transpose(0, 2, 1, 3)

            q, k, v = (heads(w.linear(x, p + f"attention.self.{m}")) for m in ("query", "key", "value"))
            att = mx.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + add, axis=-1)
            h = w.linear((att @ v).transpose(0, 2, 1, 3).reshape(b, s, -1), p + "attention.output.dense")
            x = layer_norm(h + x, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                           self.eps)
            h = w.linear(_gelu(w.linear(x, p + "intermediate.dense")), p + "output.dense")
            x = layer_norm(h + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
        return x


def _gelu(x):
    mx = _mx()
    return 0.5 * x * (1 + mx.erf(x / math.sqrt(2)))


class EncoderRunner:
    """onnxruntime's runner interface (`run(output_names, feeds)`) over the MLX BERT: the
    classifier's mean-pooled `pooled` and its `logits`, or the tagger's per-token `logits`."""

    def __init__(self, bert: Bert, graph):
        self.bert, self.graph = bert, graph

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        mx = _mx()
        ids, mask = (feeds[t.name] for t in self.graph.inputs)
        hidden = self.bert.hidden(ids, mask)
        if "pooled" in self.graph.output_names:
            m = mx.array(mask)[:, :, None].astype(mx.float32)
            pooled = (hidden * m).sum(1) / mx.maximum(m.sum(1), 1e-9)
            out = {"logits": self.bert.w.linear(pooled, "head"), "pooled": pooled}
        else:
            out = {"logits": self.bert.w.linear(hidden, "head")}
        mx.eval(*out.values())
        return [np.array(out[n]) for n in (output_names or self.graph.output_names)]


# ----------------------------------------------------------------------------- Llama


class Llama:
    """A Hugging Face Llama (`model.` names, `lm_head` or tied embeddings): one call over new
    tokens with the cache of earlier ones, a list of (k, v) per layer, (B, kv_heads, P, D)."""

    def __init__(self, weights: Weights, config: dict[str, Any]):
        self.w, self.c = weights, config
        self.heads = int(config["num_attention_heads"])
        self.kv_heads = int(config.get("num_key_value_heads") or self.heads)
        self.d = int(config.get("head_dim") or int(config["hidden_size"]) // self.heads)
        self.eps = float(config["rms_norm_eps"])
        mx = _mx()
        self.inv_freq = 1.0 / (float(config["rope_theta"]) ** (mx.arange(0, self.d, 2).astype(mx.float32) / self.d))
        self.head = "lm_head" if "lm_head.weight" in weights.w else None

    def __call__(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, cache: list):
        mx, w = _mx(), self.w
        b, s = ids.shape
        past = cache[0][0].shape[2] if cache else 0
        freqs = mx.array(pos)[..., None].astype(mx.float32) * self.inv_freq
        emb = mx.concatenate([freqs, freqs], axis=-1)
        cos, sin = mx.cos(emb)[:, None], mx.sin(emb)[:, None]
        allowed = (mx.arange(past + s)[None, :] <= (mx.arange(s) + past)[:, None])[None, None] \
            & (mx.array(mask)[:, None, None, :] > 0)
        add = mx.where(allowed, 0.0, NEG).astype(mx.float32)
        x = w["model.embed_tokens.weight"][mx.array(ids.astype(np.int32))]
        new = []
        for n in range(int(self.c["num_hidden_layers"])):
            p = f"model.layers.{n}."
            h = _rms(x, w[p + "input_layernorm.weight"], self.eps)
            q = self._heads(w.linear(h, p + "self_attn.q_proj"), self.heads)
            k = self._heads(w.linear(h, p + "self_attn.k_proj"), self.kv_heads)
            v = self._heads(w.linear(h, p + "self_attn.v_proj"), self.kv_heads)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            if cache:
                k, v = mx.concatenate([cache[n][0], k], axis=2), mx.concatenate([cache[n][1], v], axis=2)
            new.append((k, v))
            g = self.heads // self.kv_heads  # each kv head's queries attend as one group
            att = (q.reshape(b, self.kv_heads, g * s, self.d) @ k.transpose(0, 1, 3, 2)).reshape(b, self.heads, s, -1)
            att = mx.softmax(att / math.sqrt(self.d) + add, axis=-1)
            o = (att.reshape(b, self.kv_heads, g * s, -1) @ v).reshape(b, self.heads, s, self.d)
            x = x + w.linear(o.transpose(0, 2, 1, 3).reshape(b, s, -1), p + "self_attn.o_proj")
            h = _rms(x, w[p + "post_attention_layernorm.weight"], self.eps)
            x = x + w.linear(_silu(w.linear(h, p + "mlp.gate_proj")) * w.linear(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        x = _rms(x[:, -1:], w["model.norm.weight"], self.eps)
        logits = w.linear(x, self.head) if self.head else x @ w["model.embed_tokens.weight"].T
        return logits[:, -1], new

    def _heads(self, t, n: int):
        b, s, _ = t.shape
        return t.reshape(b, s, n, self.d).transpose(0, 2, 1, 3)


def _rms(x, weight, eps: float):
    mx = _mx()
    return weight * (x * mx.rsqrt((x * x).mean(-1, keepdims=True) + eps))


def _rotate_half(x):
    mx = _mx()
    half = x.shape[-1] // 2
    return mx.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def _silu(x):
    mx = _mx()
    return x * mx.sigmoid(x)


class MlxStepper:
    """Generation's stepper over the MLX Llama: left-padded rows, the cache kept in MLX."""

    def __init__(self, model: Llama, pad_id: int):
        self.model, self.pad_id = model, pad_id

    def start(self, prompts: list[list[int]]) -> np.ndarray:
        width = max(len(p) for p in prompts)
        ids = np.full((len(prompts), width), self.pad_id, np.int64)
        self.mask = np.zeros((len(prompts), width), np.int64)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):], self.mask[r, width - len(p):] = p, 1
        self.pos = np.maximum(self.mask.cumsum(1) - 1, 0)
        self.cache: list = []
        return self._call(ids)

    def next(self, tokens: np.ndarray, active: list[bool]) -> np.ndarray:
        self.mask = np.concatenate([self.mask, np.ones((len(tokens), 1), np.int64)], axis=1)
        self.pos = self.pos[:, -1:] + 1
        return self._call(np.asarray(tokens, np.int64).reshape(-1, 1))

    def _call(self, ids: np.ndarray) -> np.ndarray:
        mx = _mx()
        logits, self.cache = self.model(ids, self.mask, self.pos, self.cache)
        mx.eval(logits, *[t for kv in self.cache for t in kv])
        return np.array(logits)


# ----------------------------------------------------------------------------- runtime classes


def _read(nano: Nano):
    s: Mlx = nano.manifest.model
    try:
        config = json.loads((nano.dir / s.config).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{nano.dir / s.config}: unreadable ({e})") from None
    return Weights(nano.dir / s.file, s), config


class MlxClassifierNano(ClassifierNano):
    runtime = "mlx"

    def open_runner(self, file: str, threads: int | None) -> EncoderRunner:
        return EncoderRunner(Bert(*_read(self)), self.section.graph)


class MlxTaggerNano(TaggerNano):
    runtime = "mlx"

    def open_runner(self, file: str, threads: int | None) -> EncoderRunner:
        return EncoderRunner(Bert(*_read(self)), self.section.graph)


class MlxDecoderNano(DecoderNano):
    runtime = "mlx"

    def open_stepper(self, s: Decoder, threads: int | None, model_file: str | None = None) -> Stepper:
        return MlxStepper(Llama(*_read(self)), s.prompt.pad_id)


def load_mlx(bundle_dir: str | Path, threads: int | None = None, manifest: Manifest | None = None) -> Nano:
    cls = {"decoder": MlxDecoderNano, "encoder-classifier": MlxClassifierNano,
           "encoder-tagger": MlxTaggerNano}[manifest.model.source.runtime]
    return cls(bundle_dir, threads=threads, manifest=manifest)
