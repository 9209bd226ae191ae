"""The report of a study: ``study.csv``, ``pooled.csv``, ``study.json``, the forest plots,
``study.md`` and a self-contained ``study.html``.

:func:`write_study_report` is the entry point. ``study.html`` needs nothing but itself: inline
CSS, figures embedded as ``data:image/png;base64``, no scripts and no external URLs; its only
links are the relative ones to each setup's ``report.html`` (and the figures' SVGs). Every string
from the data is escaped. In ``study.md`` the provenance, the cross-setup answer and the two
tables sit between :data:`MARK_BEGIN` and :data:`MARK_END`, so that a script can copy that block
into the docs. Every file is written atomically (:mod:`kdaudit.io`); the figures are drawn by
:mod:`kdaudit.report.study_figures`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import pandas as pd

from kdaudit.analysis.compare import json_safe
from kdaudit.analysis.study import POOLED_COLUMNS, QUANTITIES, STUDY_COLUMNS, StudyTables
from kdaudit.analysis.verdicts import display_name
from kdaudit.io import write_text
from kdaudit.report.document import FigureInfo, Table, badge_kind
from kdaudit.report.formatting import DASH, fmt_alpha, fmt_duration, fmt_int, fmt_num, fmt_p, fmt_pct, missing, number
from kdaudit.report.html_renderer import html_badge, html_figures, html_page_start, html_table, html_text
from kdaudit.report.markdown_renderer import md_image, md_table, md_text
from kdaudit.report.plotting import alpha_key, condition_order
from kdaudit.report.prose import footer
from kdaudit.report.study_figures import write_forest_plots

__all__ = [
    "MARK_BEGIN",
    "MARK_END",
    "POOLED_NOTE",
    "ci_text",
    "render_study_html",
    "render_study_markdown",
    "study_json",
    "write_forest_plots",
    "write_study_report",
]

MARK_BEGIN = "<!-- study-table:begin -->"
MARK_END = "<!-- study-table:end -->"

_VERDICTS = (
    ("knowledge_transfer", "Transfer"),
    ("beyond_regularisation", "Beyond reg."),
    ("negative_transfer", "Neg. transfer"),
    ("asymmetry", "Asymmetry"),
    ("negative_asymmetric_payoff", "Payoff"),
)
_QUANTITY_LABELS = {"delta_pos": "Δ+ (points)", "delta_neg": "Δ− (points)", "h_pos": "h+", "h_neg": "h−"}
_METHODS = {
    "hksj": "HKSJ",
    "hksj-untruncated": "HKSJ (untruncated)",
    "dl": "DL",
    "single": "single setup",
    "none": "none",
}

SETUPS_NOTE = (
    "One row per setup and α. Δ+ / Δ−: KD minus SIDDO agreement with the teacher on the test samples it "
    "gets right / wrong, in percentage points, with its 95 % interval (estimate ± t·SE on Welch degrees of "
    "freedom); h+ / h−: the same as a share of the headroom SIDDO left; p: the knowledge-transfer test's "
    "adjusted p-value. Highlighted rows show a negative asymmetric payoff."
)
POOLED_NOTE = (
    "Random-effects pooling across setups: between-setup variance τ² by DerSimonian–Laird (DL), the 95 % "
    "interval and p by Hartung–Knapp (HKSJ, its scale q* floored at 1) on k − 1 degrees of freedom (DL: a normal "
    "interval; single setup: "
    "its own interval); the setups are treated as independent. τ² is in points² for Δ; I² is the share of the "
    "variation between setups that is not sampling error, Q Cochran's heterogeneity statistic."
)
"""The sentence under the pooled table."""


# --------------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------------
def _fixed(value: float, digits: int, sign: bool = False) -> str:
    r = round(value, digits) + 0.0  # no "-0.0"
    return f"{r:+.{digits}f}" if sign else f"{r:.{digits}f}"


def ci_text(estimate: Any, low: Any, high: Any, scale: float = 100.0, digits: int = 1) -> str:
    """``+1.2 [0.4, 2.0]``: the estimate signed, its interval, each times ``scale`` with ``digits``
    decimals; the estimate alone without both ends, ``—`` without an estimate."""
    e, lo, hi = number(estimate), number(low), number(high)
    if e is None:
        return DASH
    text = _fixed(scale * e, digits, sign=True)
    if lo is None or hi is None:
        return text
    return f"{text} [{_fixed(scale * lo, digits)}, {_fixed(scale * hi, digits)}]"


def _signed(x: Any, digits: int = 3) -> str:
    v = number(x)
    return DASH if v is None else _fixed(v, digits, sign=True)


def _word(x: Any) -> str:
    return DASH if missing(x) else str(x)


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def _ordered(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` with ``columns`` first, in that order (missing ones empty), then any others."""
    df = df if df is not None else pd.DataFrame()
    return df.reindex(columns=[*columns, *(c for c in df.columns if c not in columns)])


