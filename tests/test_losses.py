"""Distillation losses against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nanoforge.distill.losses import kd_loss, outlier_exposure_loss


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_kd_without_soft_is_cross_entropy():
    logits = torch.randn(8, 5)
    hard = torch.randint(0, 5, (8,))
    got = kd_loss(logits, hard)
    assert got.shape == (8,)
    assert torch.allclose(got, F.cross_entropy(logits, hard, reduction="none"))
    assert torch.allclose(kd_loss(logits, hard, None, temperature=4.0, alpha=0.9),
                          F.cross_entropy(logits, hard, reduction="none"))


def test_kd_all_zero_soft_rows_get_plain_ce():
    logits = torch.randn(6, 4)
    hard = torch.randint(0, 4, (6,))
    soft = torch.softmax(torch.randn(6, 4), dim=-1)
    soft[[1, 4]] = 0.0
    got = kd_loss(logits, hard, soft, temperature=2.0, alpha=0.7)
    ce = F.cross_entropy(logits, hard, reduction="none")
    assert torch.allclose(got[[1, 4]], ce[[1, 4]])
    assert not torch.allclose(got[[0, 2, 3, 5]], ce[[0, 2, 3, 5]])
    # all rows zero: exactly CE
    assert torch.allclose(kd_loss(logits, hard, torch.zeros(6, 4)), ce)


def test_kd_matches_formula():
    logits = torch.randn(5, 3)
    hard = torch.randint(0, 3, (5,))
    soft = torch.softmax(torch.randn(5, 3) * 2, dim=-1)
    t, a = 3.0, 0.4
    ce = F.cross_entropy(logits, hard, reduction="none")
    log_q = F.log_softmax(logits / t, dim=-1)
    kl = F.kl_div(log_q, soft, reduction="none").sum(-1) * t * t
    assert torch.allclose(kd_loss(logits, hard, soft, temperature=t, alpha=a), (1 - a) * ce + a * kl, atol=1e-6)


@pytest.mark.parametrize("t", [1.0, 2.0, 5.0])
def test_kd_alpha_one_matching_soft_is_zero(t):
    logits = torch.randn(7, 6) * 3
    hard = torch.randint(0, 6, (7,))
    soft = torch.softmax(logits / t, dim=-1)
    loss = kd_loss(logits, hard, soft, temperature=t, alpha=1.0)
    assert torch.allclose(loss, torch.zeros(7), atol=1e-5)


def test_kd_alpha_zero_is_ce_even_with_soft():
    logits = torch.randn(4, 3)
    hard = torch.randint(0, 3, (4,))
    soft = torch.softmax(torch.randn(4, 3), dim=-1)
    assert torch.allclose(kd_loss(logits, hard, soft, alpha=0.0), F.cross_entropy(logits, hard, reduction="none"))


def test_kd_loss_non_negative_kl():
    for _ in range(10):
        logits = torch.randn(16, 5) * 4
        hard = torch.randint(0, 5, (16,))
        soft = torch.softmax(torch.randn(16, 5) * 4, dim=-1)
        assert (kd_loss(logits, hard, soft, alpha=1.0) >= -1e-6).all()


def test_kd_gradient_pushes_towards_soft_label():
    soft = torch.tensor([[0.1, 0.7, 0.2]])
    hard = torch.tensor([0])  # disagrees with the teacher: alpha=1 must ignore it
    logits = torch.zeros(1, 3, requires_grad=True)
    kd_loss(logits, hard, soft, temperature=2.0, alpha=1.0).sum().backward()
    g = logits.grad[0]
    # descent direction -g raises the teacher's top class and lowers the others
    assert g[1] < 0 and g[0] > 0
    assert torch.argmin(g).item() == 1

    # a few gradient steps move the student's distribution towards the soft label
    x = torch.zeros(1, 3, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.5)
    dist0 = (torch.softmax(x / 2.0, -1) - soft).abs().sum().item()
    for _ in range(200):
        opt.zero_grad()
        kd_loss(x, hard, soft, temperature=2.0, alpha=1.0).sum().backward()
        opt.step()
    dist1 = (torch.softmax(x.detach() / 2.0, -1) - soft).abs().sum().item()
    assert dist1 < 0.05 * dist0
    assert torch.softmax(x.detach(), -1).argmax().item() == 1


def test_kd_no_nan_gradient_for_zero_soft_entries():
    logits = torch.randn(3, 4, requires_grad=True)
    soft = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    kd_loss(logits, torch.tensor([0, 1, 2]), soft).sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("c", [2, 5, 150])
def test_outlier_exposure_minimal_for_uniform(c):
    uniform = torch.zeros(3, c) + torch.tensor([[0.0], [5.0], [-2.0]])  # any constant row is uniform
    got = outlier_exposure_loss(uniform)
    assert got.shape == (3,)
    assert torch.allclose(got, torch.full((3,), math.log(c)), atol=1e-5)
    peaked = torch.zeros(3, c)
    peaked[:, 0] = torch.tensor([1.0, 4.0, 10.0])
    p = outlier_exposure_loss(peaked)
    assert (p > math.log(c) + 1e-4).all()
    assert p[0] < p[1] < p[2]  # more confident = larger loss
    rand = outlier_exposure_loss(torch.randn(50, c) * 3)
    assert (rand >= math.log(c) - 1e-5).all()


def test_outlier_exposure_gradient_flattens():
    x = torch.tensor([[3.0, 0.0, -1.0]], requires_grad=True)
    opt = torch.optim.SGD([x], lr=1.0)
    for _ in range(100):
        opt.zero_grad()
        outlier_exposure_loss(x).sum().backward()
        opt.step()
    p = torch.softmax(x.detach(), -1)[0]
    assert torch.allclose(p, torch.full((3,), 1 / 3), atol=1e-3)
