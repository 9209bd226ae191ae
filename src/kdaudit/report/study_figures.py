"""Forest plots of a study: per setup Δ+ and Δ− (``forest_delta``) or h+ and h− (``forest_h``)
with their 95 % intervals, the setups grouped by modality, and the random-effects pooled estimate
across setups as a diamond spanning its interval at the bottom. One panel per distillation
condition and α. Written by :func:`kdaudit.report.plotting.save_png` (PNG and SVG, atomically).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Polygon

from kdaudit.analysis.verdicts import display_name
from kdaudit.report.document import FigureInfo
from kdaudit.report.formatting import missing, number
from kdaudit.report.plotting import (
    DPI,
    NEG_COLOUR,
    POS_COLOUR,
    alpha_key,
    alpha_text,
    condition_order,
    figure_dir,
    label_text,
    save_png,
    style_axes,
)

__all__ = ["FOREST_CAPTIONS", "POOLED_LABEL", "forest_keys", "forest_lines", "write_forest_plots"]

POOLED_LABEL = "pooled (random effects)"

_INTERVALS = "95 % intervals (estimate ± t·SE, Welch degrees of freedom)"
FOREST_CAPTIONS: dict[str, tuple[str, str]] = {
    "forest_delta": (
        "Forest plot of Δ+ and Δ−",
        "Per setup, grouped by modality: KD minus SIDDO agreement with the teacher on the test samples it gets "
        f"right (Δ+) and wrong (Δ−), in percentage points, with {_INTERVALS}. The diamonds at the bottom are the "
        "random-effects pooled estimates across setups, spanning their 95 % intervals.",
    ),
    "forest_h": (
        "Forest plot of h+ and h−",
        "Per setup, grouped by modality: Δ+ and Δ− as a share of the headroom SIDDO left (h+ and h−, 1 = all "
        f"of it), with {_INTERVALS}. The diamonds at the bottom are the random-effects pooled estimates across "
        "setups, spanning their 95 % intervals.",
    ),
}
"""Title and caption of each forest plot, by file stem."""


@dataclass(frozen=True)
class _Quantity:
    column: str
    label: str
    colour: str
    marker: str
    offset: float  # vertical offset from the setup's line (the y axis points down)


@dataclass(frozen=True)
class _Plot:
    name: str
    quantities: tuple[_Quantity, _Quantity]
    scale: float
    xlabel: str
    title: str


_PLOTS = (
    _Plot(
        "forest_delta",
        (
            _Quantity("delta_pos", "Δ+  (teacher right)", POS_COLOUR, "o", -0.17),
            _Quantity("delta_neg", "Δ−  (teacher wrong)", NEG_COLOUR, "s", 0.17),
        ),
        100.0,
        "KD − SIDDO agreement with the teacher (points)",
        "Δ+ and Δ− per setup, 95 % intervals",
    ),
    _Plot(
        "forest_h",
        (
            _Quantity("h_pos", "h+  (teacher right)", POS_COLOUR, "o", -0.17),
            _Quantity("h_neg", "h−  (teacher wrong)", NEG_COLOUR, "s", 0.17),
        ),
        1.0,
        "share of SIDDO headroom",
        "h+ and h− per setup, 95 % intervals",
    ),
)

_BAND = "#f3f4f6"
_SEPARATOR = "#c9ced6"
_HEAD_COLOUR = "#111827"


def _name(x: Any) -> str:
    return "—" if missing(x) else str(x)


def forest_lines(rows: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The y axis from top to bottom: ``("modality", modality, "")`` headings, each followed by its
    ``("setup", modality, setup)`` lines; modalities and setups sorted by name."""
    pairs = {(_name(m), _name(s)) for m, s in zip(rows["modality"], rows["setup"], strict=True)}
    out: list[tuple[str, str, str]] = []
    for modality, setup in sorted(pairs, key=lambda p: (p[0].lower(), p[0], p[1].lower(), p[1])):
        if not out or out[-1][1] != modality:
            out.append(("modality", modality, ""))
        out.append(("setup", modality, setup))
    return out


