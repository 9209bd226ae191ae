"""The report of a sweep: CSV tables, figures, ``sweep.md`` and a self-contained ``sweep.html``.

:func:`write_sweep_report` is the entry point. ``sweep.html`` needs nothing but itself: inline
CSS, figures embedded as ``data:image/png;base64``, no scripts and no external URLs; its only
links are the relative ones to each point's ``report.html``. Every string from the data is
escaped. Every file is written to a temporary name and moved into place.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kdaudit.analysis.audit import TEST_METRICS
from kdaudit.analysis.sweep import SweepPoint, SweepTables, group_name, sweep_axis
from kdaudit.errors import KdauditError
from kdaudit.report.figures import (
    _ALPHA_MARKERS,
    _DPI,
    METRIC_LABELS,
    _colours,
    _save,
    _style_axes,
    _text,
    condition_order,
    figure_dir,
)
from kdaudit.report.render import (
    CSS,
    DASH,
    FigureInfo,
    Table,
    _e,
    _footer,
    _html_figures,
    _html_table,
    _m,
    _md_table,
    _missing,
    fmt_alpha,
    fmt_int,
    fmt_num,
    fmt_p,
    fmt_signed,
)

__all__ = ["render_sweep_html", "render_sweep_markdown", "write_sweep_figures", "write_sweep_report"]

_DELTAS = (("delta_pos", "sem_pos", "Δ+  (teacher right)"), ("delta_neg", "sem_neg", "Δ−  (teacher wrong)"))
_CAPTIONS = {
    "sweep_metrics": (
        "Metrics across the sweep",
        "Mean ± SEM over seeds of every student metric at each point, one line per "
        "condition and α; the dashed line is the teacher.",
    ),
    "sweep_transfer": (
        "Δ+ and Δ− across the sweep",
        "Change in agreement with the teacher relative to SIDDO where the teacher is "
        "right (Δ+) and wrong (Δ−); error bars √(SEM_X² + SEM_SIDDO²).",
    ),
    "scaling": (
        "Scaling with the student's size",
        "Mean ± SEM of the student loss and agreement against the number of student "
        "parameters N (log–log), with the fitted power laws a·N^b.",
    ),
    "teacher_loss": (
        "Transfer against the teacher's loss",
        "Δ+ and Δ− of each point against its teacher's test loss (± SEM).",
    ),
}


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
def _grid(n: int, ncols: int, width: float = 3.6, height: float = 2.9) -> tuple[Figure, list[Any]]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols + 1.8, height * nrows), dpi=_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]
    for ax in axes:
        _style_axes(ax)
    return fig, axes


def _keys(df: pd.DataFrame) -> list[tuple[str, float]]:
    """(condition, α) of the student rows: conditions in display order, then by α."""
    df = df.loc[df["condition"].astype(str) != "teacher"]
    order = {c: i for i, c in enumerate(condition_order(df["condition"]))}
    keys = {(str(c), float(a)) for c, a in zip(df["condition"], df["alpha"], strict=True)}
    return sorted(keys, key=lambda k: (order[k[0]], k[1]))


def _styles(keys: Sequence[tuple[str, float]]) -> dict[tuple[str, float], dict[str, Any]]:
    colours = _colours(condition_order(c for c, _ in keys))
    alphas = sorted({a for _, a in keys})
    return {
        (c, a): {
            "color": colours[c],
            "marker": _ALPHA_MARKERS[alphas.index(a) % len(_ALPHA_MARKERS)],
            "linestyle": ("-", "--", ":", "-.")[alphas.index(a) % 4],
            "label": _text(group_name(c, a), 28),
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
        ax.set_xticklabels([_text(p.label, 18) for p in points], rotation=30, ha="right", fontsize=7.5)
    else:
        ax.set_xlabel(_text(path, 50), fontsize=8.5)
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
    return _atomic(path, lambda tmp: _save(fig, tmp))


def write_sweep_figures(out_dir: Path, tables: SweepTables, points: Sequence[SweepPoint]) -> list[Path]:
    """``sweep_metrics.png``, ``sweep_transfer.png`` and, where their tables are not empty,
    ``scaling.png`` and ``teacher_loss.png`` in ``out_dir/figures``; returns the written paths."""
    fdir = figure_dir(out_dir)
    path, xs = sweep_axis(points)
    xmap = {p.label: x for p, x in zip(points, xs, strict=True)}
    written: list[Path] = []
    m = tables.metrics
    metrics = [k for k in TEST_METRICS if k in set(m["metric"])]
    if metrics:
        styles = _styles(_keys(m))
        fig, axes = _grid(len(metrics), 4)
        for ax, metric in zip(axes, metrics, strict=True):
            sub = m.loc[m["metric"] == metric]
            for key, style in styles.items():
                g = _rows(sub, *key)
                _line(ax, g["point"].map(xmap), g["mean"], g["sem"], style)
            t = sub.loc[sub["condition"] == "teacher"].sort_values("point", key=lambda s: s.map(xmap))
            if len(t):
                ax.plot(t["point"].map(xmap), t["mean"], "--", color="#111827", linewidth=1.1, label="teacher")
            ax.set_title(_text(METRIC_LABELS.get(metric, metric), 44), fontsize=9, loc="left")
            _x_axis(ax, points, path, xs)
        written.append(_finish(fig, axes, "Student metrics across the sweep (mean ± SEM)", fdir / "sweep_metrics.png"))
    tr = tables.transfer
    if len(tr):
        styles = _styles(_keys(tr))
        for name, x_of, title in (
            ("sweep_transfer", lambda g: g["point"].map(xmap), "Δ± against SIDDO across the sweep (± SEM)"),
            ("teacher_loss", lambda g: g["teacher_loss"], "Δ± against the teacher's test loss (± SEM)"),
        ):
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
                    _x_axis(ax, points, path, xs)
                else:
                    ax.set_xlabel("Teacher test loss", fontsize=8.5)
            written.append(_finish(fig, axes, title, fdir / f"{name}.png"))
    if len(tables.scaling):
        sizes = {p.label: float(p.student_params) for p in points}
        styles = _styles(_keys(tables.scaling))
        fig, axes = _grid(2, 2, 4.2, 3.4)
        for ax, quantity in zip(axes, ("loss", "agreement"), strict=True):
            sub = m.loc[m["metric"] == quantity]
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
            ax.set_title(_text(METRIC_LABELS.get(quantity, quantity), 44), fontsize=9.5, loc="left")
        written.append(_finish(fig, axes, "Scaling with the student's size (log–log)", fdir / "scaling.png"))
    return written


# --------------------------------------------------------------------------------------------
# tables and text
# --------------------------------------------------------------------------------------------
def _pm(value: Any, sem: Any, signed: bool = True) -> str:
    text = fmt_signed(value) if signed else fmt_num(value)
    s = fmt_num(sem)
    return text if DASH in (text, s) else f"{text} ± {s}"


def _transfer_table(tr: pd.DataFrame) -> Table:
    rows = [
        [
            str(r["point"]),
            str(r["condition"]),
            fmt_alpha(r["alpha"]),
            _pm(r["delta_pos"], r["sem_pos"]),
            _pm(r["delta_neg"], r["sem_neg"]),
            fmt_signed(r["h_pos"], 3),
            fmt_signed(r["h_neg"], 3),
            fmt_p(r["p_pos"]),
            fmt_p(r["p_neg"]),
            DASH if _missing(r["negative_asymmetric_payoff"]) else str(r["negative_asymmetric_payoff"]),
        ]
        for _, r in tr.iterrows()
    ]
    return Table(
        [
            "Point",
            "Condition",
            "α",
            "Δ+ ± SEM",
            "Δ− ± SEM",
            "h+",
            "h−",
            "p (Δ+)",
            "p (Δ−)",
            "Negative asymmetric payoff",
        ],
        [False, False] + [True] * 7 + [False],
        rows,
        [row[-1].strip().lower() == "yes" for row in rows],
        badge_cols=(9,),
    )


def _scaling_table(sc: pd.DataFrame) -> Table:
    rows = [
        [
            str(r["condition"]),
            fmt_alpha(r["alpha"]),
            str(r["quantity"]),
            _pm(r["exponent"], r["exponent_se"]),
            fmt_num(r["prefactor"]),
            fmt_num(r["r2"], 3),
            fmt_int(r["n"]),
        ]
        for _, r in sc.iterrows()
    ]
    return Table(
        ["Condition", "α", "Quantity", "Exponent ± SE", "Prefactor", "r²", "n"],
        [False, True, False, True, True, True, True],
        rows,
        [False] * len(rows),
    )


def _trend_table(tt: pd.DataFrame) -> Table:
    rows = [
        [
            str(r["condition"]),
            fmt_alpha(r["alpha"]),
            str(r["quantity"]),
            fmt_signed(r["rho"], 2),
            fmt_p(r["p_value"]),
            fmt_int(r["n_points"]),
            fmt_signed(r["rho_seeds"], 2),
            fmt_p(r["p_seeds"]),
            fmt_int(r["n_seeds"]),
            "yes" if bool(r["significant"]) else "no",
        ]
        for _, r in tt.iterrows()
    ]
    return Table(
        [
            "Condition",
            "α",
            "Quantity",
            "ρ (points)",
            "p (points)",
            "Points",
            "ρ (seeds)",
            "p (seeds)",
            "Seeds",
            "Significant",
        ],
        [False, True, False] + [True] * 6 + [False],
        rows,
        [row[-1] == "yes" for row in rows],
    )


def _sections(tables: SweepTables) -> list[tuple[str, str, Table | None]]:
    return [
        (
            "Transfer",
            "Δ± against SIDDO at each point (± SEM), h± as shares of the control's headroom, "
            "Mann–Whitney p; highlighted: a negative asymmetric payoff.",
            _transfer_table(tables.transfer) if len(tables.transfer) else None,
        ),
        (
            "Scaling",
            "Power laws value = prefactor · N^exponent of the per-seed student values against "
            "the number of student parameters N (needs at least 3 student sizes).",
            _scaling_table(tables.scaling) if len(tables.scaling) else None,
        ),
        (
            "Teacher-loss trend",
            "Spearman ρ of each quantity against the teacher's test loss, over the "
            "points and over the individual students; highlighted: significant.",
            _trend_table(tables.trend) if len(tables.trend) else None,
        ),
    ]


def _link(point: SweepPoint) -> str | None:
    """The relative URL of the point's report, or None for a path that is not relative."""
    rel = PurePosixPath(str(point.path).replace("\\", "/"))
    if not str(point.path) or rel.is_absolute() or ":" in str(point.path):
        return None
    return quote(f"{rel.as_posix()}/report.html")


