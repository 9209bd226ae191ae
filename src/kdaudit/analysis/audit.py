"""Audit tables from per-run metrics: tests.csv, transfer.csv, summary and verdicts (PROTOCOL §4–6).

:func:`build_audit_tables` takes the runs table (one row per trained model, PROTOCOL §6) and
returns :class:`AuditTables`:

- ``tests`` (:data:`TESTS_COLUMNS`): for every distillation condition X other than ``siddo``,
  every α of X and every per-student metric of :data:`TEST_METRICS`, a two-sided Mann–Whitney
  test of X's per-seed values at α against all ``siddo`` students (comparison ``vs_siddo``);
  for conditions that are not random controls (names not starting with ``rcd``) also against
  each RCD condition at the same α (``vs_<rcd name>``). With ``paired=True`` each comparison is
  repeated as a Wilcoxon signed-rank test on the students matched by seed (suffix
  ``_paired``; duplicate seeds within a group are averaged). The multiple-comparison family
  is **every row of tests.csv** (NaN p-values excluded); ``significant`` is
  ``p_adjusted < level`` (``p_adjusted`` equals ``p_value`` for correction ``none``).
- ``transfer`` (:data:`TRANSFER_COLUMNS`): Δ±, h±, raw Mann–Whitney p± and the negative
  asymmetric payoff per (non-siddo condition, α) — see :mod:`kdaudit.analysis.transfer`.
- ``summary`` (:data:`SUMMARY_COLUMNS`): per-seed means and SEMs per student group, ``siddo``
  first, then the other conditions sorted by name and α.
- ``verdicts``: one :class:`Verdict` per distillation condition (neither ``siddo`` nor RCD)
  and α, with plain-word sentences.

Degenerate inputs (one seed, no ``siddo`` students, NaN metrics) give NaN p-values and
"not testable" verdicts, never an exception; missing required columns raise
:class:`~kdaudit.errors.InputError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .stats import (
    CORRECTIONS,
    TestResult,
    adjust_pvalues,
    compression_bar,
    mann_whitney,
    mean_sem,
    wilcoxon_paired,
)
from .transfer import format_p, payoff_label, payoff_sentence, transfer_payoff

RUNS_COLUMNS = [
    "run_id", "role", "condition", "alpha", "temperature", "seed", "accuracy", "loss",
    "activation_distance", "js_divergence", "prediction_disagreement", "agreement",
    "logit_cosine", "rank_disagreement", "agreement_teacher_correct", "agreement_teacher_wrong",
    "n_teacher_correct", "n_teacher_wrong",
]
TESTS_COLUMNS = [
    "comparison", "condition", "alpha", "metric", "n_a", "n_b", "mean_a", "sem_a", "mean_b",
    "sem_b", "statistic", "p_value", "p_adjusted", "effect_size", "significant",
]

CONTROL = "siddo"
"""The name of the control condition (Same Initialisation, Different Data Order)."""

TEST_METRICS = [
    "accuracy", "loss", "activation_distance", "js_divergence", "prediction_disagreement",
    "agreement", "logit_cosine", "rank_disagreement", "agreement_teacher_correct",
    "agreement_teacher_wrong",
]
"""The per-student metrics tested in tests.csv (columns of runs.csv)."""

REQUIRED_COLUMNS = ["role", "condition", "alpha", "seed", *TEST_METRICS]
"""Columns :func:`build_audit_tables` needs; the other RUNS_COLUMNS are optional."""

TRANSFER_COLUMNS = [
    "condition", "alpha", "delta_pos", "delta_neg", "h_pos", "h_neg", "p_pos", "p_neg",
    "negative_asymmetric_payoff", "verdict",
]
SUMMARY_METRICS = [
    "accuracy", "agreement", "js_divergence", "activation_distance",
    "agreement_teacher_correct", "agreement_teacher_wrong",
]
SUMMARY_COLUMNS = ["condition", "alpha", "n"] + [
    f"{m}_{stat}" for m in SUMMARY_METRICS for stat in ("mean", "sem")
]


@dataclass
class Verdict:
    """The plain-word answer for one distillation condition at one α."""

    condition: str
    alpha: float
    knowledge_transfer: str  # "yes" | "no" | "not testable"
    beyond_regularisation: str  # "yes" | "no" | "not testable"
    negative_asymmetric_payoff: str  # "yes" | "no" | "not testable"
    compression: str  # "yes" | "no" | "not testable"
    sentences: list[str] = field(default_factory=list)


@dataclass
class AuditTables:
    runs: pd.DataFrame
    tests: pd.DataFrame
    transfer: pd.DataFrame
    summary: pd.DataFrame
    verdicts: list[Verdict]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def is_rcd(condition: str) -> bool:
    """True for a Random Control Distillation condition (name starting with ``rcd``)."""
    return str(condition).lower().startswith("rcd")


def display_name(condition: str) -> str:
    """A condition's name for sentences: ``KD``, ``SIDDO``, ``RCD-uniform``; others unchanged."""
    c = str(condition)
    low = c.lower()
    if low in ("kd", "siddo"):
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