def _several(df: pd.DataFrame) -> bool:
    return "condition" in df.columns and df["condition"].astype(str).nunique() > 1


def _sorted_rows(rows: pd.DataFrame) -> list[Any]:
    order = condition_order(rows["condition"]) if "condition" in rows.columns else []

    def key(r: Any) -> tuple[Any, ...]:
        cond = str(r.get("condition"))
        return (
            _word(r.get("modality")).lower(),
            _word(r.get("setup")).lower(),
            _word(r.get("setup")),
            order.index(cond) if cond in order else len(order),
            alpha_key(r.get("alpha")),
        )

    return sorted((r for _, r in rows.iterrows()), key=key)


def _report_link(d: Any) -> str | None:
    """The relative, URL-quoted link to a setup's ``report.html``; None for no or an absolute path."""
    if missing(d):
        return None
    text = str(d).replace("\\", "/")
    if PurePosixPath(text).is_absolute() or ":" in text:
        return None
    return quote(f"{PurePosixPath(text).as_posix()}/report.html")


def _setup_table(rows: pd.DataFrame) -> tuple[Table, list[str | None], dict[int, str]]:
    """The setups table (the setup's name in the first column), each row's report link, and the
    verdict field of each badge column."""
    several = _several(rows)
    headers = ["Setup", "Modality", "Dataset", "Architecture", *(["Condition"] if several else []), "α"]
    headers += ["Teacher acc. %", "Wrong", *(label for _, label in _VERDICTS)]
    headers += ["Δ+ [95 % CI]", "Δ− [95 % CI]", "h+", "h−", "p (transfer, adj.)"]
    first_verdict = headers.index(_VERDICTS[0][1])
    badges = {first_verdict + i: name for i, (name, _) in enumerate(_VERDICTS)}
    numeric = [h not in ("Setup", "Modality", "Dataset", "Architecture", "Condition") for h in headers]
    for i in badges:
        numeric[i] = False
    cells, links, highlight = [], [], []
    for r in _sorted_rows(rows):
        cells.append(
            [
                _word(r.get("setup")),
                _word(r.get("modality")),
                _word(r.get("dataset")),
                _word(r.get("architecture")),
                *([display_name(_word(r.get("condition")))] if several else []),
                fmt_alpha(r.get("alpha")),
                fmt_pct(r.get("teacher_accuracy"), 2),
                fmt_int(r.get("n_teacher_wrong")),
                *(_word(r.get(name)) for name, _ in _VERDICTS),
                ci_text(r.get("delta_pos"), r.get("delta_pos_ci_low"), r.get("delta_pos_ci_high")),
                ci_text(r.get("delta_neg"), r.get("delta_neg_ci_low"), r.get("delta_neg_ci_high")),
                _signed(r.get("h_pos")),
                _signed(r.get("h_neg")),
                fmt_p(r.get("p_transfer")),
            ]
        )
        links.append(_report_link(r.get("dir")))
        highlight.append(_word(r.get("negative_asymmetric_payoff")).strip().lower() == "yes")
    return Table(headers, numeric, cells, highlight, badge_cols=tuple(badges)), links, badges


def _pooled_table(pooled: pd.DataFrame) -> Table:
    several = _several(pooled)
    order = condition_order(pooled["condition"]) if "condition" in pooled.columns else []
    quantities = {q: i for i, q in enumerate(QUANTITIES)}

    def key(r: Any) -> tuple[Any, ...]:
        cond, q = str(r.get("condition")), str(r.get("quantity"))
        return (order.index(cond) if cond in order else len(order), alpha_key(r.get("alpha")), quantities.get(q, 9), q)

    cells = []
    for r in sorted((r for _, r in pooled.iterrows()), key=key):
        delta = str(r.get("quantity")).startswith("delta")
        scale, digits = (100.0, 1) if delta else (1.0, 3)
        tau2 = number(r.get("tau2"))
        q = fmt_num(r.get("q"), 2)
        cells.append(
            [
                *([display_name(_word(r.get("condition")))] if several else []),
                fmt_alpha(r.get("alpha")),
                _QUANTITY_LABELS.get(str(r.get("quantity")), _word(r.get("quantity"))),
                fmt_int(r.get("k")),
                ci_text(r.get("estimate"), r.get("ci_low"), r.get("ci_high"), scale, digits),
                fmt_p(r.get("p_value")),
                DASH if tau2 is None else fmt_num(tau2 * scale * scale),
                fmt_pct(r.get("i2"), 1),
                q if q == DASH else f"{q} ({fmt_p(r.get('q_p'))})",
                _METHODS.get(str(r.get("method")), _word(r.get("method"))),
            ]
        )
    headers = [*(["Condition"] if several else []), "α", "Quantity", "k", "Estimate [95 % CI]"]
    headers += ["p", "τ²", "I² %", "Q (p)", "Method"]
    numeric = [h not in ("Condition", "Quantity", "Method") for h in headers]
    return Table(headers, numeric, cells, [False] * len(cells))


