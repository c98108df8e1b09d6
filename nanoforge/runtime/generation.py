"""Torch-free text generation over a decoder with a KV cache (numpy only).

The loop (sampling, masks, end tokens, log-probabilities) is the same for every engine; a
*stepper* holds the engine's cache and gives the next-token logits: `start(prompts)` fills
the cache with the prompts (prefill), `next(tokens, active)` feeds each row's newest token.
`CacheStepper` drives a runner of the decoder graph declared in nanoforge/manifest.py
(`input_ids`, `attention_mask`, `position_ids`, `past_k`, `past_v` -> `logits`,
`present_k`, `present_v`): the bundle's ONNX session, or in training the torch model
through the same runner interface. Its batches are left-padded, so every row's next token
sits in the last column. Other engines (runtime/litert.py) bring their own stepper.

    gen = Generator(CacheStepper(session, pad_id=0, num_layers=4, kv_heads=4, head_dim=64), eos_ids=[2], pad_id=0)
    for ids in gen.generate([[1, 57, 99, 3]], max_new_tokens=64):   # one list of new ids per step
        ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np

from nanoforge.manifest import DECODER_GRAPH
from nanoforge.runtime.session import Runner, bind


@dataclass
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None


def _pick(logits: np.ndarray, s: Sampling, rng: np.random.Generator) -> np.ndarray:
    """Next token per row from (rows, vocab) logits. The draw walks the kept tokens in id order,
    not by probability: two engines whose logits differ in the last bits (ONNX Runtime and
    LiteRT, say) rank near-equal tokens differently, and a seeded draw over another order picks
    another token; over the same order it moves only when it falls within that difference of a
    boundary."""
    if s.temperature <= 0:
        return logits.argmax(-1)
    z = logits.astype(np.float64) / s.temperature
    z -= z.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    out = np.empty(len(p), dtype=np.int64)
    for r in range(len(p)):
        keep = np.arange(p.shape[1])
        if s.top_p < 1:  # the nucleus: the most probable tokens holding top_p of the mass
            order = np.argsort(-p[r], kind="stable")
            keep = np.sort(order[: int(np.searchsorted(np.cumsum(p[r][order]), s.top_p) + 1)])
        q = p[r][keep] / p[r][keep].sum()
        out[r] = keep[rng.choice(len(keep), p=q)]
    return out


class Stepper(Protocol):
    def start(self, prompts: list[list[int]]) -> np.ndarray:
        """Fill the cache with the prompts; the next-token logits, (rows, vocab)."""

    def next(self, tokens: np.ndarray, active: list[bool]) -> np.ndarray:
        """Feed each row's newest token (rows not `active` have finished: their logits are unused)."""


class CacheStepper:
    """A runner of the decoder graph, its cache growing by one position a call."""

    def __init__(self, runner: Runner, pad_id: int, num_layers: int, kv_heads: int, head_dim: int):
        self.step = bind(runner, DECODER_GRAPH)  # (ids, mask, pos, past_k, past_v) -> logits, present_k, present_v
        self.pad_id = pad_id
        self.cache_shape = (num_layers, kv_heads, head_dim)

    def start(self, prompts: list[list[int]]) -> np.ndarray:
        b = len(prompts)
        width = max(len(p) for p in prompts)
        ids = np.full((b, width), self.pad_id, dtype=np.int64)
        self.mask = np.zeros((b, width), dtype=np.int64)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = p
            self.mask[r, width - len(p):] = 1
        self.pos = np.maximum(self.mask.cumsum(1) - 1, 0)
        layers, heads, dim = self.cache_shape
        self.past_k = self.past_v = np.zeros((layers, b, heads, 0, dim), np.float32)
        return self._call(ids)

    def next(self, tokens: np.ndarray, active: list[bool]) -> np.ndarray:
        b = len(tokens)
        self.mask = np.concatenate([self.mask, np.ones((b, 1), np.int64)], axis=1)
        self.pos = self.pos[:, -1:] + 1
        return self._call(tokens.reshape(b, 1).astype(np.int64))

    def _call(self, ids: np.ndarray) -> np.ndarray:
        logits, self.past_k, self.past_v = self.step(ids, self.mask, self.pos, self.past_k, self.past_v)
        return logits[:, -1, :]


class Generator:
    def __init__(self, stepper: Stepper, eos_ids: list[int], pad_id: int):
        self.stepper = stepper
        self.eos = set(eos_ids)
        self.pad_id = pad_id

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
        done = [False] * b
        produced: list[list[int]] = [[] for _ in range(b)]
        last = self.stepper.start(prompts)
        nxt = np.zeros(b, np.int64)
        for step in range(max_new_tokens):
            if step:  # the previous step's tokens in (finished rows feed the pad id)
                last = self.stepper.next(nxt, [not d for d in done])
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


def greedy_ids(generator: Generator, prompts: list[list[int]], max_new: int, batch_size: int = 16) -> list[list[int]]:
    """The greedy answer's token ids (end token excluded) for each prompt."""
    out: list[list[int]] = []
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s : s + batch_size]
        ids: list[list[int]] = [[] for _ in chunk]
        for step in generator.generate(chunk, max_new):
            for r, t in enumerate(step):
                if t is not None:
                    ids[r].append(t)
        out += ids
    return out


def forced_agreement(stepper: Stepper, prompts: list[list[int]], answers: list[list[int]], eos_ids: list[int],
                     max_new: int) -> float:
    """Share of answer positions where the stepper's likeliest next token is the reference
    answer's, fed that answer (teacher forcing: no error compounds); one prompt at a time.
    The end token after an answer shorter than `max_new` counts as a position too."""
    same = total = 0
    for prompt, answer in zip(prompts, answers):
        target = answer + [eos_ids[0]] if len(answer) < max_new else answer
        logits = stepper.start([prompt])
        for i, token in enumerate(target):
            if i:
                logits = stepper.next(np.array([target[i - 1]]), [True])
            same += int(logits[0].argmax() == token)
            total += 1
    return same / max(total, 1)
