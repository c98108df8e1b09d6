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
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out.append((idx, *self.pad([rows[i] for i in idx])))
        return out


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 arrays, right-padded to the longest row."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask
