"""What the report's figures share: colours and markers, the canvas, the axes style, the
writer (a PNG and an SVG beside it), and the student groups of a ``runs`` table.

Every figure is a :class:`matplotlib.figure.Figure` on its own :class:`FigureCanvasAgg`, so
neither pyplot nor the global backend is touched, and is written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kdaudit.io import atomic_write

__all__ = [
    "ALPHA_MARKERS",
    "CONDITION_ORDER",
    "DPI",
    "NEG_COLOUR",
    "POS_COLOUR",
    "alpha_key",
    "alpha_text",
    "condition_colours",
    "condition_order",
    "figure_dir",
    "finite_mean",
    "finite_values",
    "group_keys",
    "is_nan",
    "label_text",
    "new_figure",
    "new_panels",
    "save_png",
    "select_group",
    "sem",
    "student_rows",
    "style_axes",
    "teacher_value",
]

#: The conditions of the protocol in display order; other names follow, sorted.
CONDITION_ORDER: tuple[str, ...] = ("siddo", "kd", "ls", "rcd-uniform", "rcd-gaussian")

_CONDITION_COLOURS: dict[str, str] = {
    "siddo": "#7f8792",
    "kd": "#2f6fde",
    "ls": "#8e5bd0",
    "rcd-uniform": "#e08a1e",
    "rcd-gaussian": "#2a9d6f",
}
_EXTRA_COLOURS = ("#d1495b", "#1b9aaa", "#a17c4b", "#c05fa8", "#5a7d2a")
ALPHA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
POS_COLOUR = "#2f6fde"
NEG_COLOUR = "#d1495b"
DPI = 110


def condition_order(conditions: Iterable[object]) -> list[str]:
    """Protocol conditions first (siddo, kd, ls, rcd-uniform, rcd-gaussian), then the rest sorted."""
    names = {str(c) for c in conditions if c is not None and not is_nan(c)}
    known = [c for c in CONDITION_ORDER if c in names]
    return known + sorted(names - set(known))


def sem(values: Iterable[float]) -> float:
    """Standard error of the mean of the finite values (ddof=1); NaN for fewer than two."""
    arr = finite_values(values)
    if arr.size < 2:
        return float("nan")
    return float(np.std(arr, ddof=1) / math.sqrt(arr.size))


def figure_dir(out_dir: Path | str) -> Path:
    """``out_dir/figures``, created if needed."""
    path = Path(out_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_nan(x: object) -> bool:
    """True for a float NaN."""
    try:
        return bool(isinstance(x, float | np.floating) and math.isnan(float(x)))
    except (TypeError, ValueError):
        return False


def finite_values(values: Iterable[float]) -> np.ndarray:
    """The finite numbers among ``values`` (others are dropped)."""
    arr = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(float)
    return arr[np.isfinite(arr)]


def finite_mean(values: Iterable[float]) -> float:
    """Mean of the finite values; NaN without any."""
    arr = finite_values(values)
    return float(arr.mean()) if arr.size else float("nan")


def label_text(s: object, limit: int = 40) -> str:
    """A label safe for matplotlib: no mathtext (``$`` escaped), bounded length."""
    out = str(s).replace("\n", " ")
    if len(out) > limit:
        out = out[: limit - 1] + "…"
    return out.replace("$", r"\$")


def alpha_text(alpha: object) -> str:
    """α for a label: ``0.9``; ``–`` for NaN."""
    try:
        a = float(alpha)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(alpha)
    return "–" if math.isnan(a) else f"{a:g}"


def alpha_key(alpha: object) -> float:
    """α as a sort key (missing or non-numeric last)."""
    try:
        a = float(alpha)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(a) else a


def condition_colours(conditions: Sequence[str]) -> dict[str, str]:
    """A colour per condition: the protocol's own, then a cycle of extra colours."""
    out: dict[str, str] = {}
    extra = 0
    for c in conditions:
        if c in _CONDITION_COLOURS:
            out[c] = _CONDITION_COLOURS[c]
        else:
            out[c] = _EXTRA_COLOURS[extra % len(_EXTRA_COLOURS)]
            extra += 1
    return out


