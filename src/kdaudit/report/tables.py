"""The tables of the audit report, built from :class:`~kdaudit.analysis.audit.AuditTables`:
summary (mean ± SEM), transfer (Δ±, h±, p), fidelity to the teacher (the 0.95 bar, every group),
the significance tests by family and comparison, and the security summary. Cells are formatted
text; rows follow the display order of the conditions, then α.

One unit per quantity: shares (accuracy, agreement) in %, their differences (Δ±) in
percentage points, h± and the other scores as they are (0–1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from kdaudit.analysis import catalogue
from kdaudit.analysis.stats import compression_bar
from kdaudit.analysis.verdicts import FIDELITY_BAR
from kdaudit.report.document import Table
from kdaudit.report.figures import condition_order
from kdaudit.report.formatting import (
    DASH,
    fmt_alpha,
    fmt_effect,
    fmt_int,
    fmt_mean_sem,
    fmt_num,
    fmt_p,
    fmt_pct,
    fmt_pct_sem,
    fmt_points,
    fmt_signed,
    fmt_stat,
    missing,
    truthy,
)
from kdaudit.report.prose import comparison_label

__all__ = [
    "SUMMARY_METRICS",
    "fidelity_table",
    "security_table",
    "summary_table",
    "tests_tables",
    "transfer_table",
]

#: Metrics of the summary table, in column order: (summary column stem, header).
SUMMARY_METRICS: tuple[tuple[str, str], ...] = tuple((m, catalogue.heading(m)) for m in catalogue.summary_metrics())

_HYPOTHESIS_LABELS = {
    "H1": "H1 transfer",
    "H2": "H2 beyond regularisation",
    "H3": "H3 negative transfer",
    "H4": "H4 asymmetry",
}

_TRANSFER_HEADERS = [
    "Condition",
    "α",
    "Δ+ (points)",
    "Δ− (points)",
    "h+",
    "h−",
    "h− − h+ [95 % CI]",
    "Δ− − Δ+ (points)",
    "p (Δ−) adjusted",
    "p (h− − h+) adjusted",
    "Negative asymmetric payoff",
    "Verdict",
]
_DECIDING_COLUMN = {"kdaudit": 6, "paper": 7}
"""The transfer table's column of the reading that decides the payoff, by standard."""

_TEST_HEADERS = [
    "n",
    "n ref.",
    "Mean ± SEM",
    "Reference mean ± SEM",
    "Difference [95 % CI]",
    "Statistic",
    "p",
    "p adjusted",
    "Effect size r",
    "Significant",
]


def _percent(m: Any) -> bool:
    """True for a metric shown in % (a share; its differences in points)."""
    name = str(m)
    if name == "asymmetry_points":
        return True
    try:
        return catalogue.metric(name).unit == "fraction"
    except KeyError:
        return False


def _metric_name(m: Any) -> str:
    if str(m) == "asymmetry":
        return "asymmetry h− − h+"
    if str(m) == "asymmetry_points":
        return "asymmetry Δ− − Δ+ (%)"
    return catalogue.short(str(m)) + (" (%)" if _percent(m) else "")


def _sorted_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Rows by condition (display order), then α, then as they were."""
    if df is None or len(df) == 0 or "condition" not in df.columns:
        return df
    order = {c: i for i, c in enumerate(condition_order(df["condition"].astype(str)))}
    alpha = pd.to_numeric(df["alpha"], errors="coerce") if "alpha" in df.columns else 0.0
    key = pd.DataFrame(
        {
            "_c": df["condition"].astype(str).map(order),
            "_a": alpha,
            "_i": np.arange(len(df)),
        },
        index=df.index,
    )
    return df.loc[key.sort_values(["_c", "_a", "_i"], na_position="last").index]


def summary_table(summary: pd.DataFrame | None) -> Table | None:
    """Mean ± SEM of each summary metric per student group; None without a summary."""
    if summary is None or len(summary) == 0:
        return None
    summary = _sorted_frame(summary)
    metrics = [(m, h) for m, h in SUMMARY_METRICS if f"{m}_mean" in summary.columns]
    headers = ["Condition", "α", "n"] + [h + (" (%)" if _percent(m) else "") for m, h in metrics]
    numeric = [False, True, True] + [True] * len(metrics)
    rows = []
    for _, r in summary.iterrows():
        row = [str(r.get("condition", "")), fmt_alpha(r.get("alpha")), fmt_int(r.get("n"))]
        fmt = {True: fmt_pct_sem, False: fmt_mean_sem}
        row += [fmt[_percent(m)](r.get(f"{m}_mean"), r.get(f"{m}_sem")) for m, _ in metrics]
        rows.append(row)
    return Table(headers, numeric, rows, [False] * len(rows))


def _asymmetry_cell(r: pd.Series) -> str:
    asym = DASH if missing(r.get("asymmetry")) else fmt_signed(r.get("asymmetry"), 3)
    if not missing(r.get("asymmetry_ci_low")) and not missing(r.get("asymmetry_ci_high")):
        asym += f" [{fmt_signed(r.get('asymmetry_ci_low'), 3)}, {fmt_signed(r.get('asymmetry_ci_high'), 3)}]"
    return asym


def _points_asymmetry(r: pd.Series) -> Any:
    """Δ− − Δ+: the transfer table's own column, else from Δ±."""
    if not missing(r.get("asymmetry_points")):
        return r.get("asymmetry_points")
    neg, pos = r.get("delta_neg"), r.get("delta_pos")
    return DASH if missing(neg) or missing(pos) else float(neg) - float(pos)


