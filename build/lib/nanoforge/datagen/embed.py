"""Sentence embeddings for near-duplicate and contamination checks, and the diversity figures.

The embedding is the student's own view of a text: its encoder base (the packaged MiniLM,
or the spec's local folder), mean-pooled over the tokens as the encoder student pools, unit
length. A task whose student is a decoder uses the packaged encoder.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nanoforge.data import normalise
from nanoforge.task import TaskSpec

PACKAGED_ENCODER = "minilm-l6"
MAX_TOKENS = 256  # of a text embedded (fewer where the base has fewer positions)
BATCH = 32


def embedding_base(spec: TaskSpec) -> str:
    return spec.student.base if spec.student.kind == "encoder" else PACKAGED_ENCODER


class Embedder:
    """texts -> unit vectors (float32, one row per text) from an encoder base."""

    def __init__(self, base: str, seed: int = 0) -> None:
        from nanoforge.students.encoder import base_tokenizer, build_student

        model, folder = build_student(base, num_labels=1, seed=seed)
        self.base = base
        self.model = model.eval()
        config = model.encoder.config
        self.dim = int(config.hidden_size)
        positions = int(getattr(config, "max_position_embeddings", MAX_TOKENS + 2))
        self.tokenizer = base_tokenizer(folder, min(MAX_TOKENS, positions - 2))

    def __call__(self, texts: list[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        with torch.inference_mode():
            for rows, ids, mask in self.tokenizer.length_batches(texts, BATCH):
                _, pooled = self.model(torch.from_numpy(ids), torch.from_numpy(mask))
                out[rows] = torch.nn.functional.normalize(pooled.float(), dim=-1).numpy()
                if progress:
                    progress(len(rows))
        return out


def diversity(texts: list[str], vectors: np.ndarray) -> dict[str, float | None]:
    """How varied the kept inputs are: distinct 1- and 2-gram ratios (unique / all word
    n-grams), the mean cosine distance between two inputs, and the mean distance of an input
    from their centroid (the spread). None where fewer than two inputs."""
    tokens = [normalise(t).split() for t in texts]
    grams1 = [w for ws in tokens for w in ws]
    grams2 = [(a, b) for ws in tokens for a, b in zip(ws, ws[1:])]
    n = len(texts)
    figures: dict[str, float | None] = {
        "distinct_1": len(set(grams1)) / len(grams1) if grams1 else None,
        "distinct_2": len(set(grams2)) / len(grams2) if grams2 else None,
        "mean_pairwise_distance": None,
        "spread": None,
    }
    if n >= 2:
        total = vectors.astype(np.float64).sum(0)
        mean_cos = (float(total @ total) - n) / (n * (n - 1))  # the off-diagonal mean of V Vᵀ
        centroid = total / np.linalg.norm(total) if np.linalg.norm(total) > 0 else total
        figures["mean_pairwise_distance"] = 1.0 - mean_cos
        figures["spread"] = float(np.mean(1.0 - vectors.astype(np.float64) @ centroid))
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}