def student_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """Student rows of ``runs`` (everything whose role/condition is not ``teacher``)."""
    if runs is None or len(runs) == 0 or "condition" not in runs.columns:
        return pd.DataFrame(columns=list(getattr(runs, "columns", [])))
    mask = runs["condition"].astype(str) != "teacher"
    if "role" in runs.columns:
        mask &= runs["role"].astype(str) != "teacher"
    out = runs.loc[mask].copy()
    if "alpha" not in out.columns:
        out["alpha"] = np.nan
    out["alpha"] = pd.to_numeric(out["alpha"], errors="coerce")
    out["condition"] = out["condition"].astype(str)
    return out


def teacher_value(runs: pd.DataFrame, metric: str) -> float:
    """The teacher's value of ``metric`` in ``runs`` (NaN without a teacher row)."""
    if runs is None or len(runs) == 0 or metric not in runs.columns:
        return float("nan")
    mask = pd.Series(False, index=runs.index)
    if "role" in runs.columns:
        mask |= runs["role"].astype(str) == "teacher"
    if "condition" in runs.columns:
        mask |= runs["condition"].astype(str) == "teacher"
    return finite_mean(runs.loc[mask, metric])


def group_keys(students: pd.DataFrame) -> list[tuple[str, float]]:
    """(condition, α) pairs in display order: the α = 0 / control groups first, then by α."""
    if len(students) == 0:
        return []
    order = {c: i for i, c in enumerate(condition_order(students["condition"].unique()))}
    pairs: set[tuple[str, float]] = set()
    for cond, alpha in zip(students["condition"], students["alpha"], strict=False):
        pairs.add((str(cond), float(alpha)))

    def key(p: tuple[str, float]) -> tuple[int, float, int]:
        cond, alpha = p
        first = 0 if cond == "siddo" else 1
        return (first, alpha_key(alpha), order.get(cond, len(order)))

    # NaN α values compare unequal to each other: deduplicate them
    seen: list[tuple[str, float]] = []
    for p in sorted(pairs, key=key):
        if not any(p[0] == q[0] and (p[1] == q[1] or (is_nan(p[1]) and is_nan(q[1]))) for q in seen):
            seen.append(p)
    return seen


def select_group(students: pd.DataFrame, cond: str, alpha: float) -> pd.DataFrame:
    """The rows of one (condition, α) group; a NaN α matches NaN."""
    m = students["condition"] == cond
    m &= students["alpha"].isna() if is_nan(alpha) else np.isclose(students["alpha"], alpha)
    return students.loc[m]


def new_figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure on its own Agg canvas with one styled axes."""
    fig, (ax,) = new_panels(width, height, 1)
    return fig, ax


def new_panels(width: float, height: float, n: int, stacked: bool = False) -> tuple[Figure, list[Axes]]:
    """A figure on its own Agg canvas with ``n`` styled axes side by side (``stacked``: one above
    the other)."""
    fig = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    rows, cols = (n, 1) if stacked else (1, n)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    for ax in axes:
        style_axes(ax)
    return fig, axes


def style_axes(ax: Axes) -> None:
    """Light spines and a horizontal grid behind the data."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9aa1ab")
    ax.tick_params(colors="#3b4350", labelsize=9)
    ax.yaxis.grid(True, color="#e6e9ee", linewidth=0.8)
    ax.set_axisbelow(True)


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` and as an SVG beside it (same name, ``.svg``; text kept as
    text, no date), each atomically (:func:`kdaudit.io.atomic_write`); returns the PNG's path."""
    svg = Path(path).with_suffix(".svg")
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": svg.stem}):
        atomic_write(
            svg,
            lambda tmp: fig.savefig(tmp, format="svg", facecolor="white", bbox_inches="tight", metadata={"Date": None}),
        )
    return atomic_write(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, facecolor="white", bbox_inches="tight")
    )
