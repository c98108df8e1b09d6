"""Out-of-scope gate: decides whether an input lies inside the nano's task.

Three scores, higher = more in-scope:
  msp          maximum softmax probability (Hendrycks & Gimpel, 2017)
  energy       logsumexp of the logits (Liu et al., 2020)
  mahalanobis  minus the smallest Mahalanobis distance of the pooled embedding to a
               class mean under a shared covariance (Lee et al., 2018)
The threshold is calibrated on in-scope validation inputs so that `target_retention`
of them pass. numpy only: the runtime uses this module as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

METHODS = ("msp", "energy", "mahalanobis")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def logsumexp(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=-1)
    return m + np.log(np.exp(logits - m[:, None]).sum(axis=-1))


def fit_mahalanobis(pooled: np.ndarray, labels: np.ndarray, num_labels: int, eps: float = 1e-3) -> dict[str, np.ndarray]:
    """Class means and the shared precision matrix from in-scope training embeddings."""
    pooled = pooled.astype(np.float64)
    d = pooled.shape[1]
    means = np.zeros((num_labels, d))
    for c in range(num_labels):
        rows = pooled[labels == c]
        if len(rows):
            means[c] = rows.mean(axis=0)
    centred = pooled - means[labels]
    cov = centred.T @ centred / max(len(pooled) - 1, 1)
    cov += eps * np.trace(cov) / d * np.eye(d)
    precision = np.linalg.inv(cov)
    return {"means": means.astype(np.float32), "precision": precision.astype(np.float32)}


def mahalanobis_score(pooled: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    return _mahalanobis(pooled, *_mahalanobis_terms(means, precision))


def _mahalanobis_terms(means: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parts of d2 = x'Px - 2 x'Pm + m'Pm that do not depend on the input, in float64:
    the expansion cancels (in float32 a score of -14.87 came out 3e-3 off its direct value)."""
    precision = precision.astype(np.float64)
    mp = means.astype(np.float64) @ precision  # (C, d)
    return precision, mp.T.copy(), (mp * means).sum(1)


def _mahalanobis(pooled: np.ndarray, precision: np.ndarray, mp_t: np.ndarray, mpm: np.ndarray) -> np.ndarray:
    x = pooled.astype(np.float64)
    d2 = ((x @ precision) * x).sum(1)[:, None] - 2 * x @ mp_t + mpm[None, :]
    return -d2.min(axis=1)


@dataclass
class Gate:
    method: str
    threshold: float
    params: dict[str, np.ndarray] = field(default_factory=dict)
    _terms: tuple | None = field(default=None, repr=False)

    def score(self, logits: np.ndarray, pooled: np.ndarray | None = None) -> np.ndarray:
        if self.method == "mahalanobis" and pooled is not None:
            if self._terms is None:  # computed once, not per batch (a 150x384x384 product)
                self._terms = _mahalanobis_terms(self.params["means"], self.params["precision"])
            return _mahalanobis(pooled, *self._terms)
        return gate_scores(self.method, logits, pooled, self.params)

    def accepts(self, scores: np.ndarray) -> np.ndarray:
        return scores >= self.threshold


def gate_scores(method: str, logits: np.ndarray, pooled: np.ndarray | None, params: dict[str, np.ndarray]) -> np.ndarray:
    if method == "msp":
        return softmax(logits).max(axis=-1)
    if method == "energy":
        return logsumexp(logits)
    if method == "mahalanobis":
        if pooled is None:
            raise ValueError("the mahalanobis gate needs the pooled embedding")
        return mahalanobis_score(pooled, params["means"], params["precision"])
    raise ValueError(f"unknown gate method {method!r}")


def calibrate(in_scope_scores: np.ndarray, target_retention: float) -> float:
    """Threshold that keeps `target_retention` of in-scope scores (lower tail rejected)."""
    if target_retention >= 1.0:
        return float(np.min(in_scope_scores)) - 1e-6
    return float(np.quantile(in_scope_scores, 1.0 - target_retention, method="lower"))
