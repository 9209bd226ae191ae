"""Audit tables from per-run metrics: tests.csv, transfer.csv, summary and verdicts (PROTOCOL §4–6).

:func:`build_audit_tables` takes the runs table (one row per trained model, PROTOCOL §6) and
returns :class:`AuditTables`:

- ``verdicts``: one :class:`Verdict` per distillation condition (neither ``siddo`` nor a
  regularisation control) and α, decided by the primary family of
  :mod:`kdaudit.analysis.hypotheses` (H1 transfer, H2 beyond regularisation, H3 negative
  transfer, H4 asymmetry, corrected together), with plain-word sentences.
- ``tests`` (:data:`TESTS_COLUMNS`): for every condition X other than ``siddo``, every α of X
  and every per-student metric of :func:`~kdaudit.analysis.catalogue.tested_metrics` (plus the
  asymmetry scores :data:`DERIVED_METRICS`), X's students against all ``siddo`` students (comparison
  ``vs_siddo``) and, for conditions that are not controls, against each RCD condition at the same
  α (``vs_<rcd name>``): Mann–Whitney U, or with ``paired`` the Wilcoxon signed-rank test by seed
  (suffix ``_paired``; then the unpaired rows are kept as their own exploratory family).
  ``family`` is ``primary`` (the rows of H1–H4, ``hypothesis`` naming which) or a secondary
  family (every other row; corrected on its own, Benjamini–Hochberg by default, exploratory).
  ``significant`` is ``p_adjusted < level`` within the row's family. ``mean_diff`` with
  ``ci_low`` / ``ci_high`` is the difference of means and its seeded 95 % bootstrap interval.
- ``transfer`` (:data:`TRANSFER_COLUMNS`): Δ± with intervals, h±, the asymmetry h− − h+ (and
  Δ− − Δ+ in points) and their tests, and the verdicts that rest on them, per non-siddo
  condition and α — see :mod:`kdaudit.analysis.transfer`; the ``verdict`` sentence is that of
  :func:`~kdaudit.analysis.verdicts.payoff_verdict`.
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
from .catalogue import runs_columns, summary_metrics, tested_metrics
from .hypotheses import (
    CONTROL,
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
from .stats import TestResult, adjust_pvalues, mean_sem
from .transfer import transfer_effects
from .verdicts import Verdict, display_name, payoff_verdict, verdict_of

__all__ = [
    "CONTROL",
    "DERIVED_METRICS",
    "REQUIRED_COLUMNS",
    "RUNS_COLUMNS",
    "SUMMARY_COLUMNS",
    "TESTS_COLUMNS",
    "TRANSFER_COLUMNS",
    "AuditTables",
    "Verdict",
    "build_audit_tables",
    "display_name",
    "is_rcd",
]

RUNS_COLUMNS = runs_columns()
"""The columns of runs.csv: which model a row is, then its metrics (see :mod:`kdaudit.analysis.catalogue`)."""

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

REQUIRED_COLUMNS = ["role", "condition", "alpha", "seed", *tested_metrics()]
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

SUMMARY_COLUMNS = ["condition", "alpha", "n"] + [f"{m}_{stat}" for m in summary_metrics() for stat in ("mean", "sem")]

DERIVED_METRICS = ("asymmetry", "asymmetry_points")
"""Per-student quantities tested against SIDDO beside the runs' metrics (see hypotheses)."""

_GROUP_METRICS = (
    "agreement",
    "agreement_teacher_correct",
    "agreement_teacher_wrong",
    "js_divergence",
    "activation_distance",
)
"""The per-student values the decision and the verdict sentences read."""

_TRANSFER_TESTS = (
    ("delta_pos", "agreement_teacher_correct", "p_pos"),
    ("delta_neg", "agreement_teacher_wrong", "p_neg"),
    ("asymmetry", "asymmetry", "p_asymmetry"),
    ("asymmetry_points", "asymmetry_points", "p_asymmetry_points"),
)
"""transfer.csv quantity, the tests.csv metric it comes from and the column of its p."""

_Key = tuple[str, float]
"""(condition, α) of a group of students."""


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


