"""Figures of a sweep: the student metrics and Δ± across the points, Δ± against the teacher's
loss, and the scaling of loss and agreement with the student's size (PNG, written atomically).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kdaudit.analysis import catalogue
from kdaudit.analysis.sweep import SweepPoint, SweepTables, group_name, sweep_axis
from kdaudit.report.plotting import (
    ALPHA_MARKERS,
    DPI,
    condition_colours,
    condition_order,
    figure_dir,
    label_text,
    save_png,
    style_axes,
)

__all__ = ["write_sweep_figures"]

_DELTAS = (("delta_pos", "sem_pos", "Δ+  (teacher right)"), ("delta_neg", "sem_neg", "Δ−  (teacher wrong)"))


@dataclass
class _Axis:
    """The x axis of the points: the swept field (None for points without a numeric one), the
    position of each point, and the position by point label."""

    path: str | None
    xs: list[float]
    by_label: dict[str, float]


def _grid(n: int, ncols: int, width: float = 3.6, height: float = 2.9) -> tuple[Figure, list[Any]]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols + 1.8, height * nrows), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    for ax in axes:
        style_axes(ax)
    return fig, axes


def _keys(df: pd.DataFrame) -> list[tuple[str, float]]:
    """(condition, α) of the student rows: conditions in display order, then by α."""
    df = df.loc[df["condition"].astype(str) != "teacher"]
    order = {c: i for i, c in enumerate(condition_order(df["condition"]))}
    keys = {(str(c), float(a)) for c, a in zip(df["condition"], df["alpha"], strict=True)}
    return sorted(keys, key=lambda k: (order[k[0]], k[1]))


def _styles(keys: Sequence[tuple[str, float]]) -> dict[tuple[str, float], dict[str, Any]]:
    colours = condition_colours(condition_order(c for c, _ in keys))
    alphas = sorted({a for _, a in keys})
    return {
        (c, a): {
            "color": colours[c],
            "marker": ALPHA_MARKERS[alphas.index(a) % len(ALPHA_MARKERS)],
            "linestyle": ("-", "--", ":", "-.")[alphas.index(a) % 4],
            "label": label_text(group_name(c, a), 28),
        }
        for c, a in keys
    }


def _rows(df: pd.DataFrame, cond: str, alpha: float) -> pd.DataFrame:
    return df.loc[(df["condition"].astype(str) == cond) & np.isclose(df["alpha"].astype(float), alpha)]


def _line(ax: Any, x: Any, y: Any, err: Any, style: dict[str, Any]) -> None:
    x, y, err = (np.asarray(v, dtype=np.float64) for v in (x, y, err))
    order = np.argsort(x, kind="stable")
    ax.errorbar(
        x[order],
        y[order],
        yerr=np.nan_to_num(err[order]),
        capsize=2.5,
        markersize=4.5,
        linewidth=1.3,
        elinewidth=0.9,
        **style,
    )


def _x_axis(ax: Any, points: Sequence[SweepPoint], path: str | None, xs: Sequence[float]) -> None:
    if path is None:
        ax.set_xticks(xs)
        ax.set_xticklabels([label_text(p.label, 18) for p in points], rotation=30, ha="right", fontsize=7.5)
    else:
        ax.set_xlabel(label_text(path, 50), fontsize=8.5)
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")


def _legend(fig: Figure, axes: Sequence[Any]) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.98))


def _finish(fig: Figure, axes: Sequence[Any], title: str, path: Path) -> Path:
    _legend(fig, axes)
    fig.suptitle(title, fontsize=11, x=0.02, ha="left", color="#111827")
    fig.tight_layout()
    return save_png(fig, path)


def _metrics_figure(fdir: Path, m: pd.DataFrame, points: Sequence[SweepPoint], axis: _Axis) -> Path | None:
    """One panel per tested metric: mean ± SEM at each point per group, the teacher dashed."""
    metrics = [k for k in catalogue.tested_metrics() if k in set(m["metric"])]
    if not metrics:
        return None
    styles = _styles(_keys(m))
    fig, axes = _grid(len(metrics), 4)
    for ax, metric in zip(axes, metrics, strict=True):
        sub = m.loc[m["metric"] == metric]
        for key, style in styles.items():
            g = _rows(sub, *key)
            _line(ax, g["point"].map(axis.by_label), g["mean"], g["sem"], style)
        t = sub.loc[sub["condition"] == "teacher"].sort_values("point", key=lambda s: s.map(axis.by_label))
        if len(t):
            ax.plot(t["point"].map(axis.by_label), t["mean"], "--", color="#111827", linewidth=1.1, label="teacher")
        ax.set_title(label_text(catalogue.label(metric), 44), fontsize=9, loc="left")
        _x_axis(ax, points, axis.path, axis.xs)
    return _finish(fig, axes, "Student metrics across the sweep (mean ± SEM)", fdir / "sweep_metrics.png")


def _transfer_figures(fdir: Path, tables: SweepTables, points: Sequence[SweepPoint], axis: _Axis) -> list[Path]:
    """Δ± across the points and, where there is a teacher-loss trend, against the teacher's loss."""
    tr = tables.transfer
    if not len(tr):
        return []
    styles = _styles(_keys(tr))
    written = []
    figures: tuple[tuple[str, Callable[[pd.DataFrame], Any], str], ...] = (
        ("sweep_transfer", lambda g: g["point"].map(axis.by_label), "Δ± against SIDDO across the sweep (± SEM)"),
        ("teacher_loss", lambda g: g["teacher_loss"], "Δ± against the teacher's test loss (± SEM)"),
    )
    for name, x_of, title in figures:
        if name == "teacher_loss" and tables.trend.empty:
            continue
        fig, axes = _grid(2, 2, 4.2, 3.2)
        for ax, (col, sem_col, label) in zip(axes, _DELTAS, strict=True):
            for key, style in styles.items():
                g = _rows(tr, *key)
                _line(ax, x_of(g), g[col], g[sem_col], style)
            ax.axhline(0.0, color="#374151", linewidth=0.8)
            ax.set_title(label, fontsize=9.5, loc="left")
            if name == "sweep_transfer":
                _x_axis(ax, points, axis.path, axis.xs)
            else:
                ax.set_xlabel("Teacher test loss", fontsize=8.5)
        written.append(_finish(fig, axes, title, fdir / f"{name}.png"))
    return written


