"""A :class:`~kdaudit.report.document.Document` as one self-contained HTML page.

The CSS is inline, every figure is embedded as a ``data:image/png;base64`` ``<img>`` with alt
text and an id (``fig-<figure name>``) and a relative link to its SVG beside the PNG, and there
are no scripts and no external URLs. The headline (``id="headline"``) is the first text after
the title, followed by the contents (``id="contents"``). Every
string is escaped; text from the data also has its quotes escaped, the report's own fixed
wording (:attr:`Note.fixed`) keeps them.

Layout: a block that lists items in a container (facts, figures, glossary, code) puts the
container's tags on the lines of its first and last item, and a section holding only such a
block puts its own tags there too.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdaudit.report.css import CSS
from kdaudit.report.document import (
    Block,
    Bullets,
    Code,
    Details,
    Document,
    Example,
    Examples,
    Facts,
    FigureInfo,
    Figures,
    Glossary,
    Group,
    Note,
    Section,
    Table,
    VerdictCard,
    Verdicts,
    badge_kind,
)
from kdaudit.report.formatting import DASH, missing

__all__ = ["html_badge", "html_figures", "html_table", "html_text", "render_html_document"]

_LEGEND = (
    '<p class="legend">'
    '<span class="badge yes">yes</span> supported by the data · '
    '<span class="badge warn">yes</span> the students copy the teacher\'s errors (for the payoff: more '
    'than its correct answers) · <span class="badge no">no</span> not supported · '
    '<span class="badge nt">not testable</span> not enough data to decide</p>'
)


def html_text(s: Any) -> str:
    """``s`` escaped for HTML text and attribute values."""
    return html.escape(str(s), quote=True)


def html_badge(kind: str, text: str) -> str:
    """A yes / no / warn / not-testable badge."""
    return f'<span class="badge {kind}">{html_text(text)}</span>'


def _cell(i: int, cell: str, num: bool, t: Table) -> str:
    if i in t.badge_cols:
        text = DASH if missing(cell) else str(cell)
        return f"<td>{html_badge(badge_kind('negative_asymmetric_payoff', text), text)}</td>"
    if num:
        return f'<td class="num">{html_text(cell)}</td>'
    if len(cell) > 60:
        return f'<td class="wide">{html_text(cell)}</td>'
    if len(cell) <= 32:
        return f'<td class="nw">{html_text(cell)}</td>'
    return f"<td>{html_text(cell)}</td>"


def html_table(t: Table) -> str:
    """A table in a scrolling wrapper; numeric columns right-aligned, highlighted rows marked."""
    out = ['<div class="table-wrap">', "<table>", "<thead><tr>"]
    for h, num in zip(t.headers, t.numeric, strict=True):
        classes = (["num"] if num else []) + (["nw"] if len(h) <= 8 else [])
        cls_attr = f' class="{" ".join(classes)}"' if classes else ""
        out.append(f'<th scope="col"{cls_attr}>{html_text(h)}</th>')
    out.append("</tr></thead><tbody>")
    for row, hl in zip(t.rows, t.highlight, strict=True):
        out.append('<tr class="hl">' if hl else "<tr>")
        out += [_cell(i, cell, num, t) for i, (cell, num) in enumerate(zip(row, t.numeric, strict=True))]
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def html_figures(figures: Sequence[FigureInfo]) -> str:
    """Each figure embedded as a data URI, with its title and caption."""
    parts = []
    for f in figures:
        parts.append("<figure>")
        parts.append(f"<h3>{html_text(f.title)}</h3>")
        parts.append(f'<img id="{html_text(f.html_id)}" src="{_data_uri(f.path)}" alt="{html_text(f.title)}">')
        svg = f.svg
        link = f' <a class="svg" href="figures/{html_text(svg.name)}">SVG</a>' if svg is not None else ""
        if f.caption or link:
            parts.append(f"<figcaption>{html_text(f.caption)}{link}</figcaption>")
        parts.append("</figure>")
    return "\n".join(parts)


def _tight(opening: str, lines: list[str], closing: str) -> list[str]:
    """``lines`` with ``opening`` on the first line and ``closing`` on the last."""
    if not lines:
        return [opening + closing]
    if len(lines) == 1:
        return [opening + lines[0] + closing]
    return [opening + lines[0], *lines[1:-1], lines[-1] + closing]


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------
def _note(b: Note) -> list[str]:
    text = html.escape(b.text, quote=False) if b.fixed else html_text(b.text)
    return [f'<p class="note">{text}</p>']


def _bullets(b: Bullets) -> list[str]:
    return ["<ul>" + "".join(f"<li>{html_text(s)}</li>" for s in b.items) + "</ul>"]


def _facts(b: Facts) -> list[str]:
    items = [f'<div class="fact"><dt>{html_text(k)}</dt><dd>{html_text(v)}</dd></div>' for k, v in b.items]
    return ['<dl class="facts">', *items, "</dl>"]


def _card(c: VerdictCard) -> list[str]:
    out = ['<article class="verdict">', f"<h3>{html_text(c.title)}</h3>", '<dl class="badges">']
    out += [f"<dt>{html_text(b.label)}</dt><dd>{html_badge(b.kind, b.text)}</dd>" for b in c.badges]
    out.append("</dl>")
    if c.sentences:
        out.append("<ul>" + "".join(f"<li>{html_text(s)}</li>" for s in c.sentences) + "</ul>")
    return out + ["</article>"]


def _verdicts(b: Verdicts) -> list[str]:
    cards = [line for c in b.cards for line in _card(c)]
    return ['<div class="verdict-grid">', *cards, "</div>", _LEGEND]


def _table(b: Table) -> list[str]:
    return [html_table(b)]


def _details(b: Details) -> list[str]:
    if b.only == "markdown":
        return []
    summary = f'{html_text(b.label)} <span class="count">{html_text(b.count)}</span>'
    return [
        f'<details class="tests"{" open" if b.open else ""}><summary>{summary}</summary>',
        html_table(b.table),
        "</details>",
    ]


def _figures(b: Figures) -> list[str]:
    return ['<div class="figures">', html_figures(b.items), "</div>"]


def _glossary(b: Glossary) -> list[str]:
    return ['<dl class="read">', *(f"<dt>{html_text(t)}</dt><dd>{html_text(d)}</dd>" for t, d in b.items), "</dl>"]


def _code(b: Code) -> list[str]:
    ident = f' id="{html_text(b.id)}"' if b.id else ""
    if not b.collapsed:
        return [
            f'<p class="code-caption">{html_text(b.summary)}</p>',
            f'<pre class="code"{ident}>{html_text(b.text)}</pre>',
        ]
    return [f"<details{ident}><summary>{html_text(b.summary)}</summary><pre>{html_text(b.text)}</pre></details>"]


def _example(e: Example) -> str:
    ident = html_text(e.id)
    if e.image is not None:
        body = f'<img id="{ident}" class="thumb" src="{_data_uri(e.image)}" alt="{html_text(e.title)}">'
    elif e.text is not None:
        body = f'<blockquote id="{ident}" class="snippet">{html_text(e.text)}</blockquote>'
    else:
        body = ""
    caption = "<br>".join([f"<strong>{html_text(e.title)}</strong>", *(html_text(line) for line in e.lines)])
    return f'<figure class="example">{body}<figcaption>{caption}</figcaption></figure>'


def _examples(b: Examples) -> list[str]:
    return [f"<h3>{html_text(b.title)}</h3>", '<div class="examples">', *(_example(e) for e in b.items), "</div>"]


def _group(b: Group) -> list[str]:
    summary = f'{html_text(b.label)} <span class="count">{html_text(b.count)}</span>'
    inner = [line for block in b.blocks for line in _block(block)]
    return [f'<details class="group"{" open" if b.open else ""}><summary>{summary}</summary>', *inner, "</details>"]


_BLOCKS: dict[type, Callable[[Any], list[str]]] = {
    Note: _note,
    Bullets: _bullets,
    Facts: _facts,
    Verdicts: _verdicts,
    Table: _table,
    Details: _details,
    Figures: _figures,
    Glossary: _glossary,
    Code: _code,
    Examples: _examples,
    Group: _group,
}
_CONTAINERS = (Facts, Figures, Glossary, Code)


def _contained(b: Block) -> bool:
    return isinstance(b, _CONTAINERS) and not (isinstance(b, Code) and not b.collapsed)


def _block(b: Block) -> list[str]:
    lines = _BLOCKS[type(b)](b)
    return _tight(lines[0], lines[1:-1], lines[-1]) if _contained(b) and len(lines) > 1 else lines


def _section(s: Section) -> list[str]:
    if s.labelled:
        opening = [f'<section id="{html_text(s.id)}" aria-labelledby="{html_text(s.id)}-h">']
        opening.append(f'<h2 id="{html_text(s.id)}-h">{html_text(s.title)}</h2>')
    else:
        opening = [f'<section id="{html_text(s.id)}"><h2>{html_text(s.title)}</h2>']
    if len(s.blocks) == 1 and _contained(s.blocks[0]):
        return opening[:-1] + _tight(opening[-1], _BLOCKS[type(s.blocks[0])](s.blocks[0]), "</section>")
    return opening + [line for b in s.blocks for line in _block(b)] + ["</section>"]


def _header(doc: Document) -> list[str]:
    """The title, the headline, the subtitle and the contents."""
    out = ['<header class="top">', f"<h1>{html_text(doc.title)}</h1>"]
    if doc.headline:
        out.append(f'<p id="headline" class="headline">{html_text(doc.headline)}</p>')
    out += [f'<p class="subtitle">{html_text(doc.subtitle)}</p>', "</header>"]
    if doc.contents and doc.sections:
        links = "".join(f'<li><a href="#{html_text(s.id)}">{html_text(s.title)}</a></li>' for s in doc.sections)
        out.append(f'<nav id="contents" aria-label="Contents"><ol>{links}</ol></nav>')
    return out


def html_page_start(title: str) -> list[str]:
    """A self-contained page up to its ``<main>``: the head with the inline CSS; ``title`` escaped."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html_text(title)}</title>",
        f"<style>\n{CSS}\n</style>",
        "</head>",
        "<body>",
        "<main>",
    ]


def render_html_document(doc: Document) -> str:
    """The whole page."""
    parts = [*html_page_start(doc.title), *_header(doc)]
    for s in doc.sections:
        parts += _section(s)
    parts += [f"<footer>{html_text(doc.footer)}</footer>", "</main>", "</body>", "</html>", ""]
    return "\n".join(parts)
