"""Distillation objectives (PROTOCOL §2).

    L = (1 − α) · CE(y, σ(z_s; 1)) + α · H(σ(z_t; T), σ(z_s; T))   [× T² on the second term if t2_scaling]

``kd_loss="kl"`` uses KL(σ(z_t;T) ‖ σ(z_s;T)) instead of H (same gradients in z_s; the value
differs by the entropy of the target). α = 0 is plain cross-entropy (SIDDO). RCD uses the same
loss with a fixed noise table in place of the teacher's logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import Registry

OBJECTIVES: Registry = Registry("objective")


def soft_cross_entropy(target_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over the batch of H(σ(z_t; T), σ(z_s; T)) = −Σ_c p_c log q_c."""
    p = F.softmax(target_logits / temperature, dim=1)
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return -(p * log_q).sum(dim=1).mean()


def soft_kl(target_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over the batch of KL(σ(z_t; T) ‖ σ(z_s; T))."""
    log_p = F.log_softmax(target_logits / temperature, dim=1)
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


@OBJECTIVES.register("ce")
def cross_entropy_objective(student_logits, labels, target_logits=None, **_) -> torch.Tensor:
    return F.cross_entropy(student_logits, labels)


@OBJECTIVES.register("kd")
def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    target_logits: torch.Tensor | None,
    *,
    alpha: float,
    temperature: float = 1.0,
    kd_loss: str = "ce",
    t2_scaling: bool = False,
) -> torch.Tensor:
    ce = F.cross_entropy(student_logits, labels)
    if alpha == 0.0 or target_logits is None:
        return ce
    soft = soft_kl if kd_loss == "kl" else soft_cross_entropy
    term = soft(target_logits, student_logits, temperature)
    if t2_scaling:
        term = term * temperature**2
    return (1.0 - alpha) * ce + alpha * term
