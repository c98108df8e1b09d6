"""Out-of-scope gate: scores against brute-force definitions; calibration keeps its target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nanoforge.runtime.gate import (
    METHODS,
    Gate,
    calibrate,
    fit_mahalanobis,
    gate_scores,
    logsumexp,
    mahalanobis_score,
    softmax,
)

TARGETS = (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)


def score_arrays(seed: int):
    """Assorted score arrays: continuous, ties, tiny, negative, huge."""
    rng = np.random.default_rng(seed)
    yield rng.normal(size=rng.integers(1, 400))
    yield rng.integers(0, 5, size=rng.integers(1, 60)).astype(float)  # heavy ties
    yield np.full(rng.integers(1, 10), 0.7)
    yield -rng.exponential(50, size=rng.integers(2, 300))
    yield rng.uniform(0, 1, size=rng.integers(1, 7)).astype(np.float32)


def test_calibrate_keeps_target_share():
    checked = 0
    for seed in range(40):
        for scores in score_arrays(seed):
            for target in TARGETS:
                thr = calibrate(scores, target)
                assert isinstance(thr, float)
                kept = float(np.mean(scores >= thr))
                assert kept >= target - 1e-12, (seed, len(scores), target, kept)
                checked += 1
    assert checked == 40 * 5 * len(TARGETS)


def test_calibrate_full_retention_keeps_everything_through_gate():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=50).astype(np.float32)
    gate = Gate(method="msp", threshold=calibrate(scores, 1.0))
    assert gate.accepts(scores).all()


def test_calibrate_is_not_trivially_low():
    """The threshold rejects the lower tail: not far more than asked is kept."""
    rng = np.random.default_rng(1)
    for target in (0.8, 0.9, 0.95):
        scores = rng.normal(size=1000)
        kept = float(np.mean(scores >= calibrate(scores, target)))
        assert target <= kept <= target + 0.01


def test_msp_range_and_sums():
    rng = np.random.default_rng(2)
    for c in (2, 3, 10, 150):
        logits = rng.normal(scale=rng.uniform(0.01, 20), size=(64, c)).astype(np.float32)
        p = softmax(logits)
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
        msp = gate_scores("msp", logits, None, {})
        assert msp.shape == (64,)
        assert np.all(msp >= 1.0 / c - 1e-6) and np.all(msp <= 1.0 + 1e-6)
        assert np.allclose(msp, p.max(axis=1))
    # uniform logits: exactly 1/C
    assert np.allclose(gate_scores("msp", np.zeros((3, 4)), None, {}), 0.25)


def test_softmax_stable_for_large_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]])
    p = softmax(logits)
    assert np.all(np.isfinite(p))
    assert np.allclose(p[0], [1, 0, 0]) and np.allclose(p[1], 1 / 3)


def test_energy_equals_naive_logsumexp():
    rng = np.random.default_rng(3)
    for _ in range(20):
        c = int(rng.integers(2, 20))
        logits = rng.normal(scale=3, size=(16, c))
        naive = np.array([math.log(sum(math.exp(v) for v in row)) for row in logits])
        assert np.allclose(gate_scores("energy", logits, None, {}), naive, rtol=1e-10, atol=1e-10)
        assert np.allclose(logsumexp(logits), naive)


def test_energy_stable_for_large_logits():
    logits = np.array([[800.0, 800.0], [-800.0, -900.0]])
    e = logsumexp(logits)
    assert np.allclose(e, [800 + math.log(2), -800 + math.log1p(math.exp(-100))])


def brute_force_mahalanobis(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    out = []
    for row in x.astype(np.float64):
        d2 = [float((row - mu) @ precision.astype(np.float64) @ (row - mu)) for mu in means.astype(np.float64)]
        out.append(-min(d2))
    return np.array(out)


def random_spd(rng, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return (a @ a.T / d + 0.5 * np.eye(d)).astype(np.float32)


def test_mahalanobis_score_matches_brute_force():
    rng = np.random.default_rng(4)
    for _ in range(15):
        d, c, n = int(rng.integers(2, 16)), int(rng.integers(1, 8)), int(rng.integers(1, 30))
        means = rng.normal(scale=2, size=(c, d)).astype(np.float32)
        precision = random_spd(rng, d)
        x = rng.normal(scale=2, size=(n, d)).astype(np.float32)
        got = mahalanobis_score(x, means, precision)
        want = brute_force_mahalanobis(x, means, precision)
        assert got.shape == (n,)
        assert np.allclose(got, want, rtol=1e-3, atol=1e-3 * (1 + np.abs(want).max()))
        assert np.all(got <= 1e-3)  # minus a squared distance
        assert np.allclose(gate_scores("mahalanobis", np.zeros((n, c)), x, {"means": means, "precision": precision}),
                           got)


def test_mahalanobis_at_a_mean_is_zero():
    rng = np.random.default_rng(5)
    means = rng.normal(size=(3, 6)).astype(np.float32)
    got = mahalanobis_score(means.copy(), means, random_spd(rng, 6))
    assert np.allclose(got, 0.0, atol=1e-3)


def gaussian_clusters(rng, c=4, d=8, per=300, spread=0.5):
    centres = rng.normal(scale=5, size=(c, d))
    x = np.concatenate([centres[k] + spread * rng.normal(size=(per, d)) for k in range(c)])
    y = np.repeat(np.arange(c), per)
    return centres, x.astype(np.float32), y


def test_fit_mahalanobis_recovers_means_and_scores_outliers_lower():
    rng = np.random.default_rng(6)
    centres, x, y = gaussian_clusters(rng)
    params = fit_mahalanobis(x, y, num_labels=4)
    assert params["means"].shape == (4, 8) and params["precision"].shape == (8, 8)
    assert params["means"].dtype == np.float32 and params["precision"].dtype == np.float32
    assert np.allclose(params["means"], centres, atol=0.15)
    # shared covariance ~ 0.25 I, so precision ~ 4 I
    assert np.allclose(params["precision"], 4 * np.eye(8), atol=0.8)
    assert np.allclose(params["precision"], params["precision"].T, atol=1e-4)

    inside = centres + 0.3 * rng.normal(size=centres.shape)
    far = centres.mean(axis=0) + 40 * np.ones(8)
    between = (centres[0] + centres[1]) / 2
    s_in = mahalanobis_score(inside.astype(np.float32), **params)
    s_far = mahalanobis_score(far[None].astype(np.float32), **params)
    s_between = mahalanobis_score(between[None].astype(np.float32), **params)
    assert s_far[0] < s_in.min()
    assert s_between[0] < s_in.min()

    # calibrated on in-scope training points, the gate rejects the far point
    gate = Gate("mahalanobis", calibrate(mahalanobis_score(x, **params), 0.95), params)
    assert gate.accepts(gate.score(np.zeros((1, 4)), far[None].astype(np.float32))).tolist() == [False]
    assert gate.accepts(gate.score(np.zeros((4, 4)), inside.astype(np.float32))).all()


def test_fit_mahalanobis_empty_class_and_singular_covariance():
    rng = np.random.default_rng(7)
    # all points on a line in 3-d: covariance is singular without the ridge
    t = rng.normal(size=(50, 1))
    x = np.concatenate([t, 2 * t, np.zeros_like(t)], axis=1).astype(np.float32)
    y = np.zeros(50, dtype=int)
    params = fit_mahalanobis(x, y, num_labels=2)  # class 1 has no rows
    assert np.all(np.isfinite(params["precision"]))
    assert np.allclose(params["means"][1], 0.0)
    assert np.allclose(params["means"][0], x.mean(axis=0), atol=1e-5)


def test_gate_accepts_threshold_inclusive():
    gate = Gate(method="msp", threshold=0.5)
    scores = np.array([0.2, 0.5, 0.51, 0.4999, 1.0])
    assert gate.accepts(scores).tolist() == [False, True, True, False, True]


def test_gate_score_dispatch():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert np.allclose(Gate("msp", 0.0).score(logits), softmax(logits).max(1))
    assert np.allclose(Gate("energy", 0.0).score(logits), logsumexp(logits))
    with pytest.raises(ValueError, match="pooled"):
        Gate("mahalanobis", 0.0, {"means": np.zeros((3, 2)), "precision": np.eye(2)}).score(logits)
    with pytest.raises(ValueError, match="unknown gate method"):
        gate_scores("nope", logits, None, {})
    assert set(METHODS) == {"msp", "energy", "mahalanobis"}


def test_gate_accepts_peaked_rejects_flat_msp():
    peaked = np.array([[9.0, 0.0, 0.0]])
    flat = np.array([[0.1, 0.0, 0.05]])
    gate = Gate("msp", threshold=0.6)
    assert gate.accepts(gate.score(peaked)).tolist() == [True]
    assert gate.accepts(gate.score(flat)).tolist() == [False]
