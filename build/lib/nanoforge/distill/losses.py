"""Distillation losses (small and separate, as in torchtune's KD loss module)."""

from __future__ import annotations

import math

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


def token_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.0,
                       temperature: float = 1.0) -> torch.Tensor:
    """Per-token divergence between teacher and student next-token distributions, (N, V) -> (N,).

    beta = 0: forward KL(teacher || student), the classic logit distillation;
    0 < beta < 1: generalised Jensen-Shannon divergence JSD(beta) as in GKD (Agarwal et
    al., 2024): beta KL(p_T || m) + (1 - beta) KL(p_S || m), m = beta p_T + (1 - beta) p_S.
    """
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    if beta <= 0:
        return (log_t.exp() * (log_t - log_s)).sum(-1) * temperature**2
    log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log(1 - beta)]), dim=0)
    kl_t = (log_t.exp() * (log_t - log_m)).sum(-1)
    kl_s = (log_s.exp() * (log_s - log_m)).sum(-1)
    return (beta * kl_t + (1 - beta) * kl_s) * temperature**2