def _failed_table(failed: pd.DataFrame) -> Table:
    cells = [[_word(r.get("setup")), _word(r.get("error"))] for _, r in failed.iterrows()]
    return Table(["Setup", "Error"], [False, False], cells, [False] * len(cells))


# --------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------
def _title(meta: Mapping[str, Any]) -> str:
    return _word(meta.get("title")) if not missing(meta.get("title")) else "kdaudit study"


def _provenance(meta: Mapping[str, Any], text: Callable[[Any], str], code: Callable[[str], str]) -> str:
    """The provenance paragraph, its data written by ``text`` and the command by ``code``."""

    def get(key: str) -> str:
        return "not recorded" if missing(meta.get(key)) else str(meta[key])

    wall = "not recorded" if number(meta.get("wall_time_s")) is None else fmt_duration(meta["wall_time_s"])
    out = f"Run on {text(get('date'))} on {text(get('machine'))}"
    if not missing(meta.get("command")):
        out += f" with {code(str(meta['command']))}"
    out += f"; wall time {text(wall)}. {text(fmt_int(meta.get('n_setups')))} setups run"
    out += f", {text(fmt_int(meta.get('n_failed', 0)))} failed"
    if not missing(meta.get("n_models")):
        out += f"; {text(fmt_int(meta['n_models']))} models, of which {text(fmt_int(meta.get('trained_now')))} "
        out += "trained now"
    out += "."
    sets = meta.get("sets")
    extra = []
    if not missing(meta.get("preset")):
        extra.append(f"Preset {text(meta['preset'])}")
    if isinstance(sets, list | tuple) and sets:
        extra.append("sets " + text(", ".join(str(s) for s in sets)))
    versions = [
        f"{name} {text(meta[key])}"
        for key, name in (("kdaudit", "kdaudit"), ("torch", "torch"))
        if not missing(meta.get(key))
    ]
    extra += versions
    return out + (" " + "; ".join(extra) + "." if extra else "")


