"""The primary hypotheses, their family and the verdicts (PROTOCOL §4–5).

The verdicts of an audit are decided by a family of tests fixed before any data is seen. For
each *verdict unit* — a distillation condition X (``kd``) at one α — and the controls of the
same audit:

====  ===========================  ===================================================================
H1    knowledge transfer           agreement with the teacher, X > SIDDO
H2    beyond regularisation        agreement, X > every regularisation control (RCD, LS) at the same α;
                                   an intersection–union test: its p is the largest of the
                                   comparisons' p, so it is decided against the hardest control
H3    negative transfer            agreement on the teacher-wrong samples, X > SIDDO
H4    asymmetry                    the per-student asymmetry d (below), X > SIDDO
====  ===========================  ===================================================================

**The asymmetry score** of a student i (KD and SIDDO students alike), with m_C and m_W the SIDDO
means of agreement on the teacher-correct (𝒞) and teacher-wrong (𝒲) samples::

    d_i = (a_W,i − m_W) / (1 − m_W)  −  (a_C,i − m_C) / (1 − m_C)

its move towards the teacher on the teacher's errors minus its move on the teacher's correct
answers, each as a share of the headroom SIDDO leaves. The mean of d over X's students is
h− − h+; over SIDDO's students it is 0. H4 tests X's d against SIDDO's d, so SIDDO's own spread
is the null. The raw-points reading, d_i = (a_W,i − m_W) − (a_C,i − m_C) (mean: Δ− − Δ+), is
reported beside it as a secondary test.

**Tests.** Two-sided Mann–Whitney U of X's per-seed values against the control's; with
``paired`` the Wilcoxon signed-rank test of the per-seed differences replaces it (never both
in one family). p-values follow ``method`` (:mod:`kdaudit.analysis.exact`: exact without ties,
a permutation test with ties).

**Family.** All primary tests of the audit — 4 per verdict unit (3 without regularisation
controls) — are corrected together (Holm by default). The family's size depends on the design
only (conditions, α), never on the data: a test whose p cannot be computed counts with p = 1.

**Outcomes** (``standard="kdaudit"``): a hypothesis is *yes* when its adjusted p is below the
level **and** the rank-biserial effect is positive (X ranks above the control; for H2 against
every control); *no* otherwise; *not testable* when the p cannot be computed, or when even
perfectly separated samples of these sizes could not reach the level after the correction
(:func:`~kdaudit.analysis.design.smallest_adjusted_p`; the reason names the seeds that would make it testable).

**Verdicts.** knowledge transfer = H1; beyond regularisation = H1 and H2 (claimed only with
transfer); negative transfer = H3; asymmetry = H4; negative asymmetric payoff = H3 and H4.

``standard="paper"`` applies the paper's rules instead: every test two-sided Mann–Whitney at the
level, no correction, the direction from the means; beyond regularisation = X above every RCD
(not gated on transfer); asymmetry = Δ− > Δ+ in points (no test).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from .design import (
    STANDARDS,
    Design,
    correction_label,
    design_notes,
    family_bound,
    family_size,
    seeds_needed,
    smallest_adjusted_p,
)
from .effects import bootstrap_mean_diff
from .stats import TestResult, adjust_pvalues, mann_whitney, wilcoxon_paired
from .transfer import p_equals, transfer_effects

__all__ = [
    "CONTROL",
    "Decision",
    "Design",
    "Group",
    "HYPOTHESES",
    "STANDARDS",
    "Unit",
    "VERDICT_KEYS",
    "asymmetry_scores",
    "compare_groups",
    "decide",
    "design_notes",
    "family_bound",
    "family_size",
    "is_regularisation_control",
    "seeds_needed",
    "smallest_adjusted_p",
]

YES, NO, NOT_TESTABLE = "yes", "no", "not testable"
VERDICT_KEYS = (
    "knowledge_transfer",
    "beyond_regularisation",
    "negative_transfer",
    "asymmetry",
    "negative_asymmetric_payoff",
)
HYPOTHESES: dict[str, tuple[str, str]] = {
    "H1": ("knowledge_transfer", "agreement"),
    "H2": ("beyond_regularisation", "agreement"),
    "H3": ("negative_transfer", "agreement_teacher_wrong"),
    "H4": ("asymmetry", "asymmetry"),
}
"""Primary hypothesis → (the verdict it decides, the per-student quantity it tests)."""

CONTROL = "siddo"
"""The name of the control condition (Same Initialisation, Different Data Order)."""


def is_regularisation_control(condition: str) -> bool:
    """True for a control that gives the KD loss a teacher without knowledge: RCD noise tables and
    the label-smoothing virtual teacher (``ls``)."""
    c = str(condition).lower()
    return c.startswith("rcd") or c == "ls"


@dataclass
class Group:
    """The students of one condition (at one α): their seeds and per-student values."""

    seeds: np.ndarray
    values: dict[str, np.ndarray]

    @classmethod
    def of(cls, seeds: ArrayLike, **values: ArrayLike) -> Group:
        return cls(np.asarray(seeds), {k: np.asarray(v, dtype=np.float64) for k, v in values.items()})

    def __getitem__(self, metric: str) -> np.ndarray:
        return self.values[metric]

    def __len__(self) -> int:
        return int(len(self.seeds))


@dataclass
class Unit:
    """One verdict unit: condition X at α, and the regularisation controls at the same α."""

    condition: str
    alpha: float
    x: Group
    regularisers: dict[str, Group] = field(default_factory=dict)


@dataclass
class Decision:
    """The primary tests and verdicts of one unit.

    ``tests`` maps each hypothesis to its row (the fields of :func:`compare_groups` plus
    ``hypothesis``, ``comparison``, ``metric``, ``p_adjusted``, ``smallest_p_adjusted``,
    ``outcome`` and ``why``); H2's row is its deciding comparison and ``h2_components`` holds
    every comparison against a regularisation control. ``reasons`` says, per verdict, why it
    is what it is.
    """

    condition: str
    alpha: float
    verdicts: dict[str, str]
    reasons: dict[str, str]
    tests: dict[str, dict[str, Any]]
    h2_components: list[dict[str, Any]] = field(default_factory=list)
    asymmetry_points: dict[str, Any] | None = None
    standard: str = "kdaudit"


# ---------------------------------------------------------------------------------------------
# Per-student quantities and two-group comparisons
# ---------------------------------------------------------------------------------------------


def asymmetry_scores(x: Group, control: Group, headroom: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The asymmetry score d of every X student and every control student (module doc).

    ``headroom=False`` gives the raw-points reading. Without headroom (a SIDDO mean of 1) the
    headroom scores are NaN.
    """

    def mean(v: np.ndarray) -> float:
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan

    m_c = mean(control["agreement_teacher_correct"])
    m_w = mean(control["agreement_teacher_wrong"])

    def score(g: Group) -> np.ndarray:
        a_c, a_w = g["agreement_teacher_correct"], g["agreement_teacher_wrong"]
        if not headroom:
            return (a_w - m_w) - (a_c - m_c)
        if not (1.0 - m_c > 0 and 1.0 - m_w > 0):
            return np.full(a_c.shape, np.nan)
        return (a_w - m_w) / (1.0 - m_w) - (a_c - m_c) / (1.0 - m_c)

    with np.errstate(invalid="ignore"):
        return score(x), score(control)