def _scaling_panel(
    ax: Any,
    tables: SweepTables,
    quantity: str,
    sizes: dict[str, float],
    styles: dict[tuple[str, float], dict[str, Any]],
) -> None:
    """Mean ± SEM of ``quantity`` against the student's size per group, with its power-law fit."""
    sub = tables.metrics.loc[tables.metrics["metric"] == quantity]
    for key, style in styles.items():
        g = _rows(sub, *key)
        n = g["point"].map(sizes)
        _line(ax, n, g["mean"], g["sem"], {**style, "linestyle": "none"})
        fit = _rows(tables.scaling, *key)
        fit = fit.loc[fit["quantity"] == quantity]
        if len(fit) and np.isfinite(fit["exponent"].iloc[0]) and n.min() > 0:
            grid = np.geomspace(n.min(), n.max(), 50)
            ax.plot(
                grid,
                fit["prefactor"].iloc[0] * grid ** fit["exponent"].iloc[0],
                color=style["color"],
                linewidth=1.0,
                alpha=0.8,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Student parameters N", fontsize=8.5)
    ax.set_title(label_text(catalogue.label(quantity), 44), fontsize=9.5, loc="left")


def _scaling_figure(fdir: Path, tables: SweepTables, points: Sequence[SweepPoint]) -> Path | None:
    """Loss and agreement against the student's size (log–log) with the fitted power laws."""
    if not len(tables.scaling):
        return None
    sizes = {p.label: float(p.student_params) for p in points}
    styles = _styles(_keys(tables.scaling))
    fig, axes = _grid(2, 2, 4.2, 3.4)
    for ax, quantity in zip(axes, ("loss", "agreement"), strict=True):
        _scaling_panel(ax, tables, quantity, sizes, styles)
    return _finish(fig, axes, "Scaling with the student's size (log–log)", fdir / "scaling.png")


def write_sweep_figures(out_dir: Path, tables: SweepTables, points: Sequence[SweepPoint]) -> list[Path]:
    """``sweep_metrics.png``, ``sweep_transfer.png`` and, where their tables are not empty,
    ``scaling.png`` and ``teacher_loss.png`` in ``out_dir/figures``; returns the written paths."""
    fdir = figure_dir(out_dir)
    path, xs = sweep_axis(points)
    axis = _Axis(path, list(xs), {p.label: x for p, x in zip(points, xs, strict=True)})
    metrics = _metrics_figure(fdir, tables.metrics, points, axis)
    written = [metrics] if metrics is not None else []
    written += _transfer_figures(fdir, tables, points, axis)
    scaling = _scaling_figure(fdir, tables, points)
    return written + ([scaling] if scaling is not None else [])
