"""The verdicts of an audit in plain words (PROTOCOL §5).

:func:`verdict_of` turns one :class:`~kdaudit.analysis.hypotheses.Decision` into a
:class:`Verdict`: the verdicts with their reasons, the primary tests that decided them and one
sentence per question — knowledge transfer (H1), beyond regularisation (H2), the negative
asymmetric payoff (H3 + H4, :func:`payoff_verdict`, also the ``verdict`` of transfer.csv) and the
predecessor paper's compression bar. Every sentence opens with "At α = …".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .hypotheses import CONTROL, Decision, Design, Group, Unit
from .stats import compression_bar, mean_sem
from .transfer import format_p, p_equals, payoff_sentence

__all__ = ["Verdict", "display_name", "fmt_alpha", "payoff_verdict", "verdict_of"]


@dataclass
class Verdict:
    """The plain-word answer for one distillation condition at one α (PROTOCOL §5).

    Each verdict is ``"yes"``, ``"no"`` or ``"not testable"``; ``reasons`` says why, per verdict;
    ``tests`` holds the primary tests that decided them (H1–H4), ``standard`` the rule set.
    """

    condition: str
    alpha: float
    knowledge_transfer: str  # "yes" | "no" | "not testable"
    beyond_regularisation: str
    negative_asymmetric_payoff: str
    compression: str
    negative_transfer: str = "not testable"
    asymmetry: str = "not testable"
    standard: str = "kdaudit"
    reasons: dict[str, str] = field(default_factory=dict)
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    sentences: list[str] = field(default_factory=list)


_VERDICT_TEST_KEYS = (
    "hypothesis",
    "comparison",
    "metric",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "mean_diff",
    "ci_low",
    "ci_high",
    "statistic",
    "effect_size",
    "p_value",
    "method",
    "p_se",
    "p_adjusted",
    "smallest_p_adjusted",
    "outcome",
    "why",
)
"""The fields of a primary test kept in :attr:`Verdict.tests`."""

_OUTCOME_WORDS = {
    "knowledge_transfer": (
        "significant knowledge transfer",
        "no significant knowledge transfer",
        "knowledge transfer not testable",
    ),
    "beyond_regularisation": (
        "transfer beyond regularisation",
        "no evidence of transfer beyond regularisation",
        "beyond regularisation not testable",
    ),
}


# ---------------------------------------------------------------------------------------------
# Names and numbers
# ---------------------------------------------------------------------------------------------


def display_name(condition: str) -> str:
    """A condition's name for sentences: ``KD``, ``SIDDO``, ``RCD-uniform``; others unchanged."""
    c = str(condition)
    low = c.lower()
    if low in ("kd", "siddo", "ls"):
        return low.upper()
    if low.startswith("rcd"):
        return "RCD" + c[3:]
    return c


def fmt_alpha(alpha: float) -> str:
    """α for sentences: ``0.5``, or ``n/a`` when it is not a number."""
    return "n/a" if not math.isfinite(alpha) else f"{alpha:g}"


def _at(alpha: float) -> str:
    return f"At α = {fmt_alpha(alpha)}"


