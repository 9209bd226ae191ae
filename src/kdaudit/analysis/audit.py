"""Audit tables from per-run metrics: tests.csv, transfer.csv, summary and verdicts (PROTOCOL §4–6).

:func:`build_audit_tables` takes the runs table (one row per trained model, PROTOCOL §6) and
returns :class:`AuditTables`:

- ``verdicts``: one :class:`Verdict` per distillation condition (neither ``siddo`` nor a
  regularisation control) and α, decided by the primary family of
  :mod:`kdaudit.analysis.hypotheses` (H1 transfer, H2 beyond regularisation, H3 negative
  transfer, H4 asymmetry, corrected together), with plain-word sentences.
- ``tests`` (:data:`TESTS_COLUMNS`): for every condition X other than ``siddo``, every α of X
  and every per-student metric of :data:`TEST_METRICS` (plus the asymmetry scores
  :data:`DERIVED_METRICS`), X's students against all ``siddo`` students (comparison
  ``vs_siddo``) and, for conditions that are not controls, against each RCD condition at the same
  α (``vs_<rcd name>``): Mann–Whitney U, or with ``paired`` the Wilcoxon signed-rank test by seed
  (suffix ``_paired``; then the unpaired rows are kept as their own exploratory family).
  ``family`` is ``primary`` (the rows of H1–H4, ``hypothesis`` naming which) or a secondary
  family (every other row; corrected on its own, Benjamini–Hochberg by default, exploratory).
  ``significant`` is ``p_adjusted < level`` within the row's family. ``mean_diff`` with
  ``ci_low`` / ``ci_high`` is the difference of means and its seeded 95 % bootstrap interval.
- ``transfer`` (:data:`TRANSFER_COLUMNS`): Δ± with intervals, h±, the asymmetry h− − h+ (and
  Δ− − Δ+ in points) and their tests, and the verdicts that rest on them, per non-siddo
  condition and α — see :mod:`kdaudit.analysis.transfer`.
- ``summary`` (:data:`SUMMARY_COLUMNS`): per-seed means and SEMs per student group, ``siddo``
  first, then the other conditions sorted by name and α.

Degenerate inputs (one seed, no ``siddo`` students, NaN metrics) give NaN p-values and
"not testable" verdicts, never an exception; missing required columns raise
:class:`~kdaudit.errors.InputError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .hypotheses import (
    Decision,
    Design,
    Group,
    Unit,
    asymmetry_scores,
    compare_groups,
    decide,
    design_notes,
    is_regularisation_control,
    stream_seed,
)
from .stats import TestResult, adjust_pvalues, compression_bar, mean_sem
from .transfer import format_p, p_equals, payoff_sentence, transfer_effects

RUNS_COLUMNS = [
    "run_id",
    "role",
    "condition",
    "alpha",
    "temperature",
    "seed",
    "accuracy",
    "loss",
    "activation_distance",
    "js_divergence",
    "prediction_disagreement",
    "agreement",
    "logit_cosine",
    "rank_disagreement",
    "agreement_teacher_correct",
    "agreement_teacher_wrong",
    "n_teacher_correct",
    "n_teacher_wrong",
]
TESTS_COLUMNS = [
    "comparison",
    "condition",
    "alpha",
    "metric",
    "family",
    "hypothesis",
    "n_a",
    "n_b",
    "mean_a",
    "sem_a",
    "mean_b",
    "sem_b",
    "mean_diff",
    "ci_low",
    "ci_high",
    "statistic",
    "p_value",
    "method",
    "p_se",
    "p_adjusted",
    "effect_size",
    "significant",
]

CONTROL = "siddo"
"""The name of the control condition (Same Initialisation, Different Data Order)."""

TEST_METRICS = [
    "accuracy",
    "loss",
    "activation_distance",
    "js_divergence",
    "prediction_disagreement",
    "agreement",
    "logit_cosine",
    "rank_disagreement",
    "agreement_teacher_correct",
    "agreement_teacher_wrong",
]
"""The per-student metrics tested in tests.csv (columns of runs.csv)."""

REQUIRED_COLUMNS = ["role", "condition", "alpha", "seed", *TEST_METRICS]
"""Columns :func:`build_audit_tables` needs; the other RUNS_COLUMNS are optional."""

TRANSFER_COLUMNS = [
    "condition",
    "alpha",
    "delta_pos",
    "delta_pos_ci_low",
    "delta_pos_ci_high",
    "delta_neg",
    "delta_neg_ci_low",
    "delta_neg_ci_high",
    "h_pos",
    "h_neg",
    "asymmetry",
    "asymmetry_ci_low",
    "asymmetry_ci_high",
    "asymmetry_points",
    "p_pos",
    "p_neg",
    "p_neg_adjusted",
    "p_asymmetry",
    "p_asymmetry_adjusted",
    "p_asymmetry_points",
    "negative_transfer",
    "asymmetry_verdict",
    "negative_asymmetric_payoff",
    "verdict",
]
SUMMARY_METRICS = [
    "accuracy",
    "agreement",
    "js_divergence",
    "activation_distance",
    "agreement_teacher_correct",
    "agreement_teacher_wrong",
]
SUMMARY_COLUMNS = ["condition", "alpha", "n"] + [f"{m}_{stat}" for m in SUMMARY_METRICS for stat in ("mean", "sem")]


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


@dataclass
class AuditTables:
    runs: pd.DataFrame
    tests: pd.DataFrame
    transfer: pd.DataFrame
    summary: pd.DataFrame
    verdicts: list[Verdict]
    statistics: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def is_rcd(condition: str) -> bool:
    """True for a control condition (RCD noise or label smoothing): compared with SIDDO, never judged."""
    return is_regularisation_control(condition)


def display_name(condition: str) -> str:
    """A condition's name for sentences: ``KD``, ``SIDDO``, ``RCD-uniform``; others unchanged."""
    c = str(condition)
    low = c.lower()
    if low in ("kd", "siddo", "ls"):
        return low.upper()
    if low.startswith("rcd"):
        return "RCD" + c[3:]
    return c


