"""The report of a sweep: CSV tables, figures, ``sweep.md`` and a self-contained ``sweep.html``.

:func:`write_sweep_report` is the entry point. ``sweep.html`` needs nothing but itself: inline
CSS, figures embedded as ``data:image/png;base64``, no scripts and no external URLs; its only
links are the relative ones to each point's ``report.html``. Every string from the data is
escaped. Every file is written atomically (:mod:`kdaudit.io`); the figures are drawn by
:mod:`kdaudit.report.sweep_figures`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import pandas as pd

from kdaudit.analysis.sweep import SweepPoint, SweepTables
from kdaudit.io import write_text
from kdaudit.report.css import CSS
from kdaudit.report.document import FigureInfo, Table
from kdaudit.report.formatting import DASH, fmt_alpha, fmt_int, fmt_num, fmt_p, fmt_signed, missing
from kdaudit.report.html_renderer import html_figures, html_table, html_text
from kdaudit.report.markdown_renderer import md_image, md_table, md_text
from kdaudit.report.prose import SWEEP_CAPTIONS, footer
from kdaudit.report.sweep_figures import write_sweep_figures

__all__ = ["render_sweep_html", "render_sweep_markdown", "write_sweep_figures", "write_sweep_report"]


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
            DASH if missing(r["negative_asymmetric_payoff"]) else str(r["negative_asymmetric_payoff"]),
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
    return str(meta["title"]) if not missing(meta.get("title")) else "kdaudit sweep"


def _facts(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (str(k).replace("_", " ").capitalize(), str(v))
        for k, v in meta.items()
        if k not in {"title", "created", "kdaudit_version"}
        and not missing(v)
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
        f"<title>{html_text(title)}</title>",
        f"<style>\n{CSS}\n</style>",
        "</head>",
        "<body>",
        "<main>",
        f'<header class="top"><h1>{html_text(title)}</h1><p>Sweep of {len(points)} kdaudit audits</p></header>',
        '<section id="swept"><h2>Swept fields</h2><dl class="facts">',
    ]
    for label, value in _swept_values(tables, points) + _facts(meta):
        out.append(f'<div class="fact"><dt>{html_text(label)}</dt><dd>{html_text(value)}</dd></div>')
    out.append('</dl></section><section id="points"><h2>Points</h2><div class="table-wrap"><table><thead><tr>')
    out += [f'<th scope="col">{html_text(h)}</th>' for h in _point_headers(tables)]
    out.append("</tr></thead><tbody>")
    for p in points:
        link = _link(p)
        report = f'<a href="{html_text(link)}">report</a>' if link else html_text(p.path or DASH)
        out.append(
            "<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in _point_cells(tables, p)) + f"<td>{report}</td></tr>"
        )
    out.append("</tbody></table></div></section>")
    out.append('<section id="findings"><h2>Findings</h2>')
    sentences = tables.sentences or ["No scaling or teacher-loss trend could be estimated from this sweep."]
    out.append("<ul>" + "".join(f"<li>{html_text(s)}</li>" for s in sentences) + "</ul></section>")
    for name, note, table in _sections(tables):
        out.append(f'<section><h2>{html_text(name)}</h2><p class="note">{html_text(note)}</p>')
        out.append(html_table(table) if table else '<p class="note">Not available for this sweep.</p>')
        out.append("</section>")
    if figures:
        out.append('<section id="figures"><h2>Figures</h2><div class="figures">')
        out.append(html_figures(figures) + "</div></section>")
    out += [f"<footer>{html_text(footer(meta))}</footer>", "</main>", "</body>", "</html>", ""]
    return "\n".join(out)


def render_sweep_markdown(
    tables: SweepTables, points: Sequence[SweepPoint], meta: Mapping[str, Any], figures: Sequence[FigureInfo] = ()
) -> str:
    """The Markdown report of a sweep; figures are linked as ``figures/NAME.png``."""
    out = [f"# {md_text(_title(meta))}", "", f"Sweep of {len(points)} kdaudit audits", "", "## Swept fields", ""]
    out += [f"- **{md_text(k)}:** {md_text(v)}" for k, v in _swept_values(tables, points) + _facts(meta)]
    headers = _point_headers(tables)
    out += [
        "",
        "## Points",
        "",
        "| " + " | ".join(md_text(h) for h in headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    for p in points:
        link = _link(p)
        report = f"[report]({link})" if link else md_text(p.path or DASH)
        out.append("| " + " | ".join(md_text(c) for c in _point_cells(tables, p)) + f" | {report} |")
    out += ["", "## Findings", ""]
    out += [f"- {md_text(s)}" for s in tables.sentences] or ["No scaling or teacher-loss trend could be estimated."]
    for name, note, table in _sections(tables):
        out += [
            "",
            f"## {md_text(name)}",
            "",
            md_text(note),
            "",
            md_table(table) if table else "Not available for this sweep.",
        ]
    if figures:
        out += ["", "## Figures"]
        for f in figures:
            out += ["", f"### {md_text(f.title)}", "", md_image(f), "", f"*{md_text(f.caption)}*"]
    out += ["", "---", "", md_text(footer(meta)), ""]
    return "\n".join(out)


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
        written[name] = write_text(out / name, df.to_csv(index=False))
    fig_paths = write_sweep_figures(out, tables, points)
    infos = [FigureInfo(p.stem, p, *SWEEP_CAPTIONS[p.stem]) for p in fig_paths]
    written["sweep.md"] = write_text(out / "sweep.md", render_sweep_markdown(tables, points, meta, infos))
    written["sweep.html"] = write_text(out / "sweep.html", render_sweep_html(tables, points, meta, infos))
    for p in fig_paths:
        written[f"figures/{p.name}"] = p
    return written