def _pct(mean: float, sem: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(sem):
        return f"{100 * mean:.1f} %"
    return f"{100 * mean:.1f} % ± {100 * sem:.1f}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def _diff_text(row: Mapping[str, Any], points: bool = True, correction: str = "holm") -> str:
    scale, unit = (100.0, " points") if points else (1.0, "")
    parts = []
    if math.isfinite(row.get("mean_diff", math.nan)):
        parts.append(f"difference {scale * row['mean_diff']:+.2f}{unit}")
        if math.isfinite(row.get("ci_low", math.nan)):
            parts[-1] += f", 95 % CI [{scale * row['ci_low']:+.2f}, {scale * row['ci_high']:+.2f}]"
    if math.isfinite(row.get("effect_size", math.nan)):
        parts.append(f"r = {row['effect_size']:+.2f}")
    test = "Wilcoxon" if row.get("paired") else "Mann–Whitney"
    method = f" ({row['method']})" if row.get("method") else ""
    ptxt = f"{test}{method} {p_equals(row.get('p_value', math.nan))}"
    if correction != "none" and math.isfinite(row.get("p_adjusted", math.nan)):
        ptxt += f", {correction}-adjusted {format_p(row['p_adjusted'])}"
    parts.append(ptxt)
    return "; ".join(parts)


def _words(d: Decision, key: str) -> str:
    """The outcome of verdict ``key`` in words, with its reason unless it is a yes."""
    yes, no, nt = _OUTCOME_WORDS[key]
    outcome, reason = d.verdicts[key], d.reasons[key]
    if outcome == "yes":
        return f"{yes}."
    return f"{no} ({reason})." if outcome == "no" else f"{nt} ({reason})."


# ---------------------------------------------------------------------------------------------
# The sentences
# ---------------------------------------------------------------------------------------------


def payoff_verdict(d: Decision, eff: dict[str, float]) -> str:
    """The sentence on the negative asymmetric payoff of one unit (H3 + H4), with Δ± from ``eff``
    (:func:`~kdaudit.analysis.transfer.transfer_effects`) and the raw-points reading."""
    p_neg = d.tests["H3"]["p_adjusted"] if "H3" in d.tests else math.nan
    p_asym = d.tests["H4"]["p_adjusted"] if "H4" in d.tests else math.nan
    text = payoff_sentence(
        display_name(d.condition),
        display_name(CONTROL),
        eff,
        d.verdicts["negative_asymmetric_payoff"],
        d.reasons["negative_asymmetric_payoff"],
        p_neg,
        p_asym,
    )
    pts = d.asymmetry_points
    if pts is not None and math.isfinite(pts["mean_diff"]):
        text += (
            f" Raw-points reading: Δ− − Δ+ = {100 * pts['mean_diff']:+.1f} points "
            f"(unadjusted {p_equals(pts['p_value'])})."
        )
    return f"{_at(d.alpha)}, " + _lower_first(text)


def _transfer_sentence(d: Decision, x: Group, control: Group, correction: str) -> str:
    mx, sx = mean_sem(x["agreement"])
    head = (
        f"{_at(d.alpha)}, {display_name(d.condition)} students agree with the teacher on {_pct(mx, sx)} of test samples"
    )
    words = _words(d, "knowledge_transfer")
    if len(control) == 0:
        return f"{head}; {words}"
    mc, sc = mean_sem(control["agreement"])
    diff = _diff_text(d.tests.get("H1", {}), correction=correction)
    return f"{head} vs {_pct(mc, sc)} for {display_name(CONTROL)} ({diff}): {words}"


def _beyond_sentence(d: Decision, unit: Unit, correction: str) -> str:
    words = _words(d, "beyond_regularisation")
    row = d.tests.get("H2")
    if row is None:
        return f"{_at(d.alpha)}, {words}"
    hard = row["control"]
    mr, sr = mean_sem(unit.regularisers[hard]["agreement"])
    mx, sx = mean_sem(unit.x["agreement"])
    which = "the hardest regularisation control" if len(d.h2_components) > 1 else "the regularisation control"
    return (
        f"{_at(d.alpha)}, against {which} {display_name(hard)} ({_pct(mr, sr)}), "
        f"{display_name(d.condition)} agreement is {_pct(mx, sx)} ({_diff_text(row, correction=correction)}): {words}"
    )


def _compression(d: Decision, x: Group) -> tuple[str, str]:
    """The compression verdict and its sentence."""
    bar = compression_bar(x["agreement"], x["js_divergence"], x["activation_distance"])
    if not bar["testable"]:
        return "not testable", f"{_at(d.alpha)}, the compression bar is not testable (missing metric values)."
    scores = (
        f"agreement {bar['agreement_score']:.3f}, 1 − JS/ln 2 = {bar['js_score']:.3f}, "
        f"1 − AD/√2 = {bar['ad_score']:.3f} (bar: {bar['threshold']:g} each)"
    )
    comp = "yes" if bar["compresses"] else "no"
    verb = "compresses" if comp == "yes" else "does not compress"
    return comp, f"{_at(d.alpha)}, {display_name(d.condition)} {verb} the teacher: {scores}."


def verdict_of(d: Decision, unit: Unit, control: Group, eff: dict[str, float], design: Design) -> Verdict:
    """The verdict of one unit: ``d`` decided on ``unit`` against ``control`` (SIDDO; may be empty).

    ``unit.x`` and ``control`` carry agreement (also where the teacher is right and wrong), JS
    divergence and activation distance; ``eff`` holds the unit's Δ± (see :func:`payoff_verdict`).
    """
    corr = design.primary_correction
    comp, comp_sentence = _compression(d, unit.x)
    sentences = [
        _transfer_sentence(d, unit.x, control, corr),
        _beyond_sentence(d, unit, corr),
        payoff_verdict(d, eff),
        comp_sentence,
    ]
    tests = {h: {k: r.get(k) for k in _VERDICT_TEST_KEYS if k in r} for h, r in d.tests.items()}
    return Verdict(
        condition=d.condition,
        alpha=d.alpha,
        knowledge_transfer=d.verdicts["knowledge_transfer"],
        beyond_regularisation=d.verdicts["beyond_regularisation"],
        negative_asymmetric_payoff=d.verdicts["negative_asymmetric_payoff"],
        compression=comp,
        negative_transfer=d.verdicts["negative_transfer"],
        asymmetry=d.verdicts["asymmetry"],
        standard=d.standard,
        reasons=dict(d.reasons),
        tests=tests,
        sentences=sentences,
    )