def transfer_table(transfer: pd.DataFrame | None, standard: str = "kdaudit") -> Table | None:
    """Δ± (points), h±, the asymmetry and its tests per condition and α; the header of the reading
    that decides the payoff under ``standard`` is marked ★, and a negative asymmetric payoff
    highlights its row. None without a transfer table."""
    if transfer is None or len(transfer) == 0:
        return None
    transfer = _sorted_frame(transfer)
    numeric = [False] + [True] * 9 + [False, False]
    headers = list(_TRANSFER_HEADERS)
    deciding = _DECIDING_COLUMN.get(standard, _DECIDING_COLUMN["kdaudit"])
    headers[deciding] = "★ " + headers[deciding]
    rows, hl = [], []
    for _, r in transfer.iterrows():
        payoff = r.get("negative_asymmetric_payoff")
        rows.append(
            [
                str(r.get("condition", "")),
                fmt_alpha(r.get("alpha")),
                fmt_points(r.get("delta_pos")),
                fmt_points(r.get("delta_neg")),
                fmt_signed(r.get("h_pos"), 3),
                fmt_signed(r.get("h_neg"), 3),
                _asymmetry_cell(r),
                fmt_points(_points_asymmetry(r)),
                fmt_p(r.get("p_neg_adjusted")),
                fmt_p(r.get("p_asymmetry_adjusted")),
                DASH if missing(payoff) else str(payoff),
                "" if missing(r.get("verdict")) else str(r.get("verdict")),
            ]
        )
        hl.append(str(payoff).strip().lower() == "yes")
    return Table(headers, numeric, rows, hl, badge_cols=(10,))


def fidelity_table(summary: pd.DataFrame | None) -> Table | None:
    """Every group's fidelity to the teacher against the predecessor paper's 0.95 bar, SIDDO
    first: mean agreement (%), 1 − JS/ln 2, 1 − AD/√2 and whether it clears the bar. None without
    the three means."""
    cols = ("agreement_mean", "js_divergence_mean", "activation_distance_mean")
    if summary is None or len(summary) == 0 or not set(cols) <= set(summary.columns):
        return None
    headers = [
        "Condition",
        "α",
        f"Agreement (%) ≥ {100 * FIDELITY_BAR:g}",
        f"1 − JS/ln 2 ≥ {FIDELITY_BAR:g}",
        f"1 − AD/√2 ≥ {FIDELITY_BAR:g}",
        "Clears the bar",
    ]
    rows, hl = [], []
    for _, r in _sorted_frame(summary).iterrows():
        bar = compression_bar([r[cols[0]]], [r[cols[1]]], [r[cols[2]]], FIDELITY_BAR)
        answer = "not testable" if not bar["testable"] else ("yes" if bar["compresses"] else "no")
        cells = [fmt_pct(bar["agreement_score"]), fmt_num(bar["js_score"], 3), fmt_num(bar["ad_score"], 3)]
        rows.append([str(r.get("condition", "")), fmt_alpha(r.get("alpha")), *cells, answer])
        hl.append(answer == "yes")
    return Table(headers, [False, True, True, True, True, False], rows, hl)


