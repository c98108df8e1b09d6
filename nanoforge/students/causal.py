"""Decoder students: a whole Llama-architecture causal LM in one readable file.

    cfg = CausalConfig(vocab_size=8000, hidden_size=256, num_layers=4, num_heads=4)
    model = CausalLM(cfg)                       # from scratch
    model = CausalLM.from_hf(hf_llama)          # or the weights of any HF Llama-family model
    logits, k, v = model(ids, mask, pos, past_k, past_v)

Why not run the Hugging Face class directly? This module takes and returns the KV cache
as two plain tensors, (layers, batch, kv_heads, past, head_dim) each, so one ONNX graph
with `past_k/past_v -> present_k/present_v` serves prefill and incremental decoding, and
the torch-free runtime (nanoforge/runtime/generation.py) drives it with numpy. Its graph
(names, dtypes, axes) is `nanoforge.manifest.DECODER_GRAPH`. The maths is
Llama's (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU), so HF Llama weights
(SmolLM2 among them) load unchanged; tests check logits against `LlamaForCausalLM` on a
tiny random config.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nanoforge.manifest import DECODER_GRAPH

NEG = -1e9  # additive mask value (not -inf: a fully masked padding row stays finite)


@dataclass
class CausalConfig:
    vocab_size: int
    hidden_size: int = 256
    intermediate_size: int = 704
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None  # grouped-query attention; default: one per head
    max_position: int = 512
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    tie_embeddings: bool = True
    head_size: int | None = None  # width of a head; default hidden_size // num_heads (set once heads are pruned)

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if (self.head_size is None and self.hidden_size % self.num_heads) or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, c) -> "CausalConfig":
        if getattr(c, "model_type", None) not in ("llama", "mistral", "qwen2"):
            raise ValueError(f"decoder base of type {getattr(c, 'model_type', None)!r} is not Llama-family")
        if getattr(c, "rope_scaling", None):
            raise ValueError("rope_scaling is not supported")
        return cls(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                   num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads,
                   num_kv_heads=c.num_key_value_heads or c.num_attention_heads,
                   max_position=c.max_position_embeddings, rope_theta=getattr(c, "rope_theta", 10000.0),
                   rms_eps=c.rms_norm_eps, tie_embeddings=bool(getattr(c, "tie_word_embeddings", False)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: CausalConfig):
        super().__init__()
        self.cfg = cfg
        d, h, kvh = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        self.q_proj = nn.Linear(cfg.hidden_size, h * d, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, kvh * d, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, kvh * d, bias=False)
        self.o_proj = nn.Linear(h * d, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, mask, past_k, past_v):
        q, k, v = self.qkv(x, cos, sin)
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
        return self.attend(q, k, v, mask), k, v

    def qkv(self, x, cos, sin):
        """Queries, keys and values of x (B, S, H) at its rotary positions: (B, heads, S, D)."""
        b, s, _ = x.shape
        c = self.cfg
        q = self.q_proj(x).view(b, s, c.num_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, c.num_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, c.num_kv_heads, c.head_dim).transpose(1, 2)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    def attend(self, q, k, v, mask):
        """Attention of q over the cache k, v (B, kv_heads, positions, D) under the additive mask."""
        b, _, s, _ = q.shape
        c = self.cfg
        rep = c.num_heads // c.num_kv_heads
        kk = k.repeat_interleave(rep, dim=1) if rep > 1 else k
        vv = v.repeat_interleave(rep, dim=1) if rep > 1 else v
        att = (q @ kk.transpose(-1, -2)) / math.sqrt(c.head_dim) + mask
        out = F.softmax(att, dim=-1) @ vv
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


class MLP(nn.Module):
    def __init__(self, cfg: CausalConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: CausalConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, past_k, past_v):
        h, k, v = self.self_attn(self.input_layernorm(x), cos, sin, mask, past_k, past_v)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), k, v


class CausalLM(nn.Module):
    graph = DECODER_GRAPH

    def __init__(self, cfg: CausalConfig):
        super().__init__()
        self.checkpointing = False  # student.grad_checkpointing: recompute each block in backward
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)
        self.apply(self._init)

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def empty_cache(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        shape = (c.num_layers, batch, c.num_kv_heads, 0, c.head_dim)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_k=None, past_v=None):
        """input_ids (B, S); attention_mask (B, P+S) 1 = real token (left padding allowed);
        position_ids (B, S); past_k/past_v (L, B, KVH, P, D). Returns (logits (B, S, V),
        present_k, present_v) with P+S positions."""
        h, ks, vs = self.hidden(input_ids, attention_mask, position_ids, past_k, past_v)
        return self.lm_head(h), ks, vs

    def rotary(self, position_ids):
        """cos and sin of the rotary embedding at (B, S) positions: (B, 1, S, head_dim) each."""
        freqs = position_ids.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)

    def hidden(self, input_ids, attention_mask=None, position_ids=None, past_k=None, past_v=None):
        """The final normed hidden states (B, S, H) and the cache; training applies `lm_head`
        only where a loss is taken (the answer tokens), which saves most of the vocabulary
        projection on long prompts."""
        b, s = input_ids.shape
        if past_k is None:
            past_k, past_v = self.empty_cache(b, input_ids.device)
        p = past_k.shape[3]
        dev = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones(b, p + s, dtype=torch.int64, device=dev)
        if position_ids is None:
            position_ids = (torch.arange(s, device=dev) + p).unsqueeze(0).expand(b, s)
        cos, sin = self.rotary(position_ids)
        q_idx = torch.arange(s, device=dev).unsqueeze(1) + p
        k_idx = torch.arange(p + s, device=dev).unsqueeze(0)
        allowed = (k_idx <= q_idx).unsqueeze(0).unsqueeze(0) & (attention_mask[:, None, None, :] > 0)
        mask = torch.where(allowed, torch.zeros((), dtype=torch.float32, device=dev), torch.full((), NEG, device=dev))
        x = self.embed_tokens(input_ids)
        ks, vs = [], []
        for i, layer in enumerate(self.layers):
            if self.checkpointing and self.training:  # recompute activations in backward: less memory
                x, k, v = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, past_k[i], past_v[i],
                                                            use_reentrant=False)
            else:
                x, k, v = layer(x, cos, sin, mask, past_k[i], past_v[i])
            ks.append(k)
            vs.append(v)
        return self.norm(x), torch.stack(ks), torch.stack(vs)

    # -- weights in and out (safetensors only) -------------------------------------------

    @classmethod
    def from_hf(cls, hf_model) -> "CausalLM":
        """Copy a Hugging Face Llama-family model's weights (LlamaForCausalLM & co.)."""
        cfg = CausalConfig.from_hf(hf_model.config)
        model = cls(cfg)
        state = {k.removeprefix("model."): v for k, v in hf_model.state_dict().items()}
        if cfg.tie_embeddings:
            state.pop("lm_head.weight", None)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if not (cfg.tie_embeddings and m == "lm_head.weight")]
        if missing or unexpected:
            raise ValueError(f"weights do not match (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model

    def save(self, folder: str | Path, meta: dict | None = None) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        if self.cfg.tie_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, str(folder / "model.safetensors"))
        (folder / "causal.json").write_text(json.dumps({"config": asdict(self.cfg), **(meta or {})}, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> tuple["CausalLM", dict]:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / "causal.json").read_text())
        model = cls(CausalConfig(**meta["config"]))
        state = load_file(str(folder / "model.safetensors"))
        model.load_state_dict(state, strict=not model.cfg.tie_embeddings)
        return model.eval(), meta
