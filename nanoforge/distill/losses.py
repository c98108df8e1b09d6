"""Distillation losses (small and separate, as in torchtune's KD loss module)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    logits: torch.Tensor,
    hard: torch.Tensor,
    soft: torch.Tensor | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """Hinton et al. knowledge distillation, per example.

    (1 - alpha) * CE(logits, hard) + alpha * T^2 * KL(soft || softmax(logits / T)).
    `soft` holds the teacher's probabilities; rows without one are all-zero and get
    plain cross-entropy.
    """
    ce = F.cross_entropy(logits, hard, reduction="none")
    if soft is None:
        return ce
    has_soft = soft.sum(-1) > 0
    log_p = F.log_softmax(logits / temperature, dim=-1)
    kl = (soft * (torch.log(soft.clamp_min(1e-12)) - log_p)).sum(-1) * temperature**2
    mixed = (1 - alpha) * ce + alpha * kl
    return torch.where(has_soft, mixed, ce)


def outlier_exposure_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform distribution (Hendrycks et al., 2019), per example.

    Out-of-scope training inputs are pushed towards low confidence, which makes the
    max-softmax and energy gates separate them better.
    """
    return -F.log_softmax(logits, dim=-1).mean(-1)
