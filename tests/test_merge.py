"""Checkpoint merging over state dicts (compress/merge.py)."""

from __future__ import annotations

import pytest
import torch

from nanoforge.compress import merge
from nanoforge.errors import NanoforgeError


def _state(seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return {"w": scale * torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g),
            "ids": torch.arange(3)}


def test_uniform_is_the_mean_and_keeps_dtypes():
    a, b, c = _state(0), _state(1), _state(2)
    m = merge.uniform([a, b, c])
    torch.testing.assert_close(m["w"], (a["w"] + b["w"] + c["w"]) / 3)
    assert m["ids"].dtype == torch.int64 and torch.equal(m["ids"], a["ids"])
    w = merge.uniform([a, b], weights=[3, 1])
    torch.testing.assert_close(w["b"], 0.75 * a["b"] + 0.25 * b["b"])


def test_incompatible_checkpoints_are_named():
    a, b = _state(0), _state(1)
    b["w"] = torch.zeros(5, 3)
    with pytest.raises(NanoforgeError, match=r"run-b: w has shape \(5, 3\)"):
        merge.check_compatible([a, b], ["run-a", "run-b"])
    c = _state(1)
    c["ids"] = torch.arange(1, 4)
    with pytest.raises(NanoforgeError, match="ids is not a float tensor and differs"):
        merge.uniform([a, c])
    with pytest.raises(NanoforgeError, match="at least two"):
        merge.uniform([a])


def test_slerp_ends_and_keeps_the_norm_between_equal_norm_tensors():
    a, b = _state(0), _state(1)
    torch.testing.assert_close(merge.slerp(a, b, 0.0)["w"], a["w"])
    torch.testing.assert_close(merge.slerp(a, b, 1.0)["w"], b["w"])
    b["w"] = b["w"] * a["w"].norm() / b["w"].norm()
    mid = merge.slerp(a, b, 0.5)["w"]
    assert abs(float(mid.norm() - a["w"].norm())) < 1e-4  # on the sphere, not inside it
    assert float(((a["w"] + b["w"]) / 2).norm()) < float(mid.norm())
    same = merge.slerp(a, a, 0.3)
    torch.testing.assert_close(same["w"], a["w"])


def test_ties_trims_elects_signs_and_averages_agreeing_entries():
    base = {"w": torch.zeros(4)}
    s1 = {"w": torch.tensor([1.0, -2.0, 0.5, 3.0])}
    s2 = {"w": torch.tensor([3.0, 1.0, 0.25, -1.5])}
    s3 = {"w": torch.tensor([2.0, -1.2, -1.0, 0.0])}
    m = merge.ties(base, [s1, s2, s3], density=1.0)["w"]
    # entry 1: the sign of -2 + 1 - 1.2 is -, so mean(-2, -1.2); entry 2: of 0.5 + 0.25 - 1, -: only -1
    torch.testing.assert_close(m, torch.tensor([2.0, -1.6, -1.0, 3.0]))
    trimmed = merge.ties(base, [s1, s2, s3], density=0.5)["w"]  # each keeps its 2 largest entries
    torch.testing.assert_close(trimmed, torch.tensor([2.5, -1.6, 0.0, 3.0]))
    head = merge.ties({}, [{"h": torch.ones(2)}, {"h": 3 * torch.ones(2)}])  # not in the base: mean
    torch.testing.assert_close(head["h"], 2 * torch.ones(2))


def test_greedy_soup_leaves_out_an_ingredient_that_hurts():
    target = torch.tensor([1.0, 1.0])
    good1, good2 = {"w": torch.tensor([0.8, 1.2])}, {"w": torch.tensor([1.2, 0.8])}
    bad = {"w": torch.tensor([-5.0, 9.0])}

    def score(s):
        return -float((s["w"] - target).norm())

    soup, kept, steps = merge.greedy([bad, good1, good2], score, ["bad", "good1", "good2"], log=lambda m: None)
    assert sorted(kept) == [1, 2] and [s["add"] for s in steps][-1] == "bad" and not steps[-1]["kept"]
    torch.testing.assert_close(soup["w"], target)
    assert steps[1]["soup"] > steps[0]["soup"]
