"""A LiteRT bundle (`nanoforge export BUNDLE --format tflite`: a classifier, a span tagger or a
decoder as one .tflite file) answered through LiteRT's own interpreter (`ai-edge-litert`),
by the code path a phone app takes: tokenise, pick the signature whose padded length fits,
run it with batch 1, decode the outputs. docs/MOBILE.md spells the same steps out for
Kotlin and Swift.

    nano = load("runs/demo/tflite")            # a bundle whose model.runtime is "litert"
    nano.predict("what's my checking balance")  # the same answer shape as the ONNX bundle's

The kind's rules (tokeniser, gate, BIO decoding, prompt layout, sampling, schema constraint,
gold and metrics) are those of the family's runtime class, on the section the file was
exported from (`model.source`); only the engine differs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nanoforge.errors import BundleError, NanoforgeError
from nanoforge.manifest import Decoder, Litert, Manifest
from nanoforge.runtime.base import Nano
from nanoforge.runtime.classifier import ClassifierNano
from nanoforge.runtime.decoder import DecoderNano
from nanoforge.runtime.generation import Stepper
from nanoforge.runtime.tagger import TaggerNano

# Signature and tensor names, as the exporter writes them (nanoforge/export/tflite.py).
PREFILL, DECODE = "prefill_{}", "decode"
TOKENS, INPUT_POS, LOGITS = "tokens", "input_pos", "logits"


def encoder_signature(length: int) -> str:
    return f"len_{length}"


def cache_names(layers: int) -> list[str]:
    """The decoder's cache tensors, inputs and outputs alike: k then v of each layer."""
    return [f"kv_cache_{kv}_{layer}" for layer in range(layers) for kv in "kv"]


def interpreter(path: Path, threads: int | None):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise NanoforgeError("a LiteRT bundle needs LiteRT's interpreter: pip install 'nanoforge[litert-runtime]' "
                             "(the ai-edge-litert package)") from None
    try:
        return Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1)
    except (ValueError, RuntimeError) as e:
        raise BundleError(f"{path}: LiteRT cannot load this model ({str(e).splitlines()[0][:200]})") from None


def bucket(lengths: list[int], n: int) -> int:
    """The shortest signature length that holds n tokens."""
    for length in lengths:
        if length >= n:
            return length
    raise NanoforgeError(f"{n} tokens do not fit the model's longest signature ({lengths[-1]})")


class EncoderRunner:
    """onnxruntime's runner interface (`run(output_names, feeds)`) over the encoder
    signatures: each row is cut to its tokens, padded to the next signature length and run
    alone; outputs come back stacked, per-token outputs padded again to the batch's width."""

    def __init__(self, path: Path, section: Litert, threads: int | None):
        self.lengths = list(section.lengths)
        self.graph = section.source.graph
        self.pad_id = section.source.pad_id
        it = interpreter(path, threads)
        found = set(it.get_signature_list())
        want = {encoder_signature(n) for n in self.lengths}
        if not want <= found:
            raise BundleError(f"{path}: signatures {', '.join(sorted(want - found))} are missing")
        self.runners = {n: it.get_signature_runner(encoder_signature(n)) for n in self.lengths}

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        ids, mask = (feeds[t.name] for t in self.graph.inputs)
        rows = []
        for r in range(len(ids)):
            n = int(np.flatnonzero(mask[r]).max()) + 1 if mask[r].any() else 1
            width = bucket(self.lengths, n)
            x = np.full((1, width), self.pad_id, np.int32)
            m = np.zeros((1, width), np.int32)
            x[0, :n], m[0, :n] = ids[r, :n], mask[r, :n]
            rows.append(self.runners[width](**{self.graph.inputs[0].name: x, self.graph.inputs[1].name: m}))
        out = {}
        for t in self.graph.outputs:
            parts = [row[t.name][0] for row in rows]
            if t.shape[1] == "seq":  # per-token outputs: back to the batch's width
                width = ids.shape[1]
                stacked = np.zeros((len(parts), width, parts[0].shape[-1]), np.float32)
                for r, p in enumerate(parts):
                    stacked[r, : min(width, len(p))] = p[:width]
                out[t.name] = stacked
            else:
                out[t.name] = np.stack(parts)
        return [out[n] for n in (output_names or self.graph.output_names)]


