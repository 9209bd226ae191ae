"""Positive and negative knowledge transfer (PROTOCOL §4): Δ±, h± and their sentence.

From per-seed conditional agreements of a condition X and of the SIDDO control:

- Δ+ = mean agreement_teacher_correct(X) − mean agreement_teacher_correct(control);
- Δ− = mean agreement_teacher_wrong(X) − mean agreement_teacher_wrong(control);
- h± = Δ± / (1 − control mean): the share of the control's headroom that X closed
  (NaN when the control leaves no headroom).

These are descriptive. Whether X shows negative transfer, asymmetry and the negative asymmetric
payoff is decided by the primary family of :mod:`kdaudit.analysis.hypotheses` (H3, H4).
"""

from __future__ import annotations

import math
from typing import Any

from numpy.typing import ArrayLike

from .stats import mean_sem

__all__ = ["TRANSFER_KEYS", "format_p", "p_equals", "payoff_label", "payoff_sentence", "transfer_effects"]

TRANSFER_KEYS = [
    "delta_pos",
    "delta_neg",
    "h_pos",
    "h_neg",
    "p_pos",
    "p_neg",
    "negative_asymmetric_payoff",
]
"""The keys of a group's ``transfer`` object in ``kdaudit compare --json``."""


def _headroom_share(delta: float, control_mean: float) -> float:
    room = 1.0 - control_mean
    if not (math.isfinite(delta) and math.isfinite(room)) or room <= 0.0:
        return math.nan
    return delta / room


def transfer_effects(
    x_correct: ArrayLike, x_wrong: ArrayLike, ctrl_correct: ArrayLike, ctrl_wrong: ArrayLike
) -> dict[str, float]:
    """Δ+, Δ−, h+ and h− of X against the control from per-seed conditional agreements."""
    mx_c, _ = mean_sem(x_correct)
    mx_w, _ = mean_sem(x_wrong)
    mc_c, _ = mean_sem(ctrl_correct)
    mc_w, _ = mean_sem(ctrl_wrong)
    delta_pos = mx_c - mc_c
    delta_neg = mx_w - mc_w
    return {
        "delta_pos": float(delta_pos),
        "delta_neg": float(delta_neg),
        "h_pos": float(_headroom_share(delta_pos, mc_c)),
        "h_neg": float(_headroom_share(delta_neg, mc_w)),
    }


def payoff_label(payoff: bool | None) -> str:
    """``"yes"`` / ``"no"`` / ``"not testable"`` for True / False / None."""
    return "not testable" if payoff is None else ("yes" if payoff else "no")


def _num(x: float, fmt: str) -> str:
    return "n/a" if not math.isfinite(x) else format(x, fmt)


def p_equals(p: float) -> str:
    """``p = 0.012`` or ``p < 0.0001`` for a sentence."""
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def format_p(p: float) -> str:
    """A p-value for a sentence: 3 decimals, 4 below 0.001, "< 0.0001" below that."""
    if not math.isfinite(p):
        return "n/a"
    if p < 1e-4:
        return "< 0.0001"
    if p < 1e-3:
        return f"{p:.4f}"
    return f"{p:.3f}"


def payoff_sentence(
    name: str,
    control: str,
    effects: dict[str, Any],
    verdict: str,
    reason: str,
    p_neg: float = math.nan,
    p_asym: float = math.nan,
) -> str:
    """One plain-word sentence on the transfer of ``name`` against ``control``.

    ``effects`` holds Δ± (quoted in percentage points of agreement) and h± (shares of the
    control's headroom); ``verdict`` / ``reason`` are the negative-asymmetric-payoff verdict and
    why; ``p_neg`` / ``p_asym`` the adjusted p of negative transfer (H3) and asymmetry (H4).
    """
    d_pos = _num(100 * effects["delta_pos"], "+.1f")
    d_neg = _num(100 * effects["delta_neg"], "+.1f")
    h_pos = _num(effects["h_pos"], ".2f")
    h_neg = _num(effects["h_neg"], ".2f")
    body = (
        f"Against {control}, {name} students moved Δ+ = {d_pos} points (h+ = {h_pos}) on the "
        f"samples the teacher gets right and Δ− = {d_neg} points (h− = {h_neg}) towards the "
        f"teacher's wrong labels (adjusted p: negative transfer {format_p(p_neg)}, asymmetry {format_p(p_asym)})"
    )
    if verdict == "yes":
        return f"{body}: negative asymmetric payoff, more of the teacher's errors than of its knowledge ({reason})."
    if verdict == "no":
        return f"{body}: no negative asymmetric payoff ({reason})."
    return f"{body}: negative asymmetric payoff not testable ({reason})."
