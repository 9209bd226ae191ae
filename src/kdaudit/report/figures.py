"""Figures of an audit (PROTOCOL §6): PNGs written into ``out_dir/figures/``.

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
  Δ− (agreement where the teacher is wrong), each relative to the SIDDO control, per condition
  and α. Error bars are the standard error of the difference of two independent means,
  ``SEM(Δ) = sqrt(SEM_X² + SEM_siddo²)``, with ``SEM = std(ddof=1) / sqrt(n)`` over the seeds
  in ``runs`` (a group with fewer than two finite values has no error bar).
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
        fig, ax = new_figure(max(6.5, 2.6 + 0.62 * len(groups)), 4.0)
        shown: dict[str, Artist] = {}
        for _, members in blocks:
            for cond, alpha, xpos in members:
                vals = finite_values(select_group(students, cond, alpha)[metric])
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
            t_acc = teacher_value(runs, "accuracy")
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
        label = catalogue.label(metric)
        ax.set_ylabel(label_text(label, 60), fontsize=9.5, color="#1f2937")
        ax.set_title(label_text(label, 60) + " — per seed", fontsize=11, color="#111827", loc="left", pad=10)
        path = save_png(fig, fdir / f"dist_{metric}.png")
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# (b) Δ+ and Δ− against SIDDO
# --------------------------------------------------------------------------------------------
def transfer_deltas(runs: pd.DataFrame) -> pd.DataFrame:
    """Δ± per (condition, α) against SIDDO with the SEM of each difference, from ``runs``.

    Columns: condition, alpha, delta_pos, sem_pos, delta_neg, sem_neg. ``sem_*`` is
    ``sqrt(SEM_X² + SEM_siddo²)`` (independent groups; NaN when either has < 2 seeds).
    Empty if ``runs`` has no siddo student.
    """
    cols = ["condition", "alpha", "delta_pos", "sem_pos", "delta_neg", "sem_neg"]
    students = student_rows(runs)
    if len(students) == 0:
        return pd.DataFrame(columns=cols)
    control = students[students["condition"] == "siddo"]
    if len(control) == 0:
        return pd.DataFrame(columns=cols)
    rows = []
    stats = {}
    for key, metric in (("pos", "agreement_teacher_correct"), ("neg", "agreement_teacher_wrong")):
        vals = control[metric] if metric in control.columns else []
        stats[key] = (finite_mean(vals), sem(vals))
    for cond, alpha in group_keys(students):
        if cond == "siddo":
            continue
        sub = select_group(students, cond, alpha)
        row: dict[str, object] = {"condition": cond, "alpha": alpha}
        for key, metric in (("pos", "agreement_teacher_correct"), ("neg", "agreement_teacher_wrong")):
            vals = sub[metric] if metric in sub.columns else []
            c_mean, c_sem = stats[key]
            row[f"delta_{key}"] = finite_mean(vals) - c_mean
            row[f"sem_{key}"] = math.sqrt(sem(vals) ** 2 + c_sem**2)
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def plot_transfer(
    runs: pd.DataFrame,
    out_dir: Path | str,
    transfer: pd.DataFrame | None = None,
) -> Path | None:
    """``figures/transfer_deltas.png``: Δ+ and Δ− bars per (condition, α) with SEM error bars.

    Δ and its SEM come from ``runs`` (see :func:`transfer_deltas`). If ``runs`` has no SIDDO
    student, the Δ± of ``transfer`` are drawn without error bars. Returns None when there is
    nothing to draw.
    """
    data = transfer_deltas(runs)
    if (
        len(data) == 0
        and transfer is not None
        and len(transfer) > 0
        and {"condition", "alpha", "delta_pos", "delta_neg"} <= set(transfer.columns)
    ):
        data = pd.DataFrame(
            {
                "condition": transfer["condition"].astype(str),
                "alpha": pd.to_numeric(transfer["alpha"], errors="coerce"),
                "delta_pos": pd.to_numeric(transfer["delta_pos"], errors="coerce"),
                "sem_pos": np.nan,
                "delta_neg": pd.to_numeric(transfer["delta_neg"], errors="coerce"),
                "sem_neg": np.nan,
            }
        )
        data = data[data["condition"] != "siddo"]
    if len(data) == 0:
        return None
    order = {c: i for i, c in enumerate(condition_order(data["condition"]))}
    data = (
        data.assign(_a=data["alpha"].map(alpha_key), _c=data["condition"].map(order))
        .sort_values(["_a", "_c"])
        .reset_index(drop=True)
    )

    fig, ax = new_figure(max(6.5, 1.5 + 0.8 * len(data)), 4.4)
    x = np.arange(len(data), dtype=float)
    # gaps between α blocks
    alphas = data["_a"].to_numpy()
    for i in range(1, len(x)):
        x[i] = x[i - 1] + (1.0 if alphas[i] == alphas[i - 1] else 1.5)
    w = 0.36
    for offset, key, colour, name in (
        (-w / 2, "pos", POS_COLOUR, "Δ+  teacher right"),
        (w / 2, "neg", NEG_COLOUR, "Δ−  teacher wrong"),
    ):
        vals = pd.to_numeric(data[f"delta_{key}"], errors="coerce").to_numpy(float)
        errs = pd.to_numeric(data[f"sem_{key}"], errors="coerce").to_numpy(float)
        heights = np.nan_to_num(vals, nan=0.0)
        ax.bar(x + offset, heights, width=w, color=colour, alpha=0.85, label=name, zorder=2)
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
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"{label_text(c, 22)}, α={alpha_text(a)}" for c, a in zip(data["condition"], data["alpha"], strict=False)],
        fontsize=8.5,
        rotation=30,
        ha="right",
        rotation_mode="anchor",
    )
    ax.tick_params(axis="x", length=0)
    ax.set_ylabel("Change in agreement vs SIDDO", fontsize=9.5, color="#1f2937")
    ax.set_title(
        "Δ+ / Δ− — agreement gained over the SIDDO control (± SEM)", fontsize=11, color="#111827", loc="left", pad=10
    )
    ax.legend(frameon=False, fontsize=8.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
                sub["agreement"],
                sub["accuracy"],
                s=34,
                color=colours[cond],
                marker=markers[a],
                edgecolors="white",
                linewidths=0.6,
                alpha=0.9,
                zorder=3,
                label=f"{label_text(cond, 24)}, α={alpha_text(a if math.isfinite(a) else np.nan)}",
            )
    t_acc = teacher_value(runs, "accuracy")
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
    ax.set_xlabel("Agreement with teacher", fontsize=9.5, color="#1f2937")
    ax.set_ylabel("Test accuracy", fontsize=9.5, color="#1f2937")
    ax.set_title("Accuracy vs agreement — one point per student", fontsize=11, color="#111827", loc="left", pad=10)
    ax.legend(frameon=False, fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_png(fig, figure_dir(out_dir) / "accuracy_vs_agreement.png")


# --------------------------------------------------------------------------------------------
def write_figures(out_dir: Path | str, tables: AuditTables) -> list[Path]:
    """All figures of an audit into ``out_dir/figures/``; returns the written paths in order:
    the metric distributions, then ``transfer_deltas.png``, then ``accuracy_vs_agreement.png``."""
    written = list(plot_metric_distributions(tables.runs, out_dir))
    p = plot_transfer(tables.runs, out_dir, tables.transfer)
    if p is not None:
        written.append(p)
    p = plot_accuracy_vs_agreement(tables.runs, out_dir)
    if p is not None:
        written.append(p)
    return written