def _test_cells(r: pd.Series) -> list[str]:
    pct = _percent(r.get("metric", ""))
    mean_sem, diff_fmt = (fmt_pct_sem, fmt_points) if pct else (fmt_mean_sem, lambda x: fmt_signed(x, 4))
    ci_fmt = fmt_points if pct else fmt_num
    diff = r.get("mean_diff")
    ci = ""
    if not missing(r.get("ci_low")) and not missing(r.get("ci_high")):
        ci = f" [{ci_fmt(r.get('ci_low'))}, {ci_fmt(r.get('ci_high'))}]"
    return [
        fmt_int(r.get("n_a")),
        fmt_int(r.get("n_b")),
        mean_sem(r.get("mean_a"), r.get("sem_a")),
        mean_sem(r.get("mean_b"), r.get("sem_b")),
        (DASH if missing(diff) else diff_fmt(diff)) + ci,
        fmt_stat(r.get("statistic")),
        fmt_p(r.get("p_value")),
        fmt_p(r.get("p_adjusted")),
        fmt_effect(r.get("effect_size")),
        "yes" if truthy(r.get("significant")) else "no",
    ]


def _primary_table(primary: pd.DataFrame) -> Table:
    """The primary tests, by hypothesis and α."""
    headers = ["Hypothesis", "Condition", "α", "Compared with", "Metric"] + _TEST_HEADERS
    numeric = [False, False, True, False, False] + [True] * 9 + [False]
    rows, hl = [], []
    order = primary.assign(_h=primary["hypothesis"].astype(str)).sort_values(["_h", "alpha"], kind="stable")
    for _, r in order.iterrows():
        comp = str(r.get("comparison", ""))
        rows.append(
            [
                _HYPOTHESIS_LABELS.get(str(r.get("hypothesis")), str(r.get("hypothesis"))),
                str(r.get("condition", "")),
                fmt_alpha(r.get("alpha")),
                comp[3:] if comp.startswith("vs_") else comp,
                _metric_name(r.get("metric", "")),
            ]
            + _test_cells(r)
        )
        hl.append(truthy(r.get("significant")))
    return Table(headers, numeric, rows, hl)


def _comparison_table(tests: pd.DataFrame) -> Table:
    """The tests of one comparison, in their order."""
    headers = ["Condition", "α", "Metric"] + _TEST_HEADERS
    numeric = [False, True, False] + [True] * 9 + [False]
    rows, hl = [], []
    for _, r in tests.iterrows():
        rows.append(
            [str(r.get("condition", "")), fmt_alpha(r.get("alpha")), _metric_name(r.get("metric", ""))] + _test_cells(r)
        )
        hl.append(truthy(r.get("significant")))
    return Table(headers, numeric, rows, hl)


def tests_tables(tests: pd.DataFrame | None) -> list[tuple[str, Table, bool]]:
    """(label, table, primary) per table: the primary family first, then every other family by
    comparison (exploratory where secondary)."""
    if tests is None or len(tests) == 0:
        return []
    out: list[tuple[str, Table, bool]] = []
    family = tests["family"].astype(str) if "family" in tests.columns else pd.Series("", index=tests.index)
    primary = tests[family == "primary"]
    if len(primary):
        out.append(("Primary tests: the verdicts (one family, corrected together)", _primary_table(primary), True))
    rest = tests[family != "primary"]
    comps = list(dict.fromkeys(rest["comparison"].astype(str))) if "comparison" in rest.columns else [""]
    for comp in comps:
        sub = rest[rest["comparison"].astype(str) == comp] if comp else rest
        if not len(sub):
            continue
        fam = str(sub["family"].iloc[0]) if "family" in sub.columns else ""
        label = comparison_label(comp) if comp else "All tests"
        if fam.startswith("secondary"):
            label += " — exploratory"
        out.append((label, _comparison_table(sub), False))
    return out


def security_table(security: Any) -> Table | None:
    """Mean ± SEM of every security metric per group (teacher first)."""
    summary = getattr(security, "summary", None)
    if summary is None or len(summary) == 0:
        return None
    metrics = [c[:-5] for c in summary.columns if c.endswith("_mean")]
    headers = ["condition", "α", "n"] + metrics
    rows = []
    for _, r in summary.iterrows():
        rows.append(
            [str(r["condition"]), fmt_alpha(r["alpha"]) if r["condition"] != "teacher" else "—", fmt_int(r["n"])]
            + [fmt_mean_sem(r[f"{m}_mean"], r[f"{m}_sem"]) for m in metrics]
        )
    return Table(
        headers=headers, numeric=[False, True, True] + [True] * len(metrics), rows=rows, highlight=[False] * len(rows)
    )