def forest_keys(rows: pd.DataFrame) -> list[tuple[str, float]]:
    """(condition, α) of the panels: conditions in display order, then α ascending (missing last)."""
    order = condition_order(rows["condition"])
    keys = {(str(c), alpha_key(a)) for c, a in zip(rows["condition"], rows["alpha"], strict=True)}
    return sorted(keys, key=lambda k: (order.index(k[0]) if k[0] in order else len(order), k[1]))


def _select(df: pd.DataFrame, cond: str, alpha: float) -> pd.DataFrame:
    if df is None or len(df) == 0 or not {"condition", "alpha"} <= set(df.columns):
        return pd.DataFrame(columns=list(getattr(df, "columns", [])))
    a = pd.to_numeric(df["alpha"], errors="coerce").map(alpha_key).to_numpy(np.float64)
    mask = (df["condition"].astype(str).to_numpy() == cond) & np.isclose(a, alpha)
    return df.loc[mask]


def _interval(row: Any, column: str, scale: float) -> tuple[float | None, float | None, float | None]:
    """Estimate, low and high of ``column`` in ``row`` times ``scale``; None where missing."""

    def get(suffix: str) -> float | None:
        v = number(row.get(column + suffix))
        return None if v is None else scale * v

    return get(""), get("_ci_low"), get("_ci_high")


def _pooled_rows(pooled: pd.DataFrame, cond: str, alpha: float, column: str) -> list[Any]:
    sub = _select(pooled, cond, alpha)
    if not len(sub) or "quantity" not in sub.columns:
        return []
    sub = sub.loc[sub["quantity"].astype(str) == column]
    return [r for _, r in sub.iterrows() if (number(r.get("k")) or 0) > 0 and number(r.get("estimate")) is not None]


def _draw_setups(ax: Axes, sub: pd.DataFrame, ys: dict[tuple[str, str], int], plot: _Plot) -> None:
    for q in plot.quantities:
        xs, yy = [], []
        for _, r in sub.iterrows():
            y = ys.get((_name(r["modality"]), _name(r["setup"])))
            est, lo, hi = _interval(r, q.column, plot.scale)
            if y is None or est is None:
                continue
            xs.append(est)
            yy.append(y + q.offset)
            if lo is not None and hi is not None:
                ax.hlines(y + q.offset, lo, hi, color=q.colour, linewidth=1.3, zorder=2)
        ax.plot(xs, yy, linestyle="none", marker=q.marker, color=q.colour, markersize=5, zorder=3)


def _draw_pooled(ax: Axes, pooled: pd.DataFrame, key: tuple[str, float], y: float, plot: _Plot) -> None:
    for q in plot.quantities:
        for r in _pooled_rows(pooled, *key, q.column):
            est = plot.scale * float(r["estimate"])
            lo, hi = (number(r.get(c)) for c in ("ci_low", "ci_high"))
            yc = y + q.offset * 1.2
            if lo is None or hi is None:
                ax.plot([est], [yc], linestyle="none", marker="D", color=q.colour, markersize=6, zorder=3)
                continue
            lo, hi = plot.scale * lo, plot.scale * hi
            corners = [(lo, yc), (est, yc - 0.19), (hi, yc), (est, yc + 0.19)]
            ax.add_patch(Polygon(corners, closed=True, facecolor=q.colour, edgecolor=q.colour, alpha=0.85, zorder=3))
            ax.update_datalim([(lo, yc), (hi, yc)])


def _y_axis(ax: Axes, lines: Sequence[tuple[str, str, str]], pooled_row: bool, show_labels: bool) -> None:
    labels = [label_text(setup if kind == "setup" else modality, 34) for kind, modality, setup in lines]
    bold = [kind == "modality" for kind, _, _ in lines]
    for i, (kind, _, _) in enumerate(lines):
        if kind == "modality":
            ax.axhspan(i - 0.5, i + 0.5, color=_BAND, zorder=0, linewidth=0)
            if i:
                ax.axhline(i - 0.5, color=_SEPARATOR, linewidth=0.8, zorder=1)
    if pooled_row:
        ax.axhline(len(lines) - 0.5, color="#6b7280", linewidth=1.0, zorder=1)
        labels.append(POOLED_LABEL)
        bold.append(True)
    ax.set_yticks(range(len(labels)))
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.tick_params(axis="y", length=0)
    if not show_labels:
        ax.tick_params(axis="y", labelleft=False)
        return
    ax.set_yticklabels(labels, fontsize=8.5)
    for tick, b in zip(ax.get_yticklabels(), bold, strict=True):
        if b:
            tick.set_fontweight("bold")
            tick.set_color(_HEAD_COLOUR)