def _md_code(s: str) -> str:
    """``s`` as Markdown inline code (on one line, fenced by more backticks than it holds)."""
    s = " ".join(s.split())
    fence = "`" * (max((len(m) for m in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _footer(meta: Mapping[str, Any]) -> str:
    return footer(
        {
            "kdaudit_version": meta.get("kdaudit_version", meta.get("kdaudit")),
            "created": meta.get("created", meta.get("date")),
        }
    )


def _answer(tables: StudyTables) -> list[str]:
    return list(tables.sentences) or ["No cross-setup answer: no setup finished its audit."]


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------
def _md_setups(rows: pd.DataFrame) -> list[str]:
    t, links, _ = _setup_table(rows)
    out = [
        "| " + " | ".join(md_text(h) for h in t.headers) + " |",
        "| " + " | ".join("---:" if n else "---" for n in t.numeric) + " |",
    ]
    for cells, link, hl in zip(t.rows, links, t.highlight, strict=True):
        md = [md_text(c) for c in cells]
        if link:
            md[0] = f"[{md[0]}]({link})"
        if hl:
            md[0] = f"**{md[0]}**"
        out.append("| " + " | ".join(md) + " |")
    return out


def render_study_markdown(tables: StudyTables, meta: Mapping[str, Any], figures: Sequence[FigureInfo] = ()) -> str:
    """The Markdown report of a study; figures are linked as ``figures/NAME.png``."""
    out = [f"# {md_text(_title(meta))}", "", MARK_BEGIN, "", _provenance(meta, md_text, _md_code), ""]
    out += ["## Cross-setup answer", "", *(f"- {md_text(s)}" for s in _answer(tables)), ""]
    out += ["## Setups", ""]
    if len(tables.rows):
        out += [md_text(SETUPS_NOTE), "", *_md_setups(tables.rows), ""]
    else:
        out += ["No setup finished its audit.", ""]
    out += ["## Pooled across setups", ""]
    if len(tables.pooled):
        out += [md_table(_pooled_table(tables.pooled)), ""]
    else:
        out += ["Nothing to pool.", ""]
    out += [md_text(POOLED_NOTE), "", MARK_END]
    if figures:
        out += ["", "## Forest plots"]
        for f in figures:
            out += ["", f"### {md_text(f.title)}", "", md_image(f), "", f"*{md_text(f.caption)}*"]
    if len(tables.failed):
        out += ["", "## Failed setups", "", md_table(_failed_table(tables.failed))]
    out += ["", "---", "", md_text(_footer(meta)), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------
def _html_setups(rows: pd.DataFrame) -> str:
    t, links, badges = _setup_table(rows)
    out = ['<div class="table-wrap">', "<table>", "<thead><tr>"]
    for h, num in zip(t.headers, t.numeric, strict=True):
        cls = ' class="num"' if num else ""
        out.append(f'<th scope="col"{cls}>{html_text(h)}</th>')
    out.append("</tr></thead><tbody>")
    for cells, link, hl in zip(t.rows, links, t.highlight, strict=True):
        tds = []
        for i, (cell, num) in enumerate(zip(cells, t.numeric, strict=True)):
            if i == 0 and link:
                tds.append(f'<td class="nw"><a href="{html_text(link)}">{html_text(cell)}</a></td>')
            elif i in badges:
                tds.append(f"<td>{html_badge(badge_kind(badges[i], cell), cell)}</td>")
            else:
                tds.append(f'<td class="{"num" if num else "nw"}">{html_text(cell)}</td>')
        out.append(('<tr class="hl">' if hl else "<tr>") + "".join(tds) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _section(ident: str, title: str, body: Sequence[str]) -> list[str]:
    return [f'<section id="{ident}"><h2>{html_text(title)}</h2>', *body, "</section>"]


def render_study_html(tables: StudyTables, meta: Mapping[str, Any], figures: Sequence[FigureInfo] = ()) -> str:
    """The self-contained HTML report of a study (figures read from their paths and embedded)."""
    title = html_text(_title(meta))
    provenance = _provenance(meta, html_text, lambda s: f"<code>{html_text(s)}</code>")
    out = [
        *html_page_start(_title(meta)),
        f'<header class="top"><h1>{title}</h1><p id="provenance">{provenance}</p></header>',
    ]
    answer = "<ul>" + "".join(f"<li>{html_text(s)}</li>" for s in _answer(tables)) + "</ul>"
    out += _section("answer", "Cross-setup answer", [answer])
    if len(tables.rows):
        setups = [f'<p class="note">{html_text(SETUPS_NOTE)}</p>', _html_setups(tables.rows)]
    else:
        setups = ['<p class="note">No setup finished its audit.</p>']
    out += _section("setups", "Setups", setups)
    pooled = (
        [html_table(_pooled_table(tables.pooled))] if len(tables.pooled) else ['<p class="note">Nothing to pool.</p>']
    )
    out += _section("pooled", "Pooled across setups", [*pooled, f'<p class="note">{html_text(POOLED_NOTE)}</p>'])
    if figures:
        out += _section("figures", "Forest plots", ['<div class="figures">', html_figures(figures), "</div>"])
    if len(tables.failed):
        out += _section("failed", "Failed setups", [html_table(_failed_table(tables.failed))])
    out += [f"<footer>{html_text(_footer(meta))}</footer>", "</main>", "</body>", "</html>", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------
def _records(df: pd.DataFrame, columns: Sequence[str]) -> list[dict[str, Any]]:
    df = _ordered(df, columns)
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")


def study_json(tables: StudyTables, meta: Mapping[str, Any]) -> str:
    """Meta, sentences, rows, pooled and failed as strict JSON (NaN as null)."""
    doc = {
        "meta": dict(meta),
        "sentences": list(tables.sentences),
        "rows": _records(tables.rows, STUDY_COLUMNS),
        "pooled": _records(tables.pooled, POOLED_COLUMNS),
        "failed": _records(tables.failed, ["setup", "error"]),
    }
    return json.dumps(json_safe(doc), indent=2, allow_nan=False, ensure_ascii=False, default=str) + "\n"


def write_study_report(out_dir: Path, tables: StudyTables, meta: Mapping[str, Any]) -> dict[str, Path]:
    """Write the study's tables, figures, ``study.md`` and ``study.html`` into ``out_dir``.

    Returns the written paths by name: ``study.csv``, ``pooled.csv``, ``study.json``,
    ``study.md``, ``study.html`` and ``figures/<NAME>.png`` (none for a study without rows).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {
        "study.csv": write_text(out / "study.csv", _ordered(tables.rows, STUDY_COLUMNS).to_csv(index=False)),
        "pooled.csv": write_text(out / "pooled.csv", _ordered(tables.pooled, POOLED_COLUMNS).to_csv(index=False)),
        "study.json": write_text(out / "study.json", study_json(tables, meta)),
    }
    figures = write_forest_plots(out, tables.rows, tables.pooled)
    written["study.md"] = write_text(out / "study.md", render_study_markdown(tables, meta, figures))
    written["study.html"] = write_text(out / "study.html", render_study_html(tables, meta, figures))
    for f in figures:
        written[f"figures/{f.path.name}"] = f.path
    return written
