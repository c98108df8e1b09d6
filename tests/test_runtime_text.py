"""Length grouping of a batch (nanoforge/runtime/text.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nanoforge.runtime.text import length_groups


def brute_force(lengths: list[int], max_size: int, call_cost: float) -> float:
    n, best = len(lengths), float("inf")
    for cuts in itertools.product([0, 1], repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        runs = list(zip(bounds, bounds[1:]))
        if all(e - s <= max_size for s, e in runs):
            best = min(best, sum(call_cost + (e - s) * lengths[e - 1] for s, e in runs))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_groups_are_optimal_contiguous_and_bounded(seed):
    rng = np.random.default_rng(seed)
    lengths = sorted(rng.integers(3, 30, size=int(rng.integers(1, 11))).tolist())
    max_size, call_cost = int(rng.integers(1, 6)), float(rng.choice([0.5, 3, 20]))
    runs = length_groups(lengths, max_size, call_cost)
    assert runs[0][0] == 0 and runs[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(runs, runs[1:])) and all(0 < e - s <= max_size for s, e in runs)
    cost = sum(call_cost + (e - s) * lengths[e - 1] for s, e in runs)
    assert cost == pytest.approx(brute_force(lengths, max_size, call_cost))


def test_short_and_long_queries_are_not_padded_together():
    lengths = [8] * 12 + [27] * 4
    assert length_groups(lengths, 16) == [(0, 12), (12, 16)]
    assert length_groups([8] * 16, 16) == [(0, 16)]  # equal lengths: one call
    assert length_groups([], 16) == []