def _point_cells(tables: SweepTables, p: SweepPoint) -> list[str]:
    return [
        p.label,
        *(str(p.values.get(k, DASH)) for k in tables.swept),
        fmt_num(p.teacher_accuracy),
        fmt_num(p.teacher_loss),
        fmt_int(p.student_params),
        fmt_int(p.teacher_params),
    ]


def _point_headers(tables: SweepTables) -> list[str]:
    return [
        "Point",
        *tables.swept,
        "Teacher accuracy",
        "Teacher loss",
        "Student parameters",
        "Teacher parameters",
        "Report",
    ]


def _swept_values(tables: SweepTables, points: Sequence[SweepPoint]) -> list[tuple[str, str]]:
    return [(k, ", ".join(dict.fromkeys(str(p.values.get(k, DASH)) for p in points))) for k in tables.swept]


def _title(meta: Mapping[str, Any]) -> str:
    return str(meta["title"]) if not _missing(meta.get("title")) else "kdaudit sweep"


def _facts(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (str(k).replace("_", " ").capitalize(), str(v))
        for k, v in meta.items()
        if k not in {"title", "created", "kdaudit_version"}
        and not _missing(v)
        and not isinstance(v, Mapping | list | tuple)
    ]


def render_sweep_html(
    tables: SweepTables, points: Sequence[SweepPoint], meta: Mapping[str, Any], figures: Sequence[FigureInfo] = ()
) -> str:
    """The self-contained HTML report of a sweep (figures read from their paths and embedded)."""
    title = _title(meta)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>\n{CSS}\n</style>",
        "</head>",
        "<body>",
        "<main>",
        f'<header class="top"><h1>{_e(title)}</h1><p>Sweep of {len(points)} kdaudit audits</p></header>',
        '<section id="swept"><h2>Swept fields</h2><dl class="facts">',
    ]
    for label, value in _swept_values(tables, points) + _facts(meta):
        out.append(f'<div class="fact"><dt>{_e(label)}</dt><dd>{_e(value)}</dd></div>')
    out.append('</dl></section><section id="points"><h2>Points</h2><div class="table-wrap"><table><thead><tr>')
    out += [f'<th scope="col">{_e(h)}</th>' for h in _point_headers(tables)]
    out.append("</tr></thead><tbody>")
    for p in points:
        link = _link(p)
        report = f'<a href="{_e(link)}">report</a>' if link else _e(p.path or DASH)
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in _point_cells(tables, p)) + f"<td>{report}</td></tr>")
    out.append("</tbody></table></div></section>")
    out.append('<section id="findings"><h2>Findings</h2>')
    sentences = tables.sentences or ["No scaling or teacher-loss trend could be estimated from this sweep."]
    out.append("<ul>" + "".join(f"<li>{_e(s)}</li>" for s in sentences) + "</ul></section>")
    for name, note, table in _sections(tables):
        out.append(f'<section><h2>{_e(name)}</h2><p class="note">{_e(note)}</p>')
        out.append(_html_table(table) if table else '<p class="note">Not available for this sweep.</p>')
        out.append("</section>")
    if figures:
        out.append('<section id="figures"><h2>Figures</h2><div class="figures">')
        out.append(_html_figures(figures) + "</div></section>")
    out += [f"<footer>{_e(_footer(meta))}</footer>", "</main>", "</body>", "</html>", ""]
    return "\n".join(out)