def _legend(fig: Figure, plot: _Plot, pooled_row: bool) -> None:
    handles = [
        Line2D([], [], linestyle="-", marker=q.marker, color=q.colour, markersize=5, label=q.label)
        for q in plot.quantities
    ]
    if pooled_row:
        handles.append(
            Line2D([], [], linestyle="none", marker="D", markersize=8, color="#6b7280", alpha=0.85, label=POOLED_LABEL)
        )
    fig.legend(handles=handles, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.98))


def _forest(fdir: Path, rows: pd.DataFrame, pooled: pd.DataFrame, plot: _Plot) -> FigureInfo | None:
    keys = forest_keys(rows)
    lines = forest_lines(rows)
    columns = [q.column for q in plot.quantities]
    has_points = any(c in rows.columns and rows[c].map(number).notna().any() for c in columns)
    pooled_row = any(_pooled_rows(pooled, *k, c) for k in keys for c in columns)
    if not keys or not (has_points or pooled_row):
        return None
    ncols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    n_y = len(lines) + int(pooled_row)
    fig = Figure(figsize=(2.4 + 3.6 * ncols, nrows * (0.27 * n_y + 1.0) + 0.5), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    ys = {(modality, setup): i for i, (kind, modality, setup) in enumerate(lines) if kind == "setup"}
    several = len({c for c, _ in keys}) > 1
    first: Axes | None = None
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1, sharey=first)
        first = first or ax
        style_axes(ax)
        ax.yaxis.grid(False)
        ax.xaxis.grid(True, color="#e6e9ee", linewidth=0.8)
        _y_axis(ax, lines, pooled_row, show_labels=i % ncols == 0)
        ax.axvline(0.0, color="#374151", linewidth=0.9, zorder=1)
        _draw_setups(ax, _select(rows, *key), ys, plot)
        if pooled_row:
            _draw_pooled(ax, pooled, key, float(len(lines)), plot)
        ax.autoscale_view(scalex=True, scaley=False)
        title = f"α = {alpha_text(key[1])}"
        ax.set_title(label_text(f"{display_name(key[0])}, {title}" if several else title, 40), fontsize=9.5, loc="left")
        if i >= len(keys) - ncols:
            ax.set_xlabel(plot.xlabel, fontsize=8.5)
    _legend(fig, plot, pooled_row)
    fig.suptitle(plot.title, fontsize=11, x=0.02, ha="left", color=_HEAD_COLOUR)
    fig.tight_layout()
    path = save_png(fig, fdir / f"{plot.name}.png")
    return FigureInfo(plot.name, path, *FOREST_CAPTIONS[plot.name])


def write_forest_plots(out_dir: Path, rows: pd.DataFrame, pooled: pd.DataFrame) -> list[FigureInfo]:
    """``forest_delta.png`` and ``forest_h.png`` (each with an SVG beside it) in ``out_dir/figures``
    from a study's ``rows`` (:data:`~kdaudit.analysis.study.STUDY_COLUMNS`) and ``pooled``
    (:data:`~kdaudit.analysis.study.POOLED_COLUMNS`) tables; nothing for empty rows.

    Points without an estimate are left out, intervals with a missing end are not drawn, and
    pooled estimates over no setup (k = 0) are skipped. Returns the figures written.
    """
    needed = {"setup", "modality", "condition", "alpha"}
    if rows is None or len(rows) == 0 or not needed <= set(rows.columns):
        return []
    if pooled is None:
        pooled = pd.DataFrame()
    fdir = figure_dir(out_dir)
    infos = [_forest(fdir, rows, pooled, plot) for plot in _PLOTS]
    return [f for f in infos if f is not None]