def _fmt_alpha(alpha: float) -> str:
    return "n/a" if not math.isfinite(alpha) else f"{alpha:g}"


def _pct(mean: float, sem: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(sem):
        return f"{100 * mean:.1f} %"
    return f"{100 * mean:.1f} % ± {100 * sem:.1f}"


def _prepare(runs: pd.DataFrame) -> pd.DataFrame:
    """Check the columns and return the student rows with numeric metric columns."""
    if not isinstance(runs, pd.DataFrame):
        raise InputError(f"runs: expected a pandas DataFrame, got {type(runs).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in runs.columns]
    if missing:
        raise InputError(f"runs: missing required column(s): {', '.join(missing)}")
    students = runs.loc[runs["role"].astype(str) == "student"].copy()
    students["condition"] = students["condition"].astype(str)
    for col in ["alpha", "seed", *TEST_METRICS]:
        try:
            students[col] = pd.to_numeric(students[col]).astype(np.float64)
        except (ValueError, TypeError):
            raise InputError(f"runs: column {col!r} has non-numeric values") from None
    no_alpha = students.loc[(students["condition"] != CONTROL) & students["alpha"].isna()]
    if len(no_alpha):
        conds = ", ".join(sorted(set(no_alpha["condition"])))
        raise InputError(f"runs: {len(no_alpha)} student row(s) without alpha (condition {conds})")
    return students


def _values(df: pd.DataFrame, metric: str) -> np.ndarray:
    return df[metric].to_numpy(dtype=np.float64)


def _test_row(
    comparison: str,
    condition: str,
    alpha: float,
    metric: str,
    r: TestResult | Mapping[str, Any],
    family: str = "secondary",
    hypothesis: str = "",
) -> dict[str, Any]:
    d = r.to_dict() if isinstance(r, TestResult) else dict(r)
    return {
        "comparison": comparison,
        "condition": condition,
        "alpha": alpha,
        "metric": metric,
        "family": family,
        "hypothesis": hypothesis,
        **{
            k: d.get(k, math.nan)
            for k in TESTS_COLUMNS
            if k not in ("comparison", "condition", "alpha", "metric", "family", "hypothesis", "significant")
        },
        "method": d.get("method", ""),
        "p_se": d.get("p_se", 0.0),
        "p_adjusted": d.get("p_adjusted", math.nan),
        "significant": False,
    }


# ---------------------------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------------------------

_VERDICT_METRICS = ("agreement", "agreement_teacher_correct", "agreement_teacher_wrong")
DERIVED_METRICS = ("asymmetry", "asymmetry_points")
"""Per-student quantities tested against SIDDO beside the runs' metrics (see hypotheses)."""


def _group(df: pd.DataFrame) -> Group:
    return Group.of(df["seed"].to_numpy(), **{m: _values(df, m) for m in _VERDICT_METRICS})


def build_audit_tables(
    runs: pd.DataFrame,
    level: float = 0.05,
    correction: str = "holm",
    paired: bool = False,
    *,
    design: Design | None = None,
) -> AuditTables:
    """Build tests, transfer, summary and verdicts from the runs table (see the module doc).

    ``design`` (:class:`~kdaudit.analysis.hypotheses.Design`) sets every statistical option;
    without it, ``level``, ``correction`` (of the primary family) and ``paired`` make one with
    the other options at their defaults.
    """
    if design is None:
        design = Design(level=level, correction=correction, paired=paired)
    students = _prepare(runs)
    control = students.loc[students["condition"] == CONTROL]
    others = students.loc[students["condition"] != CONTROL]
    groups: dict[tuple[str, float], pd.DataFrame] = {
        (str(c), float(a)): g for (c, a), g in others.groupby(["condition", "alpha"], sort=True)
    }
    reg_at: dict[float, list[str]] = {}
    for cond, alpha in groups:
        if is_regularisation_control(cond):
            reg_at.setdefault(alpha, []).append(cond)
    control_group = _group(control) if len(control) else None

    # the primary family -----------------------------------------------------------------------
    unit_keys = [(c, a) for (c, a) in groups if not is_regularisation_control(c)]
    units = [
        Unit(c, a, _group(groups[(c, a)]), {r: _group(groups[(r, a)]) for r in reg_at.get(a, [])}) for c, a in unit_keys
    ]
    decisions = decide(units, control_group, design)
    primary: dict[tuple[str, str, float, str], dict[str, Any]] = {}
    for d in decisions:
        for h, row in d.tests.items():
            if h != "H2":
                primary[(row["comparison"], d.condition, d.alpha, row["metric"])] = row
        for c in d.h2_components:
            primary[(c["comparison"], d.condition, d.alpha, "agreement")] = c

    # tests.csv --------------------------------------------------------------------------------
    kinds = [design.primary_paired] + ([not design.primary_paired] if design.paired else [])
    rows: list[dict[str, Any]] = []
    for (cond, alpha), g in groups.items():
        opponents: list[tuple[str, pd.DataFrame]] = [(CONTROL, control)]
        if not is_regularisation_control(cond):
            opponents += [(r, groups[(r, alpha)]) for r in sorted(reg_at.get(alpha, []))]
        for kind in kinds:
            suffix = "_paired" if kind else ""
            family = (
                "secondary" if kind == design.primary_paired else ("secondary-paired" if kind else "secondary-unpaired")
            )
            for opponent, b in opponents:
                comparison = f"vs_{opponent}{suffix}"
                values = {m: (_values(g, m), _values(b, m)) for m in TEST_METRICS}
                if opponent == CONTROL and len(b):
                    ga, gb = _group(g), _group(b)
                    values["asymmetry"] = asymmetry_scores(ga, gb)
                    values["asymmetry_points"] = asymmetry_scores(ga, gb, headroom=False)
                for metric, (va, vb) in values.items():
                    hit = primary.get((comparison, cond, alpha, metric)) if kind == design.primary_paired else None
                    if hit is not None:
                        rows.append(_test_row(comparison, cond, alpha, metric, hit, "primary", hit["hypothesis"]))
                        continue
                    res = compare_groups(
                        va,
                        vb,
                        seeds_a=g["seed"].to_numpy(),
                        seeds_b=b["seed"].to_numpy(),
                        paired=kind,
                        method=design.method,
                        bootstrap=design.bootstrap,
                        seed=stream_seed(design.seed, f"vs_{opponent}", cond, alpha, metric),
                        permutations=design.permutations,
                    )
                    rows.append(_test_row(comparison, cond, alpha, metric, res, family))
    tests = pd.DataFrame(rows, columns=TESTS_COLUMNS)
    if len(tests):
        for family in tests["family"].unique():
            if family == "primary":
                continue
            sel = tests["family"] == family
            tests.loc[sel, "p_adjusted"] = adjust_pvalues(
                tests.loc[sel, "p_value"].to_numpy(np.float64), design.secondary_correction
            )
        tests["significant"] = (tests["p_adjusted"] < design.level).astype(bool)
    tests = tests.astype({"n_a": "int64", "n_b": "int64", "significant": "bool"})

    def row_of(comparison: str, cond: str, alpha: float, metric: str) -> pd.Series | None:
        hit = tests.loc[
            (tests["comparison"] == comparison)
            & (tests["condition"] == cond)
            & (tests["alpha"] == alpha)
            & (tests["metric"] == metric)
        ]
        return None if hit.empty else hit.iloc[0]

    # transfer.csv -----------------------------------------------------------------------------
    by_unit = {(d.condition, d.alpha): d for d in decisions}
    suffix = "_paired" if design.primary_paired else ""
    transfer_rows: list[dict[str, Any]] = []
    for (cond, alpha), g in groups.items():
        eff = transfer_effects(
            _values(g, "agreement_teacher_correct"),
            _values(g, "agreement_teacher_wrong"),
            _values(control, "agreement_teacher_correct"),
            _values(control, "agreement_teacher_wrong"),
        )
        row: dict[str, Any] = {"condition": cond, "alpha": alpha, **eff}
        for key, metric in (
            ("delta_pos", "agreement_teacher_correct"),
            ("delta_neg", "agreement_teacher_wrong"),
            ("asymmetry", "asymmetry"),
            ("asymmetry_points", "asymmetry_points"),
        ):
            r = row_of(f"vs_{CONTROL}{suffix}", cond, alpha, metric)
            if key in ("asymmetry", "asymmetry_points"):
                row[key] = math.nan if r is None else float(r["mean_diff"])
            if key != "asymmetry_points":
                row[f"{key}_ci_low"] = math.nan if r is None else float(r["ci_low"])
                row[f"{key}_ci_high"] = math.nan if r is None else float(r["ci_high"])
            p_key = {
                "delta_pos": "p_pos",
                "delta_neg": "p_neg",
                "asymmetry": "p_asymmetry",
                "asymmetry_points": "p_asymmetry_points",
            }[key]
            row[p_key] = math.nan if r is None else float(r["p_value"])
        d = by_unit.get((cond, alpha))
        if d is not None:
            row["p_neg_adjusted"] = d.tests["H3"]["p_adjusted"] if "H3" in d.tests else math.nan
            row["p_asymmetry_adjusted"] = d.tests["H4"]["p_adjusted"] if "H4" in d.tests else math.nan
            row["negative_transfer"] = d.verdicts["negative_transfer"]
            row["asymmetry_verdict"] = d.verdicts["asymmetry"]
            row["negative_asymmetric_payoff"] = d.verdicts["negative_asymmetric_payoff"]
            row["verdict"] = f"At α = {_fmt_alpha(alpha)}, " + _lower_first(_payoff_text(d, eff))
        else:  # a regularisation control: described, not judged
            row.update(
                p_neg_adjusted=math.nan,
                p_asymmetry_adjusted=math.nan,
                negative_transfer="control",
                asymmetry_verdict="control",
                negative_asymmetric_payoff="control",
                verdict=f"{display_name(cond)} is a control: its Δ± describe regularisation without knowledge.",
            )
        transfer_rows.append(row)
    transfer = pd.DataFrame(transfer_rows, columns=TRANSFER_COLUMNS)

    # summary ---------------------------------------------------------------------------------
    summary_rows: list[dict[str, Any]] = []
    summary_groups: list[tuple[str, float, pd.DataFrame]] = [
        (CONTROL, float(a), g) for a, g in control.groupby("alpha", sort=True, dropna=False)
    ] + [(c, a, g) for (c, a), g in groups.items()]
    for cond, alpha, g in summary_groups:
        srow: dict[str, Any] = {"condition": cond, "alpha": alpha, "n": int(len(g))}
        for m in SUMMARY_METRICS:
            srow[f"{m}_mean"], srow[f"{m}_sem"] = mean_sem(_values(g, m))
        summary_rows.append(srow)
    summary = pd.DataFrame(summary_rows, columns=SUMMARY_COLUMNS).astype({"n": "int64"})

    # verdicts --------------------------------------------------------------------------------
    verdicts = [_verdict(d, groups[(d.condition, d.alpha)], control, groups, design) for d in decisions]
    m = sum(len(d.tests) for d in decisions)
    n_seeds = int(students["seed"].nunique()) if len(students) else 0
    statistics = {
        "standard": design.standard,
        "level": design.level,
        "correction": design.primary_correction,
        "secondary_correction": design.secondary_correction,
        "paired": design.primary_paired,
        "method": design.method,
        "bootstrap": design.bootstrap,
        "seed": design.seed,
        "primary_family_size": m,
        "notes": design_notes(n_seeds, len(units), bool(reg_at), len(control) > 0, design) if units else [],
    }
    return AuditTables(
        runs=runs.copy(), tests=tests, transfer=transfer, summary=summary, verdicts=verdicts, statistics=statistics
    )


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def _payoff_text(d: Decision, eff: dict[str, Any]) -> str:
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
    return text


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


def _words(key: str, outcome: str, reason: str) -> str:
    yes, no, nt = _OUTCOME_WORDS[key]
    if outcome == "yes":
        return f"{yes}."
    return f"{no} ({reason})." if outcome == "no" else f"{nt} ({reason})."


def _verdict(
    d: Decision,
    g: pd.DataFrame,
    control: pd.DataFrame,
    groups: dict[tuple[str, float], pd.DataFrame],
    design: Design,
) -> Verdict:
    cond, alpha = d.condition, d.alpha
    name = display_name(cond)
    at = f"At α = {_fmt_alpha(alpha)}"
    corr = design.primary_correction
    sentences: list[str] = []
    mx, sx = mean_sem(_values(g, "agreement"))
    mc, sc = mean_sem(_values(control, "agreement"))

    # H1: knowledge transfer
    kt = _words("knowledge_transfer", d.verdicts["knowledge_transfer"], d.reasons["knowledge_transfer"])
    if len(control) == 0:
        sentences.append(f"{at}, {name} students agree with the teacher on {_pct(mx, sx)} of test samples; {kt}")
    else:
        head = (
            f"{at}, {name} students agree with the teacher on {_pct(mx, sx)} of test samples vs "
            f"{_pct(mc, sc)} for {display_name(CONTROL)}"
        )
        sentences.append(f"{head} ({_diff_text(d.tests.get('H1', {}), correction=corr)}): {kt}")

    # H2: beyond regularisation
    row2 = d.tests.get("H2")
    if row2 is None:
        sentences.append(
            f"{at}, "
            + _words("beyond_regularisation", d.verdicts["beyond_regularisation"], d.reasons["beyond_regularisation"])
        )
    else:
        hard = row2["control"]
        mr, sr = mean_sem(_values(groups[(hard, alpha)], "agreement"))
        others = len(d.h2_components) - 1
        which = "the hardest regularisation control" if others else "the regularisation control"
        sentences.append(
            f"{at}, against {which} {display_name(hard)} ({_pct(mr, sr)}), {name} agreement is {_pct(mx, sx)} "
            f"({_diff_text(row2, correction=corr)}): "
            + _words("beyond_regularisation", d.verdicts["beyond_regularisation"], d.reasons["beyond_regularisation"])
        )

    # H3 + H4: the negative asymmetric payoff
    eff = transfer_effects(
        _values(g, "agreement_teacher_correct"),
        _values(g, "agreement_teacher_wrong"),
        _values(control, "agreement_teacher_correct"),
        _values(control, "agreement_teacher_wrong"),
    )
    sentences.append(f"{at}, " + _lower_first(_payoff_text(d, eff)))

    # compression bar
    bar = compression_bar(_values(g, "agreement"), _values(g, "js_divergence"), _values(g, "activation_distance"))
    if not bar["testable"]:
        comp = "not testable"
        sentences.append(f"{at}, the compression bar is not testable (missing metric values).")
    else:
        comp = "yes" if bar["compresses"] else "no"
        scores = (
            f"agreement {bar['agreement_score']:.3f}, 1 − JS/ln 2 = {bar['js_score']:.3f}, "
            f"1 − AD/√2 = {bar['ad_score']:.3f} (bar: {bar['threshold']:g} each)"
        )
        if comp == "yes":
            sentences.append(f"{at}, {name} compresses the teacher: {scores}.")
        else:
            sentences.append(f"{at}, {name} does not compress the teacher: {scores}.")

    tests = {h: {k: r.get(k) for k in _VERDICT_TEST_KEYS if k in r} for h, r in d.tests.items()}
    return Verdict(
        condition=cond,
        alpha=alpha,
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