def render_sweep_markdown(
    tables: SweepTables, points: Sequence[SweepPoint], meta: Mapping[str, Any], figures: Sequence[FigureInfo] = ()
) -> str:
    """The Markdown report of a sweep; figures are linked as ``figures/NAME.png``."""
    out = [f"# {_m(_title(meta))}", "", f"Sweep of {len(points)} kdaudit audits", "", "## Swept fields", ""]
    out += [f"- **{_m(k)}:** {_m(v)}" for k, v in _swept_values(tables, points) + _facts(meta)]
    headers = _point_headers(tables)
    out += [
        "",
        "## Points",
        "",
        "| " + " | ".join(_m(h) for h in headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    for p in points:
        link = _link(p)
        report = f"[report]({link})" if link else _m(p.path or DASH)
        out.append("| " + " | ".join(_m(c) for c in _point_cells(tables, p)) + f" | {report} |")
    out += ["", "## Findings", ""]
    out += [f"- {_m(s)}" for s in tables.sentences] or ["No scaling or teacher-loss trend could be estimated."]
    for name, note, table in _sections(tables):
        out += ["", f"## {_m(name)}", "", _m(note), "", _md_table(table) if table else "Not available for this sweep."]
    if figures:
        out += ["", "## Figures"]
        for f in figures:
            out += ["", f"### {_m(f.title)}", "", f"![{_m(f.title)}](figures/{f.path.name})", "", f"*{_m(f.caption)}*"]
    out += ["", "---", "", _m(_footer(meta)), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
def _atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` through a temporary file in its directory and :func:`os.replace`."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KdauditError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def write_sweep_report(out_dir: Path, tables: SweepTables, points: list[SweepPoint], meta: dict) -> dict[str, Path]:
    """Write the sweep's CSV tables, figures, ``sweep.md`` and ``sweep.html`` into ``out_dir``.

    Returns the written paths by name: ``sweep_metrics.csv``, ``sweep_transfer.csv``,
    ``scaling.csv``, ``trend.csv``, ``sweep.md``, ``sweep.html`` and ``figures/<NAME>.png``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, df in (
        ("sweep_metrics.csv", tables.metrics),
        ("sweep_transfer.csv", tables.transfer),
        ("scaling.csv", tables.scaling),
        ("trend.csv", tables.trend),
    ):
        text = df.to_csv(index=False)
        written[name] = _atomic(out / name, lambda tmp, t=text: tmp.write_text(t, encoding="utf-8"))
    fig_paths = write_sweep_figures(out, tables, points)
    infos = [FigureInfo(p.stem, p, *_CAPTIONS[p.stem]) for p in fig_paths]
    for name, render in (("sweep.md", render_sweep_markdown), ("sweep.html", render_sweep_html)):
        text = render(tables, points, meta, infos)
        written[name] = _atomic(out / name, lambda tmp, t=text: tmp.write_text(t, encoding="utf-8"))
    for p in fig_paths:
        written[f"figures/{p.name}"] = p
    return written
