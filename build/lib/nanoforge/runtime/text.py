"""Tokenisation shared by training and the runtime (the `tokenizers` library only).

Training encodes with exactly this code, so the exported model sees the same ids in
the runtime as it did in torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


class TextEncoder:
    def __init__(self, tokenizer: Tokenizer, max_length: int, pad_id: int = 0):
        self.tok = tokenizer
        self.max_length = max_length
        self.pad_id = pad_id
        self.tok.no_padding()
        self.tok.enable_truncation(max_length)

    @classmethod
    def from_file(cls, path: str | Path, max_length: int, pad_id: int | None = None) -> "TextEncoder":
        tok = Tokenizer.from_file(str(path))
        if pad_id is None:
            pad_id = next((tok.token_to_id(t) for t in ("[PAD]", "<pad>", "<|pad|>") if tok.token_to_id(t) is not None), 0)
        return cls(tok, max_length, pad_id)

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (input_ids, attention_mask) as int64 arrays padded to the longest text."""
        return self.pad(self.token_ids(texts))

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        encs = self.tok.encode_batch(texts) if len(texts) > 1 else [self.tok.encode(texts[0])]
        return [e.ids for e in encs]

    def pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        return pad_rows(rows, self.pad_id)

    def length_batches(self, texts: list[str], batch_size: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(row indices, input_ids, attention_mask) per batch, texts of similar token length
        together: a batch of short queries is not padded to its one long query."""
        rows = self.token_ids(texts)
        order = np.argsort([len(r) for r in rows], kind="stable")
        out = []
        for start, end in length_groups([len(rows[i]) for i in order], batch_size):
            idx = order[start:end]
            out.append((idx, *self.pad([rows[i] for i in idx])))
        return out


# What one more model call costs, in padded tokens. An encoder's time is close to linear in
# batch x padded length (3-layer MiniLM, one thread: 52-57 us a token at any batch size from 1
# to 32, measured once), and a call adds ~0.1 ms of its own plus the Python around it.
CALL_COST_TOKENS = 5.0


def length_groups(lengths: list[int], max_size: int, call_cost: float = CALL_COST_TOKENS) -> list[tuple[int, int]]:
    """Split ascending `lengths` into runs [start, end) of at most `max_size` that minimise
    padded tokens plus `call_cost` per run (exact, by dynamic programming: each run is padded
    to its last, longest row). 16 random CLINC150 queries padded together are ~1.7x the
    tokens of the queries themselves; in runs they are ~1.06x (bench/runtime_choices.py)."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        width = lengths[end - 1]
        for start in range(max(0, end - max_size), end):
            cost = best[start] + call_cost + (end - start) * width
            if cost < best[end]:
                best[end], cut[end] = cost, start
    runs, end = [], n
    while end > 0:
        runs.append((cut[end], end))
        end = cut[end]
    return runs[::-1]


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 arrays, right-padded to the longest row."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask
