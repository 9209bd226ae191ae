"""Distillation objectives (PROTOCOL §2).

    L = (1 − α) · CE(y, σ(z_s; 1)) + α · H(σ(z_t; T), σ(z_s; T))   [× T² on the second term if t2_scaling]

``kd_loss="kl"`` uses KL(σ(z_t;T) ‖ σ(z_s;T)) instead of H (same gradients in z_s; the value
differs by the entropy of the target). α = 0 is plain cross-entropy (SIDDO). RCD uses the same
loss with a fixed noise table in place of the teacher's logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..registry import Registry

OBJECTIVES: Registry[Callable[..., torch.Tensor]] = Registry("objective")


def soft_target_table(target_logits: torch.Tensor, temperature: float, kd_loss: str = "ce") -> tuple[torch.Tensor, ...]:
    """The target side of the distillation term, row-wise: (σ(z_t; T),) for ``ce`` and
    (log σ(z_t; T), σ(z_t; T)) for ``kl``. Training computes it once for the whole training set
    (the same numbers as per batch) and indexes its rows."""
    if kd_loss == "kl":
        log_p = F.log_softmax(target_logits / temperature, dim=1)
        return log_p, log_p.exp()
    return (F.softmax(target_logits / temperature, dim=1),)


def soft_term(
    soft_targets: tuple[torch.Tensor, ...], student_logits: torch.Tensor, temperature: float, kd_loss: str = "ce"
) -> torch.Tensor:
    """H(p, q) (``ce``) or KL(p ‖ q) (``kl``), mean over the batch, p from :func:`soft_target_table`."""
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    if kd_loss == "kl":
        log_p, p = soft_targets
        return (p * (log_p - log_q)).sum(dim=1).mean()
    return -(soft_targets[0] * log_q).sum(dim=1).mean()


def soft_cross_entropy(target_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over the batch of H(σ(z_t; T), σ(z_s; T)) = −Σ_c p_c log q_c."""
    return soft_term(soft_target_table(target_logits, temperature), student_logits, temperature)


@OBJECTIVES.register("ce")
def cross_entropy_objective(
    student_logits: torch.Tensor, labels: torch.Tensor, target_logits: torch.Tensor | None = None, **_: object
) -> torch.Tensor:
    """Plain cross-entropy (α = 0); the options of the distillation loss are accepted and ignored."""
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
    soft_targets: tuple[torch.Tensor, ...] | None = None,
) -> torch.Tensor:
    """The loss above. ``soft_targets`` (rows of :func:`soft_target_table`) may replace
    ``target_logits``: the same value, without the targets' softmax at every step."""
    ce = F.cross_entropy(student_logits, labels)
    if alpha == 0.0:
        return ce
    if soft_targets is None:
        if target_logits is None:
            return ce
        soft_targets = soft_target_table(target_logits, temperature, kd_loss)
    term = soft_term(soft_targets, student_logits, temperature, kd_loss)
    if t2_scaling:
        term = term * temperature**2
    return (1.0 - alpha) * ce + alpha * term
