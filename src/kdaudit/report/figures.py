"""Figures of an audit (PROTOCOL §6): PNGs written into ``out_dir/figures/``.

Every function here is pure apart from the file it writes: it builds a
:class:`matplotlib.figure.Figure` on its own :class:`FigureCanvasAgg`, so neither pyplot nor the
global backend is touched. All functions are robust to NaN values, to a condition with a single
seed and to missing conditions: what cannot be drawn is left out, never an exception.

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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:  # pragma: no cover
    from kdaudit.analysis.audit import AuditTables

__all__ = [
    "DIST_METRICS",
    "METRIC_LABELS",
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
DIST_METRICS: tuple[str, ...] = (
    "agreement",
    "js_divergence",
    "activation_distance",
    "accuracy",
    "agreement_teacher_correct",
    "agreement_teacher_wrong",
)

#: Human-readable labels of the metric columns.
METRIC_LABELS: dict[str, str] = {
    "accuracy": "Test accuracy",
    "loss": "Test loss (CE)",
    "agreement": "Agreement with teacher",
    "prediction_disagreement": "Prediction disagreement",
    "js_divergence": "JS divergence to teacher (nats)",
    "activation_distance": "Activation distance to teacher (L2)",
    "logit_cosine": "Logit cosine similarity",
    "rank_disagreement": "Rank disagreement",
    "agreement_teacher_correct": "Agreement where the teacher is right",
    "agreement_teacher_wrong": "Agreement where the teacher is wrong",
}

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
_ALPHA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_POS_COLOUR = "#2f6fde"
_NEG_COLOUR = "#d1495b"
_DPI = 110


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def condition_order(conditions: Iterable[object]) -> list[str]:
    """Protocol conditions first (siddo, kd, ls, rcd-uniform, rcd-gaussian), then the rest sorted."""
    names = {str(c) for c in conditions if c is not None and not _isnan(c)}
    known = [c for c in CONDITION_ORDER if c in names]
    return known + sorted(names - set(known))


def sem(values: Iterable[float]) -> float:
    """Standard error of the mean of the finite values (ddof=1); NaN for fewer than two."""
    arr = _finite(values)
    if arr.size < 2:
        return float("nan")
    return float(np.std(arr, ddof=1) / math.sqrt(arr.size))


def figure_dir(out_dir: Path | str) -> Path:
    """``out_dir/figures``, created if needed."""
    path = Path(out_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _isnan(x: object) -> bool:
    try:
        return bool(isinstance(x, float | np.floating) and math.isnan(float(x)))
    except (TypeError, ValueError):
        return False


def _finite(values: Iterable[float]) -> np.ndarray:
    arr = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(float)
    return arr[np.isfinite(arr)]


def _mean(values: Iterable[float]) -> float:
    arr = _finite(values)
    return float(arr.mean()) if arr.size else float("nan")


def _text(s: object, limit: int = 40) -> str:
    """A label safe for matplotlib: no mathtext (``$`` escaped), bounded length."""
    out = str(s).replace("\n", " ")
    if len(out) > limit:
        out = out[: limit - 1] + "…"
    return out.replace("$", r"\$")


def _fmt_alpha(alpha: object) -> str:
    try:
        a = float(alpha)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(alpha)
    return "–" if math.isnan(a) else f"{a:g}"


def _alpha_key(alpha: object) -> float:
    try:
        a = float(alpha)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(a) else a


def _colours(conditions: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    extra = 0
    for c in conditions:
        if c in _CONDITION_COLOURS:
            out[c] = _CONDITION_COLOURS[c]
        else:
            out[c] = _EXTRA_COLOURS[extra % len(_EXTRA_COLOURS)]
            extra += 1
    return out


def _students(runs: pd.DataFrame) -> pd.DataFrame:
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


def _teacher_value(runs: pd.DataFrame, metric: str) -> float:
    if runs is None or len(runs) == 0 or metric not in runs.columns:
        return float("nan")
    mask = pd.Series(False, index=runs.index)
    if "role" in runs.columns:
        mask |= runs["role"].astype(str) == "teacher"
    if "condition" in runs.columns:
        mask |= runs["condition"].astype(str) == "teacher"
    return _mean(runs.loc[mask, metric])


def _groups(students: pd.DataFrame) -> list[tuple[str, float]]:
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
        return (first, _alpha_key(alpha), order.get(cond, len(order)))

    # NaN α values compare unequal to each other: deduplicate them
    seen: list[tuple[str, float]] = []
    for p in sorted(pairs, key=key):
        if not any(p[0] == q[0] and (p[1] == q[1] or (_isnan(p[1]) and _isnan(q[1]))) for q in seen):
            seen.append(p)
    return seen


def _select(students: pd.DataFrame, cond: str, alpha: float) -> pd.DataFrame:
    m = students["condition"] == cond
    m &= students["alpha"].isna() if _isnan(alpha) else np.isclose(students["alpha"], alpha)
    return students.loc[m]


def _new_figure(width: float, height: float) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    _style_axes(ax)
    return fig, ax


def _style_axes(ax) -> None:  # noqa: ANN001
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9aa1ab")
    ax.tick_params(colors="#3b4350", labelsize=9)
    ax.yaxis.grid(True, color="#e6e9ee", linewidth=0.8)
    ax.set_axisbelow(True)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png", dpi=_DPI, facecolor="white", bbox_inches="tight")
    return path


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
    students = _students(runs)
    fdir = figure_dir(out_dir)
    groups = _groups(students)
    colours = _colours(condition_order(c for c, _ in groups))
    # x layout: one block per α (SIDDO first), one slot per condition in the block
    blocks: list[tuple[str, list[tuple[str, float, float]]]] = []
    x = 0.0
    for cond, alpha in groups:
        label = "SIDDO (α=0)" if cond == "siddo" else f"α = {_fmt_alpha(alpha)}"
        if not blocks or blocks[-1][0] != label:
            if blocks:
                x += 0.7  # gap between blocks
            blocks.append((label, []))
        blocks[-1][1].append((cond, alpha, x))
        x += 1.0
    written: list[Path] = []
    for metric in metrics:
        if metric not in students.columns or _finite(students[metric]).size == 0:
            continue
        rng = np.random.default_rng(seed)
        fig, ax = _new_figure(max(6.5, 2.6 + 0.62 * len(groups)), 4.0)
        shown: dict[str, object] = {}
        for _, members in blocks:
            for cond, alpha, xpos in members:
                vals = _finite(_select(students, cond, alpha)[metric])
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
            t_acc = _teacher_value(runs, "accuracy")
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
                [_text(c, 28) for c in order],
                frameon=False,
                fontsize=8.5,
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                title="condition",
                title_fontsize=8.5,
                handletextpad=0.3,
            )
        label = METRIC_LABELS.get(metric, metric)
        ax.set_ylabel(_text(label, 60), fontsize=9.5, color="#1f2937")
        ax.set_title(_text(label, 60) + " — per seed", fontsize=11, color="#111827", loc="left", pad=10)
        path = _save(fig, fdir / f"dist_{metric}.png")
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
    students = _students(runs)
    if len(students) == 0:
        return pd.DataFrame(columns=cols)
    control = students[students["condition"] == "siddo"]
    if len(control) == 0:
        return pd.DataFrame(columns=cols)
    rows = []
    stats = {}
    for key, metric in (("pos", "agreement_teacher_correct"), ("neg", "agreement_teacher_wrong")):
        vals = control[metric] if metric in control.columns else []
        stats[key] = (_mean(vals), sem(vals))
    for cond, alpha in _groups(students):
        if cond == "siddo":
            continue
        sub = _select(students, cond, alpha)
        row: dict[str, object] = {"condition": cond, "alpha": alpha}
        for key, metric in (("pos", "agreement_teacher_correct"), ("neg", "agreement_teacher_wrong")):
            vals = sub[metric] if metric in sub.columns else []
            c_mean, c_sem = stats[key]
            row[f"delta_{key}"] = _mean(vals) - c_mean
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
        data.assign(_a=data["alpha"].map(_alpha_key), _c=data["condition"].map(order))
        .sort_values(["_a", "_c"])
        .reset_index(drop=True)
    )

    fig, ax = _new_figure(max(6.5, 1.5 + 0.8 * len(data)), 4.4)
    x = np.arange(len(data), dtype=float)
    # gaps between α blocks
    alphas = data["_a"].to_numpy()
    for i in range(1, len(x)):
        x[i] = x[i - 1] + (1.0 if alphas[i] == alphas[i - 1] else 1.5)
    w = 0.36
    for offset, key, colour, name in (
        (-w / 2, "pos", _POS_COLOUR, "Δ+  teacher right"),
        (w / 2, "neg", _NEG_COLOUR, "Δ−  teacher wrong"),
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
        [f"{_text(c, 22)}, α={_fmt_alpha(a)}" for c, a in zip(data["condition"], data["alpha"], strict=False)],
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
    return _save(fig, figure_dir(out_dir) / "transfer_deltas.png")


# --------------------------------------------------------------------------------------------
# (c) accuracy vs agreement
# --------------------------------------------------------------------------------------------
def plot_accuracy_vs_agreement(runs: pd.DataFrame, out_dir: Path | str) -> Path | None:
    """``figures/accuracy_vs_agreement.png``: one point per student, colour = condition, marker = α.

    Returns None when no student has both a finite accuracy and a finite agreement.
    """
    students = _students(runs)
    if len(students) == 0 or not {"accuracy", "agreement"} <= set(students.columns):
        return None
    acc = pd.to_numeric(students["accuracy"], errors="coerce")
    agr = pd.to_numeric(students["agreement"], errors="coerce")
    ok = np.isfinite(acc.to_numpy(float)) & np.isfinite(agr.to_numpy(float))
    if not ok.any():
        return None
    students = students.loc[ok].assign(accuracy=acc[ok], agreement=agr[ok])
    conditions = condition_order(students["condition"])
    colours = _colours(conditions)
    alphas = sorted({_alpha_key(a) for a in students["alpha"]})
    markers = {a: _ALPHA_MARKERS[i % len(_ALPHA_MARKERS)] for i, a in enumerate(alphas)}

    fig, ax = _new_figure(7.2, 4.6)
    ax.xaxis.grid(True, color="#e6e9ee", linewidth=0.8)
    for cond in conditions:
        for a in alphas:
            sub = students[(students["condition"] == cond) & (students["alpha"].map(_alpha_key) == a)]
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
                label=f"{_text(cond, 24)}, α={_fmt_alpha(a if math.isfinite(a) else np.nan)}",
            )
    t_acc = _teacher_value(runs, "accuracy")
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
    return _save(fig, figure_dir(out_dir) / "accuracy_vs_agreement.png")


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