def _aligned(a: np.ndarray, sa: np.ndarray, b: np.ndarray, sb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values of the seeds present in both groups, seed by seed (duplicate seeds averaged)."""
    common = np.intersect1d(sa, sb)

    def per_seed(v: np.ndarray, s: np.ndarray) -> np.ndarray:
        return np.array([np.nanmean(v[s == k]) if np.isfinite(v[s == k]).any() else np.nan for k in common])

    return per_seed(a, sa), per_seed(b, sb)


def stream_seed(design_seed: int, *labels: Any) -> int:
    """A generator seed for one test: the design's seed and a stable hash of its labels."""
    return int(design_seed) * 2**32 + zlib.crc32("|".join(str(x) for x in labels).encode())


def compare_groups(
    a: ArrayLike,
    b: ArrayLike,
    *,
    seeds_a: ArrayLike | None = None,
    seeds_b: ArrayLike | None = None,
    paired: bool = False,
    method: str = "auto",
    bootstrap: int = 10_000,
    seed: int = 0,
    permutations: int = 100_000,
) -> dict[str, Any]:
    """One test of a against b, as a row: the :class:`TestResult` fields, ``paired`` and
    ``mean_diff`` = mean(a) − mean(b) with its bootstrap interval ``ci_low`` / ``ci_high``.

    ``paired`` matches the students by seed (``seeds_a`` / ``seeds_b``) and runs the Wilcoxon
    signed-rank test on the seeds present in both; otherwise Mann–Whitney U.
    """
    va = np.asarray(a, dtype=np.float64).reshape(-1)
    vb = np.asarray(b, dtype=np.float64).reshape(-1)
    if paired:
        if seeds_a is None or seeds_b is None:
            raise InputError("a paired comparison needs the seeds of both groups")
        va, vb = _aligned(va, np.asarray(seeds_a), vb, np.asarray(seeds_b))
        res: TestResult = wilcoxon_paired(va, vb, method=method, seed=seed, n_resamples=permutations)
    else:
        res = mann_whitney(va, vb, method=method, seed=seed, n_resamples=permutations)
    diff, lo, hi = bootstrap_mean_diff(va, vb, paired=paired, n_boot=bootstrap, seed=seed)
    return {**res.to_dict(), "paired": paired, "mean_diff": diff, "ci_low": lo, "ci_high": hi}


# ---------------------------------------------------------------------------------------------
# The decision
# ---------------------------------------------------------------------------------------------


def decide(units: Sequence[Unit], control: Group | None, design: Design) -> list[Decision]:
    """The primary family of ``units`` against ``control`` (SIDDO), corrected together, and the
    verdicts of each unit (module doc)."""
    has_control = control is not None and len(control) > 0
    paired = design.primary_paired
    method = design.method

    def test(a: np.ndarray, sa: np.ndarray, b: np.ndarray, sb: np.ndarray, *labels: Any) -> dict[str, Any]:
        return compare_groups(
            a,
            b,
            seeds_a=sa,
            seeds_b=sb,
            paired=paired,
            method=method,
            bootstrap=design.bootstrap,
            seed=stream_seed(design.seed, *labels),
            permutations=design.permutations,
        )

    suffix = "_paired" if paired else ""
    per_unit: list[dict[str, dict[str, Any]]] = []
    components: list[list[dict[str, Any]]] = []
    asym_points: list[dict[str, Any] | None] = []
    for u in units:
        rows: dict[str, dict[str, Any]] = {}
        if has_control:
            assert control is not None
            for h, metric in (("H1", "agreement"), ("H3", "agreement_teacher_wrong")):
                rows[h] = {
                    **test(
                        u.x[metric], u.x.seeds, control[metric], control.seeds, "vs_siddo", u.condition, u.alpha, metric
                    ),
                    "comparison": f"vs_{CONTROL}{suffix}",
                    "metric": metric,
                }
            dx, dc = asymmetry_scores(u.x, control)
            rows["H4"] = {
                **test(dx, u.x.seeds, dc, control.seeds, "vs_siddo", u.condition, u.alpha, "asymmetry"),
                "comparison": f"vs_{CONTROL}{suffix}",
                "metric": "asymmetry",
            }
            px, pc = asymmetry_scores(u.x, control, headroom=False)
            asym_points.append(
                {
                    **test(px, u.x.seeds, pc, control.seeds, "vs_siddo", u.condition, u.alpha, "asymmetry_points"),
                    "comparison": f"vs_{CONTROL}{suffix}",
                    "metric": "asymmetry_points",
                }
            )
        else:
            asym_points.append(None)
        comps = []
        for r_name in sorted(u.regularisers):
            g = u.regularisers[r_name]
            comps.append(
                {
                    **test(
                        u.x["agreement"],
                        u.x.seeds,
                        g["agreement"],
                        g.seeds,
                        f"vs_{r_name}",
                        u.condition,
                        u.alpha,
                        "agreement",
                    ),
                    "comparison": f"vs_{r_name}{suffix}",
                    "metric": "agreement",
                    "control": r_name,
                }
            )
        if comps:
            ps = [c["p_value"] for c in comps]
            if all(math.isfinite(p) for p in ps):
                deciding = max(range(len(comps)), key=lambda i: (ps[i], -comps[i]["effect_size"]))
            else:
                deciding = next(i for i, p in enumerate(ps) if not math.isfinite(p))
            rows["H2"] = dict(comps[deciding])
        per_unit.append(rows)
        components.append(comps)

    # the family: fixed by the design (every hypothesis the groups allow), NaN counted as p = 1
    keys = [(i, h) for i, rows in enumerate(per_unit) for h in ("H1", "H2", "H3", "H4") if h in rows]
    m = len(keys)
    raw = np.array([per_unit[i][h]["p_value"] for i, h in keys], dtype=np.float64)
    adjusted = adjust_pvalues(np.where(np.isfinite(raw), raw, 1.0), design.primary_correction) if m else raw
    for (i, h), p_raw, p_adj in zip(keys, raw, adjusted, strict=True):
        row = per_unit[i][h]
        row["hypothesis"] = h
        row["p_adjusted"] = float(p_adj) if math.isfinite(p_raw) else math.nan
        n_a, n_b = _sizes(row, components[i] if h == "H2" else None)
        row["smallest_p_adjusted"] = smallest_adjusted_p(n_a, n_b, m, design)
    for i, rows in enumerate(per_unit):
        for c in components[i]:
            c["hypothesis"] = "H2"
            c["p_adjusted"] = rows["H2"]["p_adjusted"]

    decisions = []
    for i, u in enumerate(units):
        rows = per_unit[i]
        if design.standard == "paper":
            outcomes = _paper_outcomes(rows, components[i], u, control, design)
        else:
            outcomes = _kdaudit_outcomes(rows, components[i], m, design)
        for h, (outcome, why) in outcomes.items():
            if h in rows:
                rows[h]["outcome"], rows[h]["why"] = outcome, why
        verdicts, reasons = _verdicts(outcomes, bool(components[i]), has_control, design)
        decisions.append(
            Decision(u.condition, u.alpha, verdicts, reasons, rows, components[i], asym_points[i], design.standard)
        )
    return decisions


def _sizes(row: dict[str, Any], comps: list[dict[str, Any]] | None) -> tuple[int, int]:
    if comps:  # H2 needs every comparison to reach the level: the smallest groups decide
        return min(int(c["n_a"]) for c in comps), min(int(c["n_b"]) for c in comps)
    return int(row["n_a"]), int(row["n_b"])


def _seeds_hint(m: int, design: Design) -> str:
    need = seeds_needed(m, design)
    return f"; {need} seeds per group would make it testable" if need else ""


def _kdaudit_outcomes(
    rows: dict[str, dict[str, Any]], comps: list[dict[str, Any]], m: int, design: Design
) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    corr = correction_label(design)
    for h, row in rows.items():
        bound = row["smallest_p_adjusted"]
        if not (math.isfinite(bound) and bound < design.level):
            n_a, n_b = _sizes(row, comps if h == "H2" else None)
            if not math.isfinite(bound):
                why = f"too few students to test (n = {n_a} vs {n_b})"
            else:
                why = (
                    f"with {n_a} vs {n_b} students the smallest attainable {corr} p in a primary family "
                    f"of {m} is {bound:.3g}, not below {design.level:g}{_seeds_hint(m, design)}"
                )
            out[h] = (NOT_TESTABLE, why)
            continue
        p, p_adj = row["p_value"], row["p_adjusted"]
        if not math.isfinite(p):
            out[h] = (NOT_TESTABLE, f"no p-value ({row.get('reason') or 'degenerate values'})")
            continue
        if h == "H2":
            direction = all(c["effect_size"] > 0 for c in comps if math.isfinite(c["effect_size"]))
        else:
            direction = math.isfinite(row["effect_size"]) and row["effect_size"] > 0
        sig = p_adj < design.level
        if sig and direction:
            r = row["effect_size"]
            out[h] = (YES, f"{corr} {p_equals(p_adj)}, below {design.level:g}; rank-biserial r = {r:+.2f}")
        elif sig:
            r = row["effect_size"]
            out[h] = (NO, f"significant in the opposite direction (r = {r:+.2f}, {corr} {p_equals(p_adj)})")
        else:
            out[h] = (NO, f"{corr} {p_equals(p_adj)}, not below {design.level:g}")
    return out


def _paper_outcomes(
    rows: dict[str, dict[str, Any]], comps: list[dict[str, Any]], u: Unit, control: Group | None, design: Design
) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for h, row in rows.items():
        if h == "H4":
            continue
        bound = row["smallest_p_adjusted"]
        p = row["p_value"]
        if not (math.isfinite(bound) and bound < design.level):
            out[h] = (NOT_TESTABLE, f"with {row['n_a']} vs {row['n_b']} students no p can fall below {design.level:g}")
        elif not math.isfinite(p):
            out[h] = (NOT_TESTABLE, f"no p-value ({row.get('reason') or 'degenerate values'})")
        else:
            tested = comps if h == "H2" else [row]
            ok = all(c["p_value"] < design.level and c["mean_diff"] > 0 for c in tested)
            out[h] = (YES if ok else NO, f"Mann–Whitney {p_equals(p)}, mean difference {row['mean_diff']:+.4f}")
    if "H4" in rows and control is not None:
        eff = transfer_effects(
            u.x["agreement_teacher_correct"],
            u.x["agreement_teacher_wrong"],
            control["agreement_teacher_correct"],
            control["agreement_teacher_wrong"],
        )
        dp, dn = eff["delta_pos"], eff["delta_neg"]
        if not (math.isfinite(dp) and math.isfinite(dn)):
            out["H4"] = (NOT_TESTABLE, "Δ+ or Δ− not computable")
        else:
            out["H4"] = (
                YES if dn > dp else NO,
                f"Δ− = {100 * dn:+.1f} points {'>' if dn > dp else '≤'} Δ+ = {100 * dp:+.1f} points (no test)",
            )
    return out


def _verdicts(
    outcomes: dict[str, tuple[str, str]], has_regularisers: bool, has_control: bool, design: Design
) -> tuple[dict[str, str], dict[str, str]]:
    no_siddo = (NOT_TESTABLE, "there are no SIDDO students to compare with")
    h1 = outcomes.get("H1", no_siddo)
    h3 = outcomes.get("H3", no_siddo)
    h4 = outcomes.get("H4", no_siddo)
    v: dict[str, tuple[str, str]] = {"knowledge_transfer": h1, "negative_transfer": h3, "asymmetry": h4}
    if not has_regularisers:
        v["beyond_regularisation"] = (
            NOT_TESTABLE,
            "there are no regularisation-control (RCD, LS) students to compare with",
        )
    elif design.standard == "paper" or h1[0] == YES:
        v["beyond_regularisation"] = outcomes["H2"]
    elif h1[0] == NO:
        v["beyond_regularisation"] = (NO, "claimed only with knowledge transfer, which is not shown")
    else:
        v["beyond_regularisation"] = (NOT_TESTABLE, f"needs knowledge transfer, which is not testable: {h1[1]}")
    if h3[0] == YES and h4[0] == YES:
        v["negative_asymmetric_payoff"] = (YES, "negative transfer and asymmetry both shown")
    elif h3[0] == NO or h4[0] == NO:
        which = "; ".join(
            f"{n} not shown: {o[1]}" for n, o in (("negative transfer", h3), ("asymmetry", h4)) if o[0] == NO
        )
        v["negative_asymmetric_payoff"] = (NO, which)
    else:
        v["negative_asymmetric_payoff"] = (NOT_TESTABLE, h3[1] if h3[0] == NOT_TESTABLE else h4[1])
    return {k: v[k][0] for k in VERDICT_KEYS}, {k: v[k][1] for k in VERDICT_KEYS}