def _p_text(p: float, p_adj: float, correction: str) -> str:
    text = f"Mann–Whitney p = {format_p(p)}"
    if correction != "none":
        text += f", {correction}-adjusted {format_p(p_adj)}"
    return text


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


def _paired_values(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``metric`` for the seeds present in both groups (duplicates averaged)."""
    sa = a.groupby("seed")[metric].mean()
    sb = b.groupby("seed")[metric].mean()
    common = sa.index.intersection(sb.index).sort_values()
    return sa.loc[common].to_numpy(np.float64), sb.loc[common].to_numpy(np.float64)


def _test_row(comparison: str, condition: str, alpha: float, metric: str, r: TestResult) -> dict[str, Any]:
    return {
        "comparison": comparison, "condition": condition, "alpha": alpha, "metric": metric,
        "n_a": r.n_a, "n_b": r.n_b, "mean_a": r.mean_a, "sem_a": r.sem_a, "mean_b": r.mean_b,
        "sem_b": r.sem_b, "statistic": r.statistic, "p_value": r.p_value,
        "p_adjusted": math.nan, "effect_size": r.effect_size, "significant": False,
    }


def _outcome(row: pd.Series | None) -> str:
    """yes / no / not testable for 'X is significantly higher than b' from a tests row."""
    if row is None or not math.isfinite(row["p_adjusted"]):
        return "not testable"
    return "yes" if (bool(row["significant"]) and row["mean_a"] > row["mean_b"]) else "no"


# ---------------------------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------------------------


def build_audit_tables(
    runs: pd.DataFrame, level: float = 0.05, correction: str = "holm", paired: bool = False
) -> AuditTables:
    """Build tests, transfer, summary and verdicts from the runs table (see the module doc).

    ``level`` is the significance level, ``correction`` one of ``none``, ``holm``, ``bh``
    (family: all rows of tests.csv), ``paired`` adds Wilcoxon signed-rank rows matched by seed.
    """
    if correction not in CORRECTIONS:
        raise InputError(f"unknown correction {correction!r} (choose one of {', '.join(CORRECTIONS)})")
    if not (0.0 < level < 1.0):
        raise InputError(f"significance level must lie in (0, 1), got {level}")
    students = _prepare(runs)
    control = students.loc[students["condition"] == CONTROL]
    others = students.loc[students["condition"] != CONTROL]
    groups: dict[tuple[str, float], pd.DataFrame] = {
        (str(c), float(a)): g
        for (c, a), g in others.groupby(["condition", "alpha"], sort=True)
    }
    rcd_at: dict[float, list[str]] = {}
    for cond, alpha in groups:
        if is_rcd(cond):
            rcd_at.setdefault(alpha, []).append(cond)

    # tests.csv -------------------------------------------------------------------------------
    rows: list[dict[str, Any]] = []
    results: dict[tuple[str, str, float, str], TestResult] = {}
    for (cond, alpha), g in groups.items():
        opponents: list[tuple[str, pd.DataFrame]] = [(f"vs_{CONTROL}", control)]
        if not is_rcd(cond):
            opponents += [(f"vs_{r}", groups[(r, alpha)]) for r in sorted(rcd_at.get(alpha, []))]
        for comparison, b in opponents:
            for metric in TEST_METRICS:
                res = mann_whitney(_values(g, metric), _values(b, metric))
                results[(comparison, cond, alpha, metric)] = res
                rows.append(_test_row(comparison, cond, alpha, metric, res))
        if paired:
            for comparison, b in opponents:
                for metric in TEST_METRICS:
                    res = wilcoxon_paired(*_paired_values(g, b, metric))
                    results[(comparison + "_paired", cond, alpha, metric)] = res
                    rows.append(_test_row(comparison + "_paired", cond, alpha, metric, res))
    tests = pd.DataFrame(rows, columns=TESTS_COLUMNS)
    if len(tests):
        tests["p_adjusted"] = adjust_pvalues(tests["p_value"].to_numpy(np.float64), correction)
        tests["significant"] = (tests["p_adjusted"] < level).astype(bool)
    tests = tests.astype({"n_a": "int64", "n_b": "int64", "significant": "bool"})

    def row_of(comparison: str, cond: str, alpha: float, metric: str) -> pd.Series | None:
        hit = tests.loc[
            (tests["comparison"] == comparison) & (tests["condition"] == cond)
            & (tests["alpha"] == alpha) & (tests["metric"] == metric)
        ]
        return None if hit.empty else hit.iloc[0]

    # transfer.csv ----------------------------------------------------------------------------
    transfer_rows: list[dict[str, Any]] = []
    transfer_results: dict[tuple[str, float], dict[str, Any]] = {}
    for (cond, alpha), g in groups.items():
        tr = transfer_payoff(
            _values(g, "agreement_teacher_correct"), _values(g, "agreement_teacher_wrong"),
            _values(control, "agreement_teacher_correct"), _values(control, "agreement_teacher_wrong"),
            level=level,
        )
        transfer_results[(cond, alpha)] = tr
        sentence = f"At α = {_fmt_alpha(alpha)}, " + _lower_first(
            payoff_sentence(display_name(cond), display_name(CONTROL), tr, level)
        )
        transfer_rows.append({
            "condition": cond, "alpha": alpha,
            **{k: tr[k] for k in ("delta_pos", "delta_neg", "h_pos", "h_neg", "p_pos", "p_neg")},
            "negative_asymmetric_payoff": payoff_label(tr["negative_asymmetric_payoff"]),
            "verdict": sentence,
        })
    transfer = pd.DataFrame(transfer_rows, columns=TRANSFER_COLUMNS)

    # summary ---------------------------------------------------------------------------------
    summary_rows: list[dict[str, Any]] = []
    summary_groups: list[tuple[str, float, pd.DataFrame]] = [
        (CONTROL, float(a), g) for a, g in control.groupby("alpha", sort=True, dropna=False)
    ] + [(c, a, g) for (c, a), g in groups.items()]
    for cond, alpha, g in summary_groups:
        row: dict[str, Any] = {"condition": cond, "alpha": alpha, "n": int(len(g))}
        for m in SUMMARY_METRICS:
            row[f"{m}_mean"], row[f"{m}_sem"] = mean_sem(_values(g, m))
        summary_rows.append(row)
    summary = pd.DataFrame(summary_rows, columns=SUMMARY_COLUMNS).astype({"n": "int64"})

    # verdicts --------------------------------------------------------------------------------
    verdicts: list[Verdict] = []
    for (cond, alpha), g in groups.items():
        if is_rcd(cond):
            continue
        verdicts.append(
            _verdict(cond, alpha, g, control, groups, rcd_at.get(alpha, []), row_of, results,
                     transfer_results[(cond, alpha)], level, correction)
        )

    return AuditTables(
        runs=runs.copy(), tests=tests, transfer=transfer, summary=summary, verdicts=verdicts
    )


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text else text


def _verdict(
    cond: str,
    alpha: float,
    g: pd.DataFrame,
    control: pd.DataFrame,
    groups: dict[tuple[str, float], pd.DataFrame],
    rcds: list[str],
    row_of: Any,
    results: dict[tuple[str, str, float, str], TestResult],
    transfer: dict[str, Any],
    level: float,
    correction: str,
) -> Verdict:
    name = display_name(cond)
    at = f"At α = {_fmt_alpha(alpha)}"
    sentences: list[str] = []

    # knowledge transfer: agreement, X vs SIDDO
    row = row_of(f"vs_{CONTROL}", cond, alpha, "agreement")
    kt = _outcome(row)
    res = results.get((f"vs_{CONTROL}", cond, alpha, "agreement"))
    mx, sx = mean_sem(_values(g, "agreement"))
    mc, sc = mean_sem(_values(control, "agreement"))
    head = (
        f"{at}, {name} students agree with the teacher on {_pct(mx, sx)} of test samples vs "
        f"{_pct(mc, sc)} for {display_name(CONTROL)}"
    )
    if kt == "not testable":
        if not np.isfinite(_values(control, "agreement")).any():
            sentences.append(
                f"{at}, {name} students agree with the teacher on {_pct(mx, sx)} of test samples; "
                f"there are no {display_name(CONTROL)} students to compare with: "
                "knowledge transfer not testable."
            )
        else:
            reason = res.reason if res is not None and res.reason else "no test"
            sentences.append(f"{head}: knowledge transfer not testable, {reason}.")
    else:
        ptxt = _p_text(row["p_value"], row["p_adjusted"], correction)
        if kt == "yes":
            sentences.append(f"{head} ({ptxt}): significant knowledge transfer.")
        elif row["significant"] and row["mean_a"] < row["mean_b"]:
            sentences.append(
                f"{head} ({ptxt}): significantly lower agreement than "
                f"{display_name(CONTROL)}, no knowledge transfer."
            )
        else:
            sentences.append(f"{head} ({ptxt}): no significant knowledge transfer.")

    # beyond regularisation: agreement, X vs the better RCD at this α
    if not rcds:
        br = "not testable"
        sentences.append(
            f"{at}, beyond regularisation is not testable: no random-control (RCD) students at this α."
        )
    else:
        means = {r: mean_sem(_values(groups[(r, alpha)], "agreement")) for r in rcds}
        finite = [r for r in rcds if math.isfinite(means[r][0])]
        best = max(finite, key=lambda r: means[r][0]) if finite else sorted(rcds)[0]
        row_b = row_of(f"vs_{best}", cond, alpha, "agreement")
        br = _outcome(row_b)
        res_b = results.get((f"vs_{best}", cond, alpha, "agreement"))
        head_b = (
            f"{at}, against the better random control {display_name(best)} "
            f"({_pct(*means[best])}), {name} agreement is {_pct(mx, sx)}"
        )
        if br == "not testable":
            reason = res_b.reason if res_b is not None and res_b.reason else "no test"
            sentences.append(f"{head_b}: beyond regularisation not testable, {reason}.")
        else:
            ptxt = _p_text(row_b["p_value"], row_b["p_adjusted"], correction)
            if br == "yes":
                sentences.append(f"{head_b} ({ptxt}): transfer beyond regularisation.")
            else:
                sentences.append(
                    f"{head_b} ({ptxt}): not significantly above the random control, "
                    "so no evidence of transfer beyond regularisation."
                )

    # negative asymmetric payoff
    nap = payoff_label(transfer["negative_asymmetric_payoff"])
    sentences.append(
        f"{at}, " + _lower_first(payoff_sentence(name, display_name(CONTROL), transfer, level))
    )

    # compression bar
    bar = compression_bar(
        _values(g, "agreement"), _values(g, "js_divergence"), _values(g, "activation_distance")
    )
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

    return Verdict(
        condition=cond, alpha=alpha, knowledge_transfer=kt, beyond_regularisation=br,
        negative_asymmetric_payoff=nap, compression=comp, sentences=sentences,
    )
