"""The verdicts of an audit in plain words (PROTOCOL §5).

:func:`verdict_of` turns one :class:`~kdaudit.analysis.hypotheses.Decision` into a
:class:`Verdict`: the verdicts with their reasons, the primary tests that decided them and one
sentence per question — knowledge transfer (H1), beyond regularisation (H2), the negative
asymmetric payoff (H3 + H4, :func:`payoff_verdict`, also the ``verdict`` of transfer.csv) and
fidelity to the teacher against the predecessor paper's 0.95 bar, for X and for SIDDO side by side.
Every sentence opens with "At α = …".

:func:`headline` answers the audit's question in one plain sentence per condition from the
verdicts: the first line of the report, of the terminal summary and of ``audit.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .design import seeds_needed
from .hypotheses import CONTROL, Decision, Design, Group, Unit
from .stats import compression_bar, mean_sem
from .transfer import format_p, p_equals, payoff_sentence

__all__ = ["FIDELITY_BAR", "Verdict", "display_name", "fmt_alpha", "headline", "payoff_verdict", "verdict_of"]

FIDELITY_BAR = 0.95
"""The predecessor paper's bar: agreement, 1 − JS/ln 2 and 1 − AD/√2 all at least this."""


@dataclass
class Verdict:
    """The plain-word answer for one distillation condition at one α (PROTOCOL §5).

    Each verdict is ``"yes"``, ``"no"`` or ``"not testable"``; ``reasons`` says why, per verdict;
    ``tests`` holds the primary tests that decided them (H1–H4), ``standard`` the rule set.
    ``fidelity`` says whether X's students clear the predecessor paper's 0.95 bar of fidelity to
    the teacher, ``control_fidelity`` whether the SIDDO students do.
    """

    condition: str
    alpha: float
    knowledge_transfer: str  # "yes" | "no" | "not testable"
    beyond_regularisation: str
    negative_asymmetric_payoff: str
    fidelity: str
    negative_transfer: str = "not testable"
    asymmetry: str = "not testable"
    standard: str = "kdaudit"
    control_fidelity: str = "not testable"
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


def _bar(g: Group) -> dict[str, Any] | None:
    """The 0.95 bar of fidelity to the teacher on a group's per-seed values (None when empty)."""
    if len(g) == 0:
        return None
    return compression_bar(g["agreement"], g["js_divergence"], g["activation_distance"], FIDELITY_BAR)


def _bar_answer(bar: dict[str, Any] | None) -> str:
    if bar is None or not bar["testable"]:
        return "not testable"
    return "yes" if bar["compresses"] else "no"


def _scores(bar: dict[str, Any]) -> str:
    return (
        f"agreement {100 * bar['agreement_score']:.1f} %, 1 − JS/ln 2 = {bar['js_score']:.3f}, "
        f"1 − AD/√2 = {bar['ad_score']:.3f}"
    )


def _fidelity(d: Decision, x: Group, control: Group) -> tuple[str, str, str]:
    """X's and SIDDO's answers to the 0.95 fidelity bar, and the sentence that shows them side by side."""
    bar, ctrl = _bar(x), _bar(control)
    answer, ctrl_answer = _bar_answer(bar), _bar_answer(ctrl)
    head = (
        f"{_at(d.alpha)}, fidelity to the teacher (the predecessor paper's bar: agreement ≥ {100 * FIDELITY_BAR:g} %, "
        f"1 − JS/ln 2 and 1 − AD/√2 ≥ {FIDELITY_BAR:g})"
    )
    if bar is None or answer == "not testable":
        return answer, ctrl_answer, f"{head} is not testable (missing metric values)."
    name, siddo = display_name(d.condition), display_name(CONTROL)
    text = f"{head}: {name} {'clears' if answer == 'yes' else 'does not clear'} it ({_scores(bar)})"
    if ctrl is None or ctrl_answer == "not testable":
        return answer, ctrl_answer, text + "."
    if ctrl_answer == answer == "yes":
        tail = f"{siddo}, trained without the teacher, clears it too ({_scores(ctrl)}): the bar does not tell {name} "
        tail += "from no distillation"
    elif ctrl_answer == "yes":
        tail = f"{siddo}, trained without the teacher, does ({_scores(ctrl)})"
    elif answer == "yes":
        tail = f"{siddo}, trained without the teacher, does not ({_scores(ctrl)})"
    else:
        tail = f"nor does {siddo}, trained without the teacher ({_scores(ctrl)})"
    return answer, ctrl_answer, f"{text}; {tail}."