class FixedCacheStepper:
    """The decoder signatures with LiteRT's fixed-size KV cache, one prompt at a time: a
    prompt's tokens but the last fill the cache in the shortest `prefill_<n>` that holds them
    (padding past them is overwritten before it is ever attended to), then `decode` feeds one
    token at its position and gives the next-token logits."""

    def __init__(self, path: Path, section: Litert, threads: int | None):
        src: Decoder = section.source
        it = interpreter(path, threads)
        self.lengths = list(section.lengths)
        self.cache_length = section.cache_length
        self.names = cache_names(src.cache.layers)
        self.shape = (1, section.cache_length, src.cache.kv_heads, src.cache.head_dim)  # LiteRT's layout
        self.prefill = {n: it.get_signature_runner(PREFILL.format(n)) for n in self.lengths}
        self.decode = it.get_signature_runner(DECODE)

    def start(self, prompts: list[list[int]]) -> np.ndarray:
        self.caches, self.pos = [], []
        logits = []
        for p in prompts:
            if len(p) > self.cache_length:
                raise NanoforgeError(f"a prompt of {len(p)} tokens exceeds the model's context ({self.cache_length})")
            cache = {n: np.zeros(self.shape, np.float32) for n in self.names}
            if len(p) > 1:
                width = bucket(self.lengths, len(p) - 1)
                tokens = np.zeros((1, width), np.int32)
                tokens[0, : len(p) - 1] = p[:-1]
                cache = self.prefill[width](**{TOKENS: tokens, INPUT_POS: np.arange(width, dtype=np.int32), **cache})
            self.caches.append(cache)
            self.pos.append(len(p) - 1)
            logits.append(self._decode(len(self.caches) - 1, p[-1]))
        return np.stack(logits)

    def next(self, tokens: np.ndarray, active: list[bool]) -> np.ndarray:
        return np.stack([self._decode(r, int(t)) if active[r] else np.zeros_like(self.last)
                         for r, t in enumerate(tokens)])

    def _decode(self, row: int, token: int) -> np.ndarray:
        pos = self.pos[row]
        if pos >= self.cache_length:
            raise NanoforgeError(f"the answer reached the model's context ({self.cache_length} tokens)")
        out = self.decode(**{TOKENS: np.array([[token]], np.int32), INPUT_POS: np.array([pos], np.int32),
                             **self.caches[row]})
        self.caches[row] = {n: out[n] for n in self.names}
        self.pos[row] = pos + 1
        self.last = out[LOGITS][0, -1]
        return self.last


class LitertClassifierNano(ClassifierNano):
    """ClassifierNano (tokeniser, gate, rules) over the .tflite's `len_<n>` signatures."""

    runtime = "litert"

    def open_runner(self, file: str, threads: int | None) -> EncoderRunner:
        return EncoderRunner(self.dir / self.manifest.model.file, self.manifest.model, threads)


class LitertTaggerNano(TaggerNano):
    """TaggerNano (windows, BIO decoding, typed values, thresholds) over the `len_<n>` signatures."""

    runtime = "litert"

    def open_runner(self, file: str, threads: int | None) -> EncoderRunner:
        return EncoderRunner(self.dir / self.manifest.model.file, self.manifest.model, threads)


class LitertDecoderNano(DecoderNano):
    """DecoderNano (prompt layout, sampling, stop strings, streaming, schema constraint)
    over the `prefill_<n>` / `decode` signatures and their fixed KV cache."""

    runtime = "litert"

    def open_stepper(self, s: Decoder, threads: int | None, model_file: str | None = None) -> Stepper:
        return FixedCacheStepper(self.dir / (model_file or self.manifest.model.file), self.manifest.model, threads)


def load_litert(bundle_dir: str | Path, threads: int | None = None, manifest: Manifest | None = None) -> Nano:
    """The LiteRT runtime class for the kind of bundle the file was exported from."""
    cls = {"decoder": LitertDecoderNano, "encoder-classifier": LitertClassifierNano,
           "encoder-tagger": LitertTaggerNano}[manifest.model.source.runtime]
    return cls(bundle_dir, threads=threads, manifest=manifest)
