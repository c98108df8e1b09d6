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
        encs = self.tok.encode_batch(texts) if len(texts) > 1 else [self.tok.encode(texts[0])]
        width = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        return ids, mask
