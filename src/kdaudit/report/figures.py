"""Figures of an audit (PROTOCOL §6): PNGs (and SVGs) written into ``out_dir/figures/``.

Every function here is pure apart from the file it writes: it builds a
:class:`matplotlib.figure.Figure` on its own :class:`FigureCanvasAgg`, so neither pyplot nor the
global backend is touched, and writes it atomically (:mod:`kdaudit.report.plotting`). All
functions are robust to NaN values, to a condition with a single seed and to missing
conditions: what cannot be drawn is left out, never an exception.

Figures
-------
- ``dist_<metric>.png`` (:func:`plot_metric_distributions`): the per-seed values of one metric,
  one box + jittered points per (condition, α), for ``agreement``, ``js_divergence``,
  ``activation_distance``, ``accuracy``, ``agreement_teacher_correct`` and
  ``agreement_teacher_wrong``.
- ``transfer_deltas.png`` (:func:`plot_transfer`): Δ+ (agreement where the teacher is right) and
  Δ− (agreement where the teacher is wrong), each relative to the SIDDO control in percentage
  points, per condition and α, next to h± (the same as shares of the headroom SIDDO left), with
  the reading that decides the negative asymmetric payoff marked. Error bars are the standard
  error of the difference of two independent means, ``SEM(Δ) = sqrt(SEM_X² + SEM_siddo²)``, with
  ``SEM = std(ddof=1) / sqrt(n)`` over the seeds in ``runs`` (a group with fewer than two finite
  values has no error bar).

Shares (agreement, accuracy) are drawn in %. Every PNG has an SVG beside it.
- ``accuracy_vs_agreement.png`` (:func:`plot_accuracy_vs_agreement`): each student's test
  accuracy against its agreement with the teacher, coloured by condition, marker by α; the
  teacher's accuracy is a dashed line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes

from kdaudit.analysis import catalogue
from kdaudit.report.plotting import (
    ALPHA_MARKERS,
    CONDITION_ORDER,
    NEG_COLOUR,
    POS_COLOUR,
    alpha_key,
    alpha_text,
    condition_colours,
    condition_order,
    figure_dir,
    finite_mean,
    finite_values,
    group_keys,
    label_text,
    new_figure,
    new_panels,
    save_png,
    select_group,
    sem,
    student_rows,
    teacher_value,
)

if TYPE_CHECKING:  # pragma: no cover
    from kdaudit.analysis.audit import AuditTables

__all__ = [
    "DIST_METRICS",
    "CONDITION_ORDER",
    "condition_order",
    "sem",
    "figure_dir",
    "plot_metric_distributions",
    "plot_transfer",
    "transfer_deltas",
    "plot_accuracy_vs_agreement",
    "write_figures",
]

#: Metrics that get a per-seed distribution figure, in this order.
DIST_METRICS: tuple[str, ...] = tuple(catalogue.figure_metrics())


def _scale(metric: str) -> float:
    """100 for a metric that is a share (shown in %), else 1."""
    try:
        return 100.0 if catalogue.metric(metric).unit == "fraction" else 1.0
    except KeyError:
        return 1.0


# --------------------------------------------------------------------------------------------
# (a) per-metric distributions
# --------------------------------------------------------------------------------------------
def plot_metric_distributions(
    runs: pd.DataFrame,
    out_dir: Path | str,
    metrics: Sequence[str] = DIST_METRICS,
    *,
    seed: int = 0,
) -> list[Path]:
    """One PNG per metric (``figures/dist_<metric>.png``): box + per-seed points per (condition, α).

    Groups are ordered siddo first, then by α and condition. A metric that is absent from
    ``runs`` or has no finite student value is skipped. The teacher's accuracy is drawn as a
    dashed reference line on the accuracy plot. ``seed`` only fixes the horizontal jitter.
    """
    students = student_rows(runs)
    fdir = figure_dir(out_dir)
    groups = group_keys(students)
    colours = condition_colours(condition_order(c for c, _ in groups))
    # x layout: one block per α (SIDDO first), one slot per condition in the block
    blocks: list[tuple[str, list[tuple[str, float, float]]]] = []
    x = 0.0
    for cond, alpha in groups:
        label = "SIDDO (α=0)" if cond == "siddo" else f"α = {alpha_text(alpha)}"
        if not blocks or blocks[-1][0] != label:
            if blocks:
                x += 0.7  # gap between blocks
            blocks.append((label, []))
        blocks[-1][1].append((cond, alpha, x))
        x += 1.0
    written: list[Path] = []
    for metric in metrics:
        if metric not in students.columns or finite_values(students[metric]).size == 0:
            continue
        rng = np.random.default_rng(seed)
        scale = _scale(metric)
        fig, ax = new_figure(max(6.5, 2.6 + 0.62 * len(groups)), 4.0)
        shown: dict[str, Artist] = {}
        for _, members in blocks:
            for cond, alpha, xpos in members:
                vals = scale * finite_values(select_group(students, cond, alpha)[metric])
                colour = colours[cond]
                if vals.size >= 2:
                    ax.boxplot(
                        [vals],
                        positions=[xpos],
                        widths=0.6,
                        showfliers=False,
                        patch_artist=True,
                        medianprops={"color": colour, "linewidth": 1.6},
                        boxprops={"facecolor": colour + "22", "edgecolor": colour, "linewidth": 1.1},
                        whiskerprops={"color": colour, "linewidth": 1.0},
                        capprops={"color": colour, "linewidth": 1.0},
                        manage_ticks=False,
                    )
                if vals.size:
                    jitter = rng.uniform(-0.14, 0.14, size=vals.size) if vals.size > 1 else np.zeros(1)
                    handle = ax.scatter(
                        xpos + jitter, vals, s=24, color=colour, edgecolors="white", linewidths=0.6, zorder=3
                    )
                    shown.setdefault(cond, handle)
                else:
                    ax.text(
                        xpos,
                        0.5,
                        "no data",
                        rotation=90,
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="#9aa1ab",
                        transform=ax.get_xaxis_transform(),
                    )
        centres = [float(np.mean([m[2] for m in members])) for _, members in blocks]
        if centres:
            ax.set_xticks(centres)
            ax.set_xticklabels([b[0] for b in blocks], fontsize=9)
            ax.tick_params(axis="x", length=0)
            ax.set_xlim(-0.7, x - 1.0 + 0.7)
        if metric == "accuracy":
            t_acc = scale * teacher_value(runs, "accuracy")
            if math.isfinite(t_acc):
                ax.axhline(t_acc, color="#111827", linestyle="--", linewidth=1.0, zorder=1)
                ax.annotate(
                    "teacher",
                    xy=(1.0, t_acc),
                    xycoords=("axes fraction", "data"),
                    xytext=(-4, 3),
                    textcoords="offset points",
                    ha="right",
                    fontsize=8,
                    color="#111827",
                )
        order = [c for c in condition_order(shown) if c in shown]
        if order:
            ax.legend(
                [shown[c] for c in order],
                [label_text(c, 28) for c in order],
                frameon=False,
                fontsize=8.5,
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                title="condition",
                title_fontsize=8.5,
                handletextpad=0.3,
            )
        label = catalogue.label(metric) + (" (%)" if scale != 1.0 else "")
        ax.set_ylabel(label_text(label, 60), fontsize=9.5, color="#1f2937")
        ax.set_title(label_text(label, 60) + " — per seed", fontsize=11, color="#111827", loc="left", pad=10)
        path = save_png(fig, fdir / f"dist_{metric}.png")
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# (b) Δ± and h± against SIDDO
# --------------------------------------------------------------------------------------------
_TRANSFER_COLUMNS = ["condition", "alpha", "delta_pos", "sem_pos", "delta_neg", "sem_neg"]
_H_COLUMNS = ["h_pos", "sem_h_pos", "h_neg", "sem_h_neg"]
_SIDES = (("pos", "agreement_teacher_correct"), ("neg", "agreement_teacher_wrong"))


def _share(value: float, control_mean: float) -> float:
    """``value`` as a share of the headroom the control left (NaN without headroom)."""
    room = 1.0 - control_mean
    return value / room if math.isfinite(room) and room > 0 else math.nan


def transfer_deltas(runs: pd.DataFrame) -> pd.DataFrame:
    """Δ± and h± per (condition, α) against SIDDO with their SEMs, from ``runs`` (fractions).

    Columns: condition, alpha, delta_pos, sem_pos, delta_neg, sem_neg, h_pos, sem_h_pos, h_neg,
    sem_h_neg. ``sem_*`` of Δ is ``sqrt(SEM_X² + SEM_siddo²)`` (independent groups; NaN when
    either has < 2 seeds); h = Δ / (1 − the SIDDO mean) and its SEM the SEM of Δ over the same
    headroom. Empty if ``runs`` has no siddo student.
    """
    cols = _TRANSFER_COLUMNS + _H_COLUMNS
    students = student_rows(runs)
    control = students[students["condition"] == "siddo"] if len(students) else students
    if len(control) == 0:
        return pd.DataFrame(columns=cols)
    stats = {}
    for key, metric in _SIDES:
        vals = control[metric] if metric in control.columns else []
        stats[key] = (finite_mean(vals), sem(vals))
    rows = []
    for cond, alpha in group_keys(students):
        if cond == "siddo":
            continue
        sub = select_group(students, cond, alpha)
        row: dict[str, object] = {"condition": cond, "alpha": alpha}
        for key, metric in _SIDES:
            vals = sub[metric] if metric in sub.columns else []
            c_mean, c_sem = stats[key]
            delta, err = finite_mean(vals) - c_mean, math.sqrt(sem(vals) ** 2 + c_sem**2)
            row |= {f"delta_{key}": delta, f"sem_{key}": err}
            row |= {f"h_{key}": _share(delta, c_mean), f"sem_h_{key}": _share(err, c_mean)}
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _from_transfer(transfer: pd.DataFrame | None) -> pd.DataFrame:
    """Δ± and h± of the transfer table, without error bars (a runs table without SIDDO)."""
    if transfer is None or len(transfer) == 0 or not {"condition", "alpha", "delta_pos", "delta_neg"} <= set(transfer):
        return pd.DataFrame(columns=_TRANSFER_COLUMNS + _H_COLUMNS)

    def col(name: str) -> pd.Series:
        return pd.to_numeric(transfer[name], errors="coerce") if name in transfer else pd.Series(np.nan, transfer.index)

    data = pd.DataFrame(
        {"condition": transfer["condition"].astype(str), "alpha": col("alpha")}
        | {c: col(c) for c in ("delta_pos", "delta_neg", "h_pos", "h_neg")}
        | {c: np.nan for c in ("sem_pos", "sem_neg", "sem_h_pos", "sem_h_neg")}
    )
    return data[data["condition"] != "siddo"]


def _with_verdicts(data: pd.DataFrame, transfer: pd.DataFrame | None) -> pd.DataFrame:
    """``data`` with the transfer table's asymmetry h− − h+ and payoff verdict of each group
    (h− − h+ from the bars where the table has none)."""
    asym = (data["h_neg"] - data["h_pos"]).astype(float)
    payoff = pd.Series("", index=data.index, dtype=object)
    if transfer is not None and len(transfer) and {"condition", "alpha"} <= set(transfer):
        for i, r in data.iterrows():
            hit = transfer[(transfer["condition"].astype(str) == r["condition"])]
            hit = hit[np.isclose(pd.to_numeric(hit["alpha"], errors="coerce"), float(r["alpha"]))]
            if len(hit) and "asymmetry" in hit and math.isfinite(float(hit["asymmetry"].iloc[0])):
                asym[i] = float(hit["asymmetry"].iloc[0])
            if len(hit) and "negative_asymmetric_payoff" in hit:
                payoff[i] = str(hit["negative_asymmetric_payoff"].iloc[0])
    return data.assign(asym=asym, asym_points=data["delta_neg"] - data["delta_pos"], payoff=payoff)


def _bars(ax: Axes, x: np.ndarray, data: pd.DataFrame, value: str, scale: float) -> None:
    """The + and − bars of one quantity (``delta`` or ``h``) per group, with their SEM."""
    w = 0.36
    for offset, side, colour, name in (
        (-w / 2, "pos", POS_COLOUR, "+  teacher right"),
        (w / 2, "neg", NEG_COLOUR, "−  teacher wrong"),
    ):
        err_col = f"sem_{side}" if value == "delta" else f"sem_h_{side}"
        vals = scale * pd.to_numeric(data[f"{value}_{side}"], errors="coerce").to_numpy(float)
        errs = scale * pd.to_numeric(data[err_col], errors="coerce").to_numpy(float)
        heights = np.nan_to_num(vals, nan=0.0)
        symbol = "Δ" if value == "delta" else "h"
        ax.bar(x + offset, heights, width=w, color=colour, alpha=0.85, label=symbol + name, zorder=2)
        has_err = np.isfinite(errs) & np.isfinite(vals)
        if has_err.any():  # no error bar where the SEM is undefined (fewer than two seeds)
            ax.errorbar(
                (x + offset)[has_err],
                heights[has_err],
                yerr=errs[has_err],
                fmt="none",
                ecolor="#1f2937",
                elinewidth=1.0,
                capsize=3,
                zorder=3,
            )
        for xi, v in zip(x + offset, vals, strict=False):
            if not math.isfinite(v):
                ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#6b7280")
    ax.axhline(0.0, color="#374151", linewidth=0.9, zorder=1)


def _mark(ax: Axes, x: np.ndarray, data: pd.DataFrame, standard: str) -> None:
    """Above each judged group (not a control), in bold, the reading that decides the payoff:
    Δ− − Δ+ in points (``paper``) or h− − h+; ★ where the payoff is shown."""
    paper = standard == "paper"
    for xi, (_, r) in zip(x, data.iterrows(), strict=False):
        v = float(r["asym_points"]) * 100 if paper else float(r["asym"])
        payoff = str(r["payoff"]).strip().lower()
        if not math.isfinite(v) or payoff == "control":
            continue
        text = f"{v:+.1f}" if paper else f"{v:+.2f}"
        if payoff == "yes":
            text += " ★"
        ax.annotate(
            text,
            xy=(xi, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7.5,
            fontweight="bold",
            color="#111827",
        )


def plot_transfer(
    runs: pd.DataFrame,
    out_dir: Path | str,
    transfer: pd.DataFrame | None = None,
    standard: str = "kdaudit",
) -> Path | None:
    """``figures/transfer_deltas.png``: Δ± in percentage points (left) and h± (right, shares of
    the headroom SIDDO left, 0–1) per (condition, α), with SEM error bars.

    Δ, h and their SEMs come from ``runs`` (:func:`transfer_deltas`); without a SIDDO student,
    those of ``transfer`` are drawn without error bars. The panel of the reading that decides
    the negative asymmetric payoff under ``standard`` — h− − h+ (``kdaudit``) or Δ− > Δ+ in points
    (``paper``) — is marked with ★ and carries that reading in bold above each group, ★ where
    ``transfer`` shows a payoff. Returns None when there is nothing to draw.
    """
    data = transfer_deltas(runs)
    if len(data) == 0:
        data = _from_transfer(transfer)
    if len(data) == 0:
        return None
    order = {c: i for i, c in enumerate(condition_order(data["condition"]))}
    data = (
        data.assign(_a=data["alpha"].map(alpha_key), _c=data["condition"].map(order))
        .sort_values(["_a", "_c"])
        .reset_index(drop=True)
    )
    data = _with_verdicts(data, transfer)
    stacked = len(data) > 4  # side by side for a few groups, one panel above the other for more
    width = max(6.5, 1.5 + 0.8 * len(data)) if stacked else max(9.0, 3.0 + 1.6 * len(data))
    fig, axes = new_panels(width, 8.4 if stacked else 4.6, 2, stacked=stacked)
    x = np.arange(len(data), dtype=float)
    alphas = data["_a"].to_numpy()
    for i in range(1, len(x)):  # gaps between α blocks
        x[i] = x[i - 1] + (1.0 if alphas[i] == alphas[i - 1] else 1.5)
    deciding = 0 if standard == "paper" else 1
    titles = ("Δ± — points of agreement gained over SIDDO", "h± — share of the headroom SIDDO left")
    marks = ("decides the payoff; above each group: Δ− − Δ+", "decides the payoff; above each group: h− − h+")
    labels = ("Change in agreement vs SIDDO (points)", "Share of SIDDO's headroom (0–1)")
    ticks = [f"{label_text(c, 22)}, α={alpha_text(a)}" for c, a in zip(data["condition"], data["alpha"], strict=False)]
    for k, (ax, value, scale) in enumerate(zip(axes, ("delta", "h"), (100.0, 1.0), strict=True)):
        _bars(ax, x, data, value, scale)
        ax.set_xticks(x)
        ax.set_xticklabels(ticks, fontsize=8.5, rotation=30, ha="right", rotation_mode="anchor")
        ax.tick_params(axis="x", length=0)
        ax.set_ylabel(labels[k], fontsize=9.5, color="#1f2937")
        title = f"★ {titles[k]}\n{marks[k]}" if k == deciding else titles[k]
        weight = "bold" if k == deciding else "normal"
        ax.set_title(title, fontsize=10, color="#111827", loc="left", pad=16, fontweight=weight)
        if stacked:
            ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(frameon=False, fontsize=8, loc="best")
        if k == deciding:
            _mark(ax, x, data, standard)
    fig.tight_layout()
    return save_png(fig, figure_dir(out_dir) / "transfer_deltas.png")


# --------------------------------------------------------------------------------------------
# (c) accuracy vs agreement
# --------------------------------------------------------------------------------------------
def plot_accuracy_vs_agreement(runs: pd.DataFrame, out_dir: Path | str) -> Path | None:
    """``figures/accuracy_vs_agreement.png``: one point per student, colour = condition, marker = α.

    Returns None when no student has both a finite accuracy and a finite agreement.
    """
    students = student_rows(runs)
    if len(students) == 0 or not {"accuracy", "agreement"} <= set(students.columns):
        return None
    acc = pd.to_numeric(students["accuracy"], errors="coerce")
    agr = pd.to_numeric(students["agreement"], errors="coerce")
    ok = np.isfinite(acc.to_numpy(float)) & np.isfinite(agr.to_numpy(float))
    if not ok.any():
        return None
    students = students.loc[ok].assign(accuracy=acc[ok], agreement=agr[ok])
    conditions = condition_order(students["condition"])
    colours = condition_colours(conditions)
    alphas = sorted({alpha_key(a) for a in students["alpha"]})
    markers = {a: ALPHA_MARKERS[i % len(ALPHA_MARKERS)] for i, a in enumerate(alphas)}

    fig, ax = new_figure(7.2, 4.6)
    ax.xaxis.grid(True, color="#e6e9ee", linewidth=0.8)
    for cond in conditions:
        for a in alphas:
            sub = students[(students["condition"] == cond) & (students["alpha"].map(alpha_key) == a)]
            if len(sub) == 0:
                continue
            ax.scatter(
                100 * sub["agreement"],
                100 * sub["accuracy"],
                s=34,
                color=colours[cond],
                marker=markers[a],
                edgecolors="white",
                linewidths=0.6,
                alpha=0.9,
                zorder=3,
                label=f"{label_text(cond, 24)}, α={alpha_text(a if math.isfinite(a) else np.nan)}",
            )
    t_acc = 100 * teacher_value(runs, "accuracy")
    if math.isfinite(t_acc):
        ax.axhline(t_acc, color="#111827", linestyle="--", linewidth=1.0, zorder=1)
        ax.annotate(
            "teacher accuracy",
            xy=(0.0, t_acc),
            xycoords=("axes fraction", "data"),
            xytext=(4, 3),
            textcoords="offset points",
            fontsize=8,
            color="#111827",
        )
    ax.set_xlabel("Agreement with teacher (%)", fontsize=9.5, color="#1f2937")
    ax.set_ylabel("Test accuracy (%)", fontsize=9.5, color="#1f2937")
    ax.set_title("Accuracy vs agreement — one point per student", fontsize=11, color="#111827", loc="left", pad=10)
    ax.legend(frameon=False, fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_png(fig, figure_dir(out_dir) / "accuracy_vs_agreement.png")


# --------------------------------------------------------------------------------------------
def write_figures(out_dir: Path | str, tables: AuditTables) -> list[Path]:
    """All figures of an audit into ``out_dir/figures/``; returns the written paths in order:
    the metric distributions, then ``transfer_deltas.png``, then ``accuracy_vs_agreement.png``."""
    written = list(plot_metric_distributions(tables.runs, out_dir))
    standard = str((getattr(tables, "statistics", None) or {}).get("standard", "kdaudit"))
    p = plot_transfer(tables.runs, out_dir, tables.transfer, standard)
    if p is not None:
        written.append(p)
    p = plot_accuracy_vs_agreement(tables.runs, out_dir)
    if p is not None:
        written.append(p)
    return written