def verdict_of(d: Decision, unit: Unit, control: Group, eff: dict[str, float], design: Design) -> Verdict:
    """The verdict of one unit: ``d`` decided on ``unit`` against ``control`` (SIDDO; may be empty).

    ``unit.x`` and ``control`` carry agreement (also where the teacher is right and wrong), JS
    divergence and activation distance; ``eff`` holds the unit's Δ± (see :func:`payoff_verdict`).
    """
    corr = design.primary_correction
    fidelity, control_fidelity, fidelity_sentence = _fidelity(d, unit.x, control)
    sentences = [
        _transfer_sentence(d, unit.x, control, corr),
        _beyond_sentence(d, unit, corr),
        payoff_verdict(d, eff),
        fidelity_sentence,
    ]
    tests = {h: {k: r.get(k) for k in _VERDICT_TEST_KEYS if k in r} for h, r in d.tests.items()}
    return Verdict(
        condition=d.condition,
        alpha=d.alpha,
        knowledge_transfer=d.verdicts["knowledge_transfer"],
        beyond_regularisation=d.verdicts["beyond_regularisation"],
        negative_asymmetric_payoff=d.verdicts["negative_asymmetric_payoff"],
        fidelity=fidelity,
        negative_transfer=d.verdicts["negative_transfer"],
        asymmetry=d.verdicts["asymmetry"],
        standard=d.standard,
        control_fidelity=control_fidelity,
        reasons=dict(d.reasons),
        tests=tests,
        sentences=sentences,
    )


# ---------------------------------------------------------------------------------------------
# The headline
# ---------------------------------------------------------------------------------------------

_YES, _NO, _NT = "yes", "no", "not testable"
_FREE_TEACHER = "a knowledge-free (random or label-smoothing) teacher"


def headline(verdicts: Sequence[Verdict], statistics: Mapping[str, Any]) -> str:
    """The audit's answer in plain words: one sentence (or two) per distillation condition, from
    its verdicts at every α; ``statistics`` is :attr:`AuditTables.statistics` (may be empty).

    It says at which α the students took knowledge from the teacher (knowledge transfer), whether
    more than a knowledge-free teacher gives (beyond regularisation), and whether they copied its
    mistakes more than its correct answers (the negative asymmetric payoff) — or why none of this
    can be decided (not testable: the seeds a decision needs).
    """
    if not verdicts:
        return "No verdicts: no distillation condition could be compared with students trained without the teacher."
    by_condition: dict[str, list[Verdict]] = {}
    for v in verdicts:
        by_condition.setdefault(str(v.condition), []).append(v)
    text = " ".join(
        _condition_headline(vs, statistics) for vs in (sorted(g, key=_alpha_key) for g in by_condition.values())
    )
    if statistics.get("standard") == "paper":
        return "By the predecessor paper's standard (uncorrected tests): " + text
    return text