def _prepare(runs: pd.DataFrame) -> pd.DataFrame:
    """Check the columns and return the student rows with numeric metric columns."""
    if not isinstance(runs, pd.DataFrame):
        raise InputError(f"runs: expected a pandas DataFrame, got {type(runs).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in runs.columns]
    if missing:
        raise InputError(f"runs: missing required column(s): {', '.join(missing)}")
    students = runs.loc[runs["role"].astype(str) == "student"].copy()
    students["condition"] = students["condition"].astype(str)
    for col in ["alpha", "seed", *tested_metrics()]:
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


def _group(df: pd.DataFrame) -> Group:
    return Group.of(df["seed"].to_numpy(), **{m: _values(df, m) for m in _GROUP_METRICS})


def _effects(g: pd.DataFrame, control: pd.DataFrame) -> dict[str, float]:
    return transfer_effects(
        _values(g, "agreement_teacher_correct"),
        _values(g, "agreement_teacher_wrong"),
        _values(control, "agreement_teacher_correct"),
        _values(control, "agreement_teacher_wrong"),
    )


# ---------------------------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------------------------


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
    groups: dict[_Key, pd.DataFrame] = {
        (str(c), float(a)): g for (c, a), g in others.groupby(["condition", "alpha"], sort=True)
    }
    reg_at: dict[float, list[str]] = {}
    for cond, alpha in groups:
        if is_regularisation_control(cond):
            reg_at.setdefault(alpha, []).append(cond)
    control_group = _group(control)

    units = [
        Unit(c, a, _group(g), {r: _group(groups[(r, a)]) for r in reg_at.get(a, [])})
        for (c, a), g in groups.items()
        if not is_regularisation_control(c)
    ]
    decisions = decide(units, control_group if len(control) else None, design)
    effects = {key: _effects(g, control) for key, g in groups.items()}
    tests = _tests_table(groups, control, reg_at, _primary_rows(decisions), design)
    transfer = _transfer_table(effects, tests, {(d.condition, d.alpha): d for d in decisions}, design)
    verdicts = [
        verdict_of(d, u, control_group, effects[(d.condition, d.alpha)], design)
        for d, u in zip(decisions, units, strict=True)
    ]
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
        "primary_family_size": sum(len(d.tests) for d in decisions),
        "notes": design_notes(n_seeds, len(units), bool(reg_at), len(control) > 0, design) if units else [],
    }
    return AuditTables(
        runs=runs.copy(),
        tests=tests,
        transfer=transfer,
        summary=_summary_table(control, groups),
        verdicts=verdicts,
        statistics=statistics,
    )


def _primary_rows(decisions: list[Decision]) -> dict[tuple[str, str, float, str], dict[str, Any]]:
    """The primary tests by (comparison, condition, α, metric); H2 by each of its comparisons."""
    primary: dict[tuple[str, str, float, str], dict[str, Any]] = {}
    for d in decisions:
        for h, row in d.tests.items():
            if h != "H2":
                primary[(row["comparison"], d.condition, d.alpha, row["metric"])] = row
        for c in d.h2_components:
            primary[(c["comparison"], d.condition, d.alpha, "agreement")] = c
    return primary


def _tests_table(
    groups: dict[_Key, pd.DataFrame],
    control: pd.DataFrame,
    reg_at: dict[float, list[str]],
    primary: dict[tuple[str, str, float, str], dict[str, Any]],
    design: Design,
) -> pd.DataFrame:
    """tests.csv: every group against SIDDO and, if judged, against each regularisation control."""
    kinds = [design.primary_paired] + ([not design.primary_paired] if design.paired else [])
    rows: list[dict[str, Any]] = []
    for (cond, alpha), g in groups.items():
        opponents: list[tuple[str, pd.DataFrame]] = [(CONTROL, control)]
        if not is_regularisation_control(cond):
            opponents += [(r, groups[(r, alpha)]) for r in sorted(reg_at.get(alpha, []))]
        for kind in kinds:
            for opponent, b in opponents:
                rows += _comparison_rows((cond, alpha), g, opponent, b, kind, primary, design)
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
    return tests.astype({"n_a": "int64", "n_b": "int64", "significant": "bool"})


