"""Figures of the security section: adversarial transfer against ε, and backdoor ASR."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..analysis.stats import mean_sem as _mean_sem
from .plotting import DPI, condition_colours, condition_order, figure_dir, save_png, student_rows, style_axes


def plot_adversarial(
    runs: pd.DataFrame,
    levels: list[float],
    out_dir: Path | str,
    *,
    metric: str = "adv_follows",
    label: str = "follows the teacher's adversarial label",
    x_label: str = "ε",
    y_label: str | None = None,
) -> Path | None:
    """``figures/security_<metric>.png``: mean ± SEM of ``<metric>@ε`` against ε, one panel per α,
    one line per condition (SIDDO drawn in every panel). ``y_label`` overrides the axis label
    derived from ``label`` (needed when the share is not of all transferable examples)."""
    students = student_rows(runs)
    cols = [f"{metric}@{e:g}" for e in levels]
    if students.empty or any(c not in runs for c in cols):
        return None
    alphas = sorted(a for a in students.loc[students["condition"] != "siddo", "alpha"].unique() if np.isfinite(a))
    if not alphas:
        return None
    conds = condition_order(students["condition"].unique())
    colours = condition_colours(conds)
    fig = Figure(figsize=(3.6 * len(alphas), 3.2), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    for k, alpha in enumerate(alphas):
        ax = fig.add_subplot(1, len(alphas), k + 1)
        style_axes(ax)
        for cond in conds:
            g = (
                students.loc[students["condition"] == cond]
                if cond == "siddo"
                else students.loc[(students["condition"] == cond) & np.isclose(students["alpha"], alpha)]
            )
            if g.empty:
                continue
            stats = [_mean_sem(g[c]) for c in cols]
            ax.errorbar(
                levels,
                [m for m, _ in stats],
                yerr=[0 if not math.isfinite(s) else s for _, s in stats],
                marker="o",
                ms=4,
                lw=1.5,
                capsize=3,
                color=colours[cond],
                label=cond,
            )
        ax.set_title(f"α = {alpha:g}", fontsize=10)
        ax.set_xlabel(x_label)
        if k == 0:
            ax.set_ylabel(
                y_label
                if y_label is not None
                else f"share that {label}"
                if len(label) < 30
                else "share of transferable examples"
            )
        ax.set_ylim(-0.02, 1.02)
    fig.axes[-1].legend(fontsize=8, frameon=False, loc="best")
    fig.suptitle(f"Students on the teacher's adversarial examples: {label}", fontsize=10)
    return save_png(fig, figure_dir(out_dir) / f"security_{metric}.png")


def plot_backdoor(runs: pd.DataFrame, out_dir: Path | str) -> Path | None:
    """``figures/security_backdoor.png``: ASR mean ± SEM per condition and α; teacher dashed."""
    students = student_rows(runs)
    if students.empty or "backdoor_asr" not in runs:
        return None
    teacher = runs.loc[runs["role"] == "teacher", "backdoor_asr"]
    conds = [c for c in condition_order(students["condition"].unique())]
    colours = condition_colours(conds)
    alphas = sorted(a for a in students.loc[students["condition"] != "siddo", "alpha"].unique() if np.isfinite(a))
    fig = Figure(figsize=(min(9.0, 2.5 + 1.6 * (len(alphas) + 1)), 3.4), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    style_axes(ax)
    others = [c for c in conds if c != "siddo"]
    width = 0.8 / max(1, len(others))
    m, s = _mean_sem(students.loc[students["condition"] == "siddo", "backdoor_asr"])
    if math.isfinite(m):
        ax.bar(
            [0],
            [m],
            yerr=[s if math.isfinite(s) else 0],
            width=0.5,
            color=colours.get("siddo"),
            capsize=3,
            label="siddo",
        )
    for j, cond in enumerate(others):
        xs, ms, ss = [], [], []
        for i, alpha in enumerate(alphas):
            g = students.loc[(students["condition"] == cond) & np.isclose(students["alpha"], alpha)]
            mm, sm = _mean_sem(g["backdoor_asr"])
            xs.append(1 + i + (j - (len(others) - 1) / 2) * width)
            ms.append(mm)
            ss.append(sm if math.isfinite(sm) else 0)
        ax.bar(xs, ms, yerr=ss, width=width, color=colours[cond], capsize=3, label=cond)
    if len(teacher):
        ax.axhline(float(teacher.iloc[0]), ls="--", color="#3b4350", lw=1, label="teacher")
    ax.set_xticks(range(len(alphas) + 1), ["SIDDO"] + [f"α = {a:g}" for a in alphas])
    ax.set_ylabel("backdoor attack success rate")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, frameon=False, ncols=2)
    return save_png(fig, figure_dir(out_dir) / "security_backdoor.png")


def write_security_figures(runs: pd.DataFrame, meta: dict, out_dir: Path | str) -> list[Path]:
    written = []
    adv = meta.get("adversarial")
    if adv:
        tokens = "substitution" in adv.get("attack", "")
        x_label = "substitutions" if tokens else "ε (raw units)"
        for metric, label, y_label in (
            ("adv_follows", "copy the teacher's adversarial label", None),
            ("adv_fooled", "are fooled too", None),
            ("adv_flipped", "flip from right to wrong", "share flipped (of those right when clean)"),
        ):
            p = plot_adversarial(
                runs, adv["levels"], out_dir, metric=metric, label=label, x_label=x_label, y_label=y_label
            )
            if p is not None:
                written.append(p)
    p = plot_backdoor(runs, out_dir) if "backdoor" in meta else None
    if p is not None:
        written.append(p)
    return written