def _finite(x: Any) -> float | None:
    """``x`` as a finite float, or None."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _alpha_key(v: Verdict) -> float:
    return v.alpha if math.isfinite(v.alpha) else math.inf


def _has_alpha(vs: Sequence[Verdict]) -> bool:
    """Whether the verdicts name a KD weight (the groups of ``kdaudit compare`` have none)."""
    return any(math.isfinite(v.alpha) for v in vs)


def _at_alphas(vs: Sequence[Verdict]) -> str:
    """`` at α = 0.5 and 0.9``, or nothing when no α is known."""
    return f" at {_alphas(vs)}" if _has_alpha(vs) else ""


def _alphas(vs: Sequence[Verdict]) -> str:
    """``α = 0.5``, ``α = 0.5 and 0.9``, ``α = 0.1, 0.5 and 0.9``."""
    a = [fmt_alpha(v.alpha) for v in vs]
    return "α = " + (a[0] if len(a) == 1 else ", ".join(a[:-1]) + " and " + a[-1])


def _seeds(vs: Sequence[Verdict]) -> str:
    """The seeds per group behind the knowledge-transfer tests: ``10 seeds per group``."""
    found = (_finite(v.tests.get("H1", {}).get(k)) for v in vs for k in ("n_a", "n_b"))
    sizes = sorted({int(n) for n in found if n is not None})
    if not sizes:
        return ""
    text = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    return f"{text} seed{'s' if sizes[-1] != 1 else ''} per group"


def _condition_headline(vs: Sequence[Verdict], statistics: Mapping[str, Any]) -> str:
    name = display_name(vs[0].condition)
    shown = [v for v in vs if v.knowledge_transfer == _YES]
    no = [v for v in vs if v.knowledge_transfer == _NO]
    untestable = [v for v in vs if v.knowledge_transfer not in (_YES, _NO)]
    if not shown and not no:
        return _not_testable(vs, statistics)
    parts: list[str] = []
    if shown:
        groups: dict[tuple[str, str], list[Verdict]] = {}
        for v in shown:
            groups.setdefault((_beyond_clause(v), _payoff_clause(v)), []).append(v)
        for (beyond, payoff), g in groups.items():
            parts.append(f"{name} students{_at_alphas(g)} took real knowledge from the teacher{beyond}{payoff}.")
        if no:
            parts.append(f"At {_alphas(no)}: no significant transfer.")
    else:
        seeds = _seeds(no)
        if _has_alpha(no):
            where = f" at any α ({_alphas(no)[4:]}{'; ' + seeds if seeds else ''})"
        else:
            where = f" ({seeds})" if seeds else ""
        parts.append(
            f"No significant transfer{where}: {name} students "
            "agree with the teacher no more than students trained on the labels alone."
        )
    if untestable:
        head = f"At {_alphas(untestable)}" if _has_alpha(untestable) else f"{name} students"
        parts.append(f"{head}: not testable ({untestable[0].reasons.get('knowledge_transfer', '')}).")
    return " ".join(p.replace(" ().", ".") for p in parts)


def _beyond_clause(v: Verdict) -> str:
    if v.beyond_regularisation == _YES:
        return f" beyond what {_FREE_TEACHER} gives"
    if v.beyond_regularisation == _NO:
        return f", but not significantly more than {_FREE_TEACHER} gives"
    return f" (whether more than {_FREE_TEACHER} gives is not testable)"


def _payoff_clause(v: Verdict) -> str:
    """How the students took the teacher's mistakes; avoids the verdict names followed by a space,
    which the terminal's verdict lines use."""
    if v.negative_asymmetric_payoff == _YES:
        return ", and copied its mistakes more than its correct answers: a negative asymmetric payoff"
    if v.negative_asymmetric_payoff == _NT:
        return ", and whether it copied the teacher's mistakes more than its correct answers is not testable"
    copied = ", and copied its mistakes" if v.negative_transfer == _YES else ""
    if v.negative_transfer == _NO:
        return ", and did not copy its mistakes significantly: no negative asymmetric payoff"
    if v.standard == "paper":
        how = "in points they moved no more on its mistakes than on its correct answers"
        return f"{copied}, but no negative asymmetric payoff: {how}"
    diff = _finite(v.tests.get("H4", {}).get("mean_diff"))
    if diff is not None and diff < 0:
        how = "they moved less on its mistakes than on its correct answers"
    else:
        how = "they did not move significantly more on its mistakes than on its correct answers"
    return f"{copied}, but no negative asymmetric payoff: relative to the room each had left, {how}"


def _not_testable(vs: Sequence[Verdict], statistics: Mapping[str, Any]) -> str:
    """Why nothing about one condition can be decided: too few seeds (and how many would do), or the reason."""
    row = vs[0].tests.get("H1", {})
    bound, level = _finite(row.get("smallest_p_adjusted")), float(statistics.get("level", 0.05))
    if bound is None or bound < level:
        return f"Not testable: {vs[0].reasons.get('knowledge_transfer', 'no test could be computed')}."
    seeds = _seeds(vs) or "these seeds"
    try:
        design = Design(
            level=level,
            correction=str(statistics.get("correction", "holm")),
            paired=bool(statistics.get("paired", False)),
            method=str(statistics.get("method", "auto")),
            standard=str(statistics.get("standard", "kdaudit")),
        )
        m = int(statistics.get("primary_family_size") or 0)
        need = seeds_needed(m, design) if m else None
    except (InputError, TypeError, ValueError):
        need, design = None, Design()
    corr = design.primary_correction
    m_text = statistics.get("primary_family_size")
    after = "" if corr == "none" else f" after {corr} correction over {m_text} primary tests"
    text = f"Not testable: with {seeds}, no test can reach the {level:g} level{after}"
    return text + (f"; {need} seeds per group needed." if need else ".")
