"""Torch-free text generation on an ONNX decoder with a KV cache (numpy + onnxruntime).

The model is a runner of the decoder graph declared in nanoforge/manifest.py
(`input_ids`, `attention_mask`, `position_ids`, `past_k`, `past_v` -> `logits`,
`present_k`, `present_v`): the bundle's ONNX session, or in training the torch model
through the same runner interface. One call over the whole prompt fills the cache
(prefill); each further call feeds only the newest token (incremental decoding). Batches
are left-padded, so every row's next token sits in the last column.

    gen = Generator(session, eos_ids=[2], pad_id=0, num_layers=4, kv_heads=4, head_dim=64)
    for ids in gen.generate([[1, 57, 99, 3]], max_new_tokens=64):   # one list of new ids per step
        ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from nanoforge.manifest import DECODER_GRAPH
from nanoforge.runtime.session import Runner, bind


@dataclass
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None


def _pick(logits: np.ndarray, s: Sampling, rng: np.random.Generator) -> np.ndarray:
    """Next token per row from (rows, vocab) logits."""
    if s.temperature <= 0:
        return logits.argmax(-1)
    z = logits.astype(np.float64) / s.temperature
    z -= z.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    out = np.empty(len(p), dtype=np.int64)
    for r in range(len(p)):
        order = np.argsort(-p[r])
        keep = order[: int(np.searchsorted(np.cumsum(p[r][order]), s.top_p) + 1)]
        q = p[r][keep] / p[r][keep].sum()
        out[r] = keep[rng.choice(len(keep), p=q)]
    return out


class Generator:
    def __init__(self, runner: Runner, eos_ids: list[int], pad_id: int, num_layers: int, kv_heads: int,
                 head_dim: int):
        self.step = bind(runner, DECODER_GRAPH)  # (ids, mask, pos, past_k, past_v) -> logits, present_k, present_v
        self.eos = set(eos_ids)
        self.pad_id = pad_id
        self.cache_shape = (num_layers, kv_heads, head_dim)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, sampling: Sampling | None = None,
                 allowed: Callable[[int, list[int]], np.ndarray | None] | None = None,
                 logprobs: list[list[float]] | None = None) -> Iterator[list[int | None]]:
        """Yield, per step, each row's new token id (None once the row has finished).
        `allowed(row, ids_so_far)` may return a boolean vocabulary mask (constrained
        decoding); a row whose mask allows nothing finishes. With `logprobs` (one list per
        row), each new token's log-probability under the model (after the mask, before any
        temperature) is appended to its row's list."""
        sampling = sampling or Sampling()
        rng = np.random.default_rng(sampling.seed)
        b = len(prompts)
        width = max(len(p) for p in prompts)
        ids = np.full((b, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((b, width), dtype=np.int64)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = p
            mask[r, width - len(p):] = 1
        pos = np.maximum(mask.cumsum(1) - 1, 0)
        layers, heads, dim = self.cache_shape
        past_k = np.zeros((layers, b, heads, 0, dim), np.float32)
        past_v = past_k
        done = [False] * b
        produced: list[list[int]] = [[] for _ in range(b)]
        for _ in range(max_new_tokens):
            logits, past_k, past_v = self.step(ids, mask, pos, past_k, past_v)
            last = logits[:, -1, :]
            if allowed is not None:
                last = last.copy()
                for r in range(b):
                    if done[r]:
                        continue
                    ok = allowed(r, produced[r])
                    if ok is not None:
                        if not ok.any():
                            done[r] = True
                            continue
                        last[r, ~ok] = -np.inf
            nxt = _pick(last, sampling, rng)
            if logprobs is not None:
                top = last.max(-1, keepdims=True)
                norm = (top + np.log(np.exp(last - top).sum(-1, keepdims=True)))[:, 0]
            out: list[int | None] = []
            for r in range(b):
                if done[r]:
                    out.append(None)
                    nxt[r] = self.pad_id
                    continue
                tok = int(nxt[r])
                if tok in self.eos:
                    done[r] = True
                    out.append(None)
                else:
                    produced[r].append(tok)
                    out.append(tok)
                    if logprobs is not None:
                        logprobs[r].append(float(last[r, tok] - norm[r]))
            yield out
            if all(done):
                return
            ids = nxt.reshape(b, 1).astype(np.int64)
            mask = np.concatenate([mask, np.ones((b, 1), np.int64)], axis=1)
            pos = pos[:, -1:] + 1
