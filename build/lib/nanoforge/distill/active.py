"""Which unlabelled inputs to pay the teacher for next (active learning), in numpy.

    pick = select(margin_uncertainty(probs), embeddings, labelled, k, rng)   # indices into the pool

The student's uncertainty says where it would learn most; taken alone it picks many near
copies of one confusing input, so the most uncertain `overshoot * k` candidates are thinned
to `k` by k-center greedy on the student's embeddings (Sener & Savarese, 2018): each pick is
the candidate farthest from everything labelled or picked so far.
"""

from __future__ import annotations

import numpy as np


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """1 - (p_top1 - p_top2) per row of probabilities: 1 where two labels tie."""
    p = np.sort(probs, axis=1)
    return 1.0 - (p[:, -1] - p[:, -2]) if p.shape[1] > 1 else 1.0 - p[:, -1]


def document_uncertainty(token_probs: np.ndarray, top: int = 16) -> float:
    """A tagged document's uncertainty: the mean margin uncertainty of its `top` least sure
    tokens (a long document is not more uncertain for being long)."""
    u = np.sort(margin_uncertainty(token_probs))[::-1]
    return float(u[:top].mean()) if len(u) else 0.0


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def k_center(emb: np.ndarray, centres: np.ndarray, candidates: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """`k` of `candidates` (indices into `emb`), each the farthest (cosine) from `centres`
    and the picks before it."""
    x = _unit(emb.astype(np.float32))
    cand = x[candidates]
    nearest = np.full(len(candidates), np.inf, np.float32)
    for s in range(0, len(centres), chunk):  # distance of each candidate to its nearest centre
        nearest = np.minimum(nearest, (1.0 - cand @ x[centres[s : s + chunk]].T).min(axis=1))
    picks = []
    for _ in range(min(k, len(candidates))):
        i = int(np.argmax(nearest))
        picks.append(candidates[i])
        nearest = np.minimum(nearest, 1.0 - cand @ cand[i])
        nearest[i] = -np.inf
    return np.asarray(picks, dtype=np.int64)


def select(uncertainty: np.ndarray, emb: np.ndarray, labelled: np.ndarray, k: int, rng: np.random.Generator,
           overshoot: int = 3) -> np.ndarray:
    """Indices of the next `k` pool rows to label: the `overshoot * k` most uncertain of the
    unlabelled rows (`labelled` is a boolean mask), thinned by k-center greedy."""
    free = np.flatnonzero(~labelled)
    if k >= len(free):
        return free
    scores = uncertainty[free] + rng.uniform(0, 1e-9, len(free))  # seeded tie-break
    candidates = free[np.argsort(-scores)[: overshoot * k]]
    centres = np.flatnonzero(labelled)
    if not len(centres):
        return candidates[:k]
    return k_center(emb, centres, candidates, k)
