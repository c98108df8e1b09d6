"""The shared training loop: early stopping keeps the best epoch, and the cool-down after it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nanoforge.distill.trainer import cool_down, fit, linear_schedule
from nanoforge.task import StudentSpec

X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0])


def train(scores: list[float], **student) -> tuple[torch.nn.Module, dict, list[dict], dict]:
    """A linear model fitted to Y; `evaluate()` returns `scores` in turn (the epochs', then the cool-down's)
    and snapshots the weights it scored."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    cfg = StudentSpec(**{"epochs": 10, "batch_size": 8, "lr": 0.05, "patience": 2, "threads": 1, **student})
    seen: list[dict] = []

    def evaluate() -> float:
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return scores[len(seen) - 1]

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(X[idx]).squeeze(1), Y[idx])

    checkpoint: dict = {}
    result = fit(model, len(X), cfg, batch_loss, evaluate, "score", lambda _: None, checkpoint=checkpoint)
    return model, result, seen, checkpoint


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_cool_down_after_an_early_stop_finishes_the_schedule_from_the_best_epoch():
    model, result, seen, checkpoint = train([0.5, 0.6, 0.55, 0.5, 0.7], cooldown=0.5)
    assert result["best_epoch"] == 2 and len(result["history"]) == 4
    # the linear schedule's lr where epoch 2 ended (8 steps an epoch, 80 in all, 4 of warm-up)
    assert checkpoint["lr"] == pytest.approx(0.05 * linear_schedule(80, 4)(16))
    cooled = result["cooldown"]
    assert cooled["steps"] == 4 and cooled["lr_from"] == pytest.approx(checkpoint["lr"])
    assert cooled["valid_before"] == 0.6 and result["best_valid_score"] == 0.7
    assert same(model.state_dict(), seen[-1]) and not same(seen[-1], seen[1])


def test_cool_down_ships_even_when_valid_falls():
    """The best epoch's valid score is the highest of several on the same rows (biased upward)."""
    model, result, seen, _ = train([0.5, 0.6, 0.55, 0.5, 0.4], cooldown=0.5)
    assert result["best_valid_score"] == 0.4 and result["cooldown"]["valid_before"] == 0.6
    assert same(model.state_dict(), seen[-1]) and not same(seen[-1], seen[1])


@pytest.mark.parametrize("scores, student", [
    ([0.5, 0.6, 0.55, 0.5, 0.7], {"cooldown": 0.0}),                         # off
    ([0.1 * e for e in range(1, 11)] + [9.0], {"cooldown": 0.5}),            # the schedule ran to zero
])
def test_no_cool_down_when_off_or_when_the_lr_reached_zero(scores, student):
    _, result, seen, _ = train(scores, **student)
    assert "cooldown" not in result and len(seen) == len(result["history"])


def test_cool_downs_from_one_checkpoint_do_not_change_it():
    model, _, _, checkpoint = train([0.5, 0.6, 0.55, 0.5], cooldown=0.0)
    before = {k: v.clone() for k, v in checkpoint["state"].items()}
    cfg = StudentSpec(epochs=10, batch_size=8, lr=0.05, threads=1)

    def batch_loss(idx):
        return torch.nn.functional.mse_loss(model(X[idx]).squeeze(1), Y[idx])

    runs = []
    for _ in range(2):
        cool_down(model, checkpoint, checkpoint["lr"], cfg, len(X), batch_loss, lambda: 1.0, "score", lambda _: None,
                  epochs=1.0)
        runs.append({k: v.clone() for k, v in model.state_dict().items()})
    assert same(runs[0], runs[1]) and same(checkpoint["state"], before) and not same(runs[0], before)


def test_a_student_without_a_cool_down_keeps_its_fingerprint():
    """Students trained before `cooldown` existed are reused; one with a cool-down is trained again."""
    assert "cooldown" not in StudentSpec().fingerprint_dict()
    assert StudentSpec(cooldown=0.25).fingerprint_dict()["cooldown"] == 0.25


def test_the_report_shows_the_epochs_and_the_cool_down():
    from nanoforge.report import training_md

    _, result, _, _ = train([0.5, 0.6, 0.55, 0.5, 0.7], cooldown=0.5)
    md = training_md(result)
    assert "| 2 | " in md and "Best epoch 2" in md and "valid score 0.70 (the best epoch: 0.60)" in md
    assert "valid accuracy 70.0% (the best epoch: 60.0%)" in training_md({**result, "metric": "accuracy"})
    chrf = {**result, "metric": "chrf", "cooldown": {**result["cooldown"], "valid_score": 27.2, "valid_before": 25.8}}
    assert "valid chrf 27.20 (the best epoch: 25.80)" in training_md(chrf)  # points, not a fraction
