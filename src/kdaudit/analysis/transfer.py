"""Positive and negative knowledge transfer, and the negative asymmetric payoff (PROTOCOL §4).

From per-seed conditional agreements of a condition X and of the SIDDO control:

- Δ+ = mean agreement_teacher_correct(X) − mean agreement_teacher_correct(control);
- Δ− = mean agreement_teacher_wrong(X) − mean agreement_teacher_wrong(control);
- h± = Δ± / (1 − control mean): the share of the control's headroom that X closed
  (NaN when the control leaves no headroom);
- p+ / p− = two-sided Mann–Whitney p-values (raw, not adjusted) of X against the control.

X shows a **negative asymmetric payoff** when Δ− is significantly positive (p− < level and
Δ− > 0) and h− > h+. The answer is True / False / None (not testable): None when p− or Δ− is
NaN (e.g. an empty teacher-wrong set or fewer than 2 seeds), or when Δ− is significantly
positive but h− or h+ is NaN (no headroom). A Δ− that is not significantly positive gives
False whatever the headroom.
"""

from __future__ import annotations

import math
from typing import Any

from numpy.typing import ArrayLike

from .stats import mann_whitney, mean_sem

__all__ = ["TRANSFER_KEYS", "format_p", "payoff_label", "payoff_sentence", "transfer_payoff"]

TRANSFER_KEYS = [
    "delta_pos", "delta_neg", "h_pos", "h_neg", "p_pos", "p_neg", "negative_asymmetric_payoff",
]


def _headroom_share(delta: float, control_mean: float) -> float:
    room = 1.0 - control_mean
    if not (math.isfinite(delta) and math.isfinite(room)) or room <= 0.0:
        return math.nan
    return delta / room


def transfer_payoff(
    x_correct: ArrayLike,
    x_wrong: ArrayLike,
    ctrl_correct: ArrayLike,
    ctrl_wrong: ArrayLike,
    level: float = 0.05,
) -> dict[str, Any]:
    """Δ±, h±, p± and the negative-asymmetric-payoff answer for X against the control.

    Arguments are per-seed values of agreement_teacher_correct / agreement_teacher_wrong for
    X and for the control. Returns a dict with exactly :data:`TRANSFER_KEYS`;
    ``negative_asymmetric_payoff`` is True, False or None (not testable).
    """
    mx_c, _ = mean_sem(x_correct)
    mx_w, _ = mean_sem(x_wrong)
    mc_c, _ = mean_sem(ctrl_correct)
    mc_w, _ = mean_sem(ctrl_wrong)
    delta_pos = mx_c - mc_c
    delta_neg = mx_w - mc_w
    h_pos = _headroom_share(delta_pos, mc_c)
    h_neg = _headroom_share(delta_neg, mc_w)
    p_pos = mann_whitney(x_correct, ctrl_correct).p_value
    p_neg = mann_whitney(x_wrong, ctrl_wrong).p_value

    payoff: bool | None
    if math.isnan(p_neg) or math.isnan(delta_neg):
        payoff = None
    elif not (p_neg < level and delta_neg > 0):
        payoff = False
    elif math.isnan(h_neg) or math.isnan(h_pos):
        payoff = None
    else:
        payoff = bool(h_neg > h_pos)
    return {
        "delta_pos": float(delta_pos),
        "delta_neg": float(delta_neg),
        "h_pos": float(h_pos),
        "h_neg": float(h_neg),
        "p_pos": float(p_pos),
        "p_neg": float(p_neg),
        "negative_asymmetric_payoff": payoff,
    }


def payoff_label(payoff: bool | None) -> str:
    """``"yes"`` / ``"no"`` / ``"not testable"`` for True / False / None."""
    return "not testable" if payoff is None else ("yes" if payoff else "no")


def _num(x: float, fmt: str) -> str:
    return "n/a" if not math.isfinite(x) else format(x, fmt)


def format_p(p: float) -> str:
    """A p-value for a sentence: 3 decimals, 4 below 0.001, "< 0.0001" below that."""
    if not math.isfinite(p):
        return "n/a"
    if p < 1e-4:
        return "< 0.0001"
    if p < 1e-3:
        return f"{p:.4f}"
    return f"{p:.3f}"


def payoff_sentence(name: str, control: str, result: dict[str, Any], level: float = 0.05) -> str:
    """One plain-word sentence on the transfer of ``name`` against ``control``.

    Δ± are quoted in percentage points of agreement, h± as shares of the control's headroom.
    """
    d_pos = _num(100 * result["delta_pos"], "+.1f")
    d_neg = _num(100 * result["delta_neg"], "+.1f")
    h_pos = _num(result["h_pos"], ".2f")
    h_neg = _num(result["h_neg"], ".2f")
    p_neg = result["p_neg"]
    p_txt = f"p = {format_p(p_neg)}" if math.isfinite(p_neg) else "p not computable"
    body = (
        f"Against {control}, {name} students moved Δ+ = {d_pos} points (h+ = {h_pos}) on the "
        f"samples the teacher gets right and Δ− = {d_neg} points (h− = {h_neg}, Mann–Whitney "
        f"{p_txt}) towards the teacher's wrong labels"
    )
    payoff = result["negative_asymmetric_payoff"]
    if payoff is None:
        return f"{body}: negative asymmetric payoff not testable."
    if payoff:
        return f"{body}: negative asymmetric payoff (more of the teacher's errors than of its knowledge)."
    sig = math.isfinite(p_neg) and p_neg < level and result["delta_neg"] > 0
    why = "h− is not above h+" if sig else f"Δ− is not significantly positive at {level:g}"
    return f"{body}: no negative asymmetric payoff ({why})."