def _comparison_rows(
    key: _Key,
    g: pd.DataFrame,
    opponent: str,
    b: pd.DataFrame,
    paired: bool,
    primary: dict[tuple[str, str, float, str], dict[str, Any]],
    design: Design,
) -> list[dict[str, Any]]:
    """The rows of one comparison of group ``key`` with ``opponent``: one per tested metric."""
    cond, alpha = key
    comparison = f"vs_{opponent}{'_paired' if paired else ''}"
    in_primary = paired == design.primary_paired
    family = "secondary" if in_primary else ("secondary-paired" if paired else "secondary-unpaired")
    values = {m: (_values(g, m), _values(b, m)) for m in tested_metrics()}
    if opponent == CONTROL and len(b):
        ga, gb = _group(g), _group(b)
        values["asymmetry"] = asymmetry_scores(ga, gb)
        values["asymmetry_points"] = asymmetry_scores(ga, gb, headroom=False)
    rows: list[dict[str, Any]] = []
    for metric, (va, vb) in values.items():
        hit = primary.get((comparison, cond, alpha, metric)) if in_primary else None
        if hit is not None:
            rows.append(_test_row(comparison, cond, alpha, metric, hit, "primary", hit["hypothesis"]))
            continue
        res = compare_groups(
            va,
            vb,
            seeds_a=g["seed"].to_numpy(),
            seeds_b=b["seed"].to_numpy(),
            paired=paired,
            method=design.method,
            bootstrap=design.bootstrap,
            seed=stream_seed(design.seed, f"vs_{opponent}", cond, alpha, metric),
            permutations=design.permutations,
        )
        rows.append(_test_row(comparison, cond, alpha, metric, res, family))
    return rows


def find_test(tests: pd.DataFrame, comparison: str, cond: str, alpha: float, metric: str) -> pd.Series | None:
    hit = tests.loc[
        (tests["comparison"] == comparison)
        & (tests["condition"] == cond)
        & (tests["alpha"] == alpha)
        & (tests["metric"] == metric)
    ]
    return None if hit.empty else hit.iloc[0]


def _transfer_table(
    effects: dict[_Key, dict[str, float]],
    tests: pd.DataFrame,
    decisions: Mapping[_Key, Decision],
    design: Design,
) -> pd.DataFrame:
    """transfer.csv: Δ±, h± and the asymmetry with their tests and verdicts, per group."""
    comparison = f"vs_{CONTROL}{'_paired' if design.primary_paired else ''}"
    rows: list[dict[str, Any]] = []
    for (cond, alpha), eff in effects.items():
        row: dict[str, Any] = {"condition": cond, "alpha": alpha, **eff}
        for key, metric, p_key in _TRANSFER_TESTS:
            r = find_test(tests, comparison, cond, alpha, metric)
            if key in ("asymmetry", "asymmetry_points"):
                row[key] = math.nan if r is None else float(r["mean_diff"])
            if key != "asymmetry_points":
                row[f"{key}_ci_low"] = math.nan if r is None else float(r["ci_low"])
                row[f"{key}_ci_high"] = math.nan if r is None else float(r["ci_high"])
            row[p_key] = math.nan if r is None else float(r["p_value"])
        d = decisions.get((cond, alpha))
        row.update(_transfer_verdicts(cond, d, eff))
        rows.append(row)
    return pd.DataFrame(rows, columns=TRANSFER_COLUMNS)


def _transfer_verdicts(cond: str, d: Decision | None, eff: dict[str, float]) -> dict[str, Any]:
    """The adjusted p and verdicts of a judged group; a regularisation control is described, not judged."""
    if d is None:
        return {
            "p_neg_adjusted": math.nan,
            "p_asymmetry_adjusted": math.nan,
            "negative_transfer": "control",
            "asymmetry_verdict": "control",
            "negative_asymmetric_payoff": "control",
            "verdict": f"{display_name(cond)} is a control: its Δ± describe regularisation without knowledge.",
        }
    return {
        "p_neg_adjusted": d.tests["H3"]["p_adjusted"] if "H3" in d.tests else math.nan,
        "p_asymmetry_adjusted": d.tests["H4"]["p_adjusted"] if "H4" in d.tests else math.nan,
        "negative_transfer": d.verdicts["negative_transfer"],
        "asymmetry_verdict": d.verdicts["asymmetry"],
        "negative_asymmetric_payoff": d.verdicts["negative_asymmetric_payoff"],
        "verdict": payoff_verdict(d, eff),
    }


def _summary_table(control: pd.DataFrame, groups: dict[_Key, pd.DataFrame]) -> pd.DataFrame:
    """summary.csv: per-seed mean and SEM of the summary metrics, SIDDO first."""
    summary_groups: list[tuple[str, float, pd.DataFrame]] = [
        (CONTROL, float(a), g) for a, g in control.groupby("alpha", sort=True, dropna=False)
    ] + [(c, a, g) for (c, a), g in groups.items()]
    rows: list[dict[str, Any]] = []
    for cond, alpha, g in summary_groups:
        row: dict[str, Any] = {"condition": cond, "alpha": alpha, "n": int(len(g))}
        for m in summary_metrics():
            row[f"{m}_mean"], row[f"{m}_sem"] = mean_sem(_values(g, m))
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype({"n": "int64"})
