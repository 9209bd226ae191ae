"""A :class:`~kdaudit.report.document.Document` as Markdown.

Figures are linked as ``figures/NAME.png``, with a link to the SVG beside it. The headline, in
bold, is the first text after the title, followed by the contents (links to the section
headings). Inline text is HTML-escaped and Markdown's special characters are backslash-escaped
(:func:`md_text`); highlighted table rows are in bold.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

from kdaudit.report.document import (
    Badge,
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
)

__all__ = ["anchor", "md_image", "md_table", "md_text", "render_markdown_document"]

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#$])")


def md_text(s: Any) -> str:
    """Markdown-safe inline text: HTML-escaped, Markdown specials backslash-escaped, one line."""
    text = " ".join(str(s).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def md_table(t: Table) -> str:
    """A pipe table; numeric columns right-aligned, the first cell of a highlighted row in bold."""
    lines = [
        "| " + " | ".join(md_text(h) for h in t.headers) + " |",
        "| " + " | ".join("---:" if n else "---" for n in t.numeric) + " |",
    ]
    for row, hl in zip(t.rows, t.highlight, strict=True):
        cells = [md_text(c) for c in row]
        if hl and cells:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def md_image(f: FigureInfo) -> str:
    """The image link of a figure."""
    return f"![{md_text(f.title)}](figures/{f.path.name})"


def _badge(b: Badge) -> str:
    if b.kind in ("yes", "warn"):
        return f"**{md_text(b.text)}**"
    if b.kind == "no":
        return md_text(b.text)
    return f"*{md_text(b.text)}*"


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------
def _note(b: Note) -> list[str]:
    return [md_text(b.text if b.markdown is None else b.markdown), ""]


def _bullets(b: Bullets) -> list[str]:
    return [f"- {md_text(s)}" for s in b.items] + [""]


def _facts(b: Facts) -> list[str]:
    return [f"- **{md_text(k)}:** {md_text(v)}" for k, v in b.items] + [""]


def _card(c: VerdictCard) -> list[str]:
    out = [
        f"### {md_text(c.title)}",
        "",
        "| " + " | ".join(md_text(b.label) for b in c.badges) + " |",
        "| " + " | ".join("---" for _ in c.badges) + " |",
        "| " + " | ".join(_badge(b) for b in c.badges) + " |",
        "",
    ]
    out += [f"- {md_text(s)}" for s in c.sentences]
    return out + [""] if c.sentences else out


def _verdicts(b: Verdicts) -> list[str]:
    return [line for c in b.cards for line in _card(c)]


def _table(b: Table) -> list[str]:
    return [md_table(b), ""]


def _details(b: Details) -> list[str]:
    return [] if b.only == "html" else [f"### {md_text(b.label)}", "", md_table(b.table), ""]


def _figure(f: FigureInfo, titled: bool) -> list[str]:
    svg = f.svg
    image = [md_image(f), ""] + ([f"[SVG](figures/{svg.name})", ""] if svg is not None else [])
    if not titled:
        return image
    out = [f"### {md_text(f.title)}", "", *image]
    return out + [f"*{md_text(f.caption)}*", ""] if f.caption else out


def _figures(b: Figures) -> list[str]:
    return [line for f in b.items for line in _figure(f, b.markdown_titles)]


def _glossary(b: Glossary) -> list[str]:
    return [line for term, text in b.items for line in (f"**{md_text(term)}.** {md_text(text)}", "")]


def _code(b: Code) -> list[str]:
    fence = _fence(b.text)
    return [md_text(b.summary), "", f"{fence}{b.language}", b.text, fence, ""]


def _example(e: Example) -> str:
    if e.image is not None and e.link:
        shown = f"![{md_text(e.title)}]({e.link}) "
    elif e.text is not None:
        shown = f"“{md_text(e.text)}” "
    else:
        shown = ""
    return f"- {shown}**{md_text(e.title)}**" + "".join(f" · {md_text(line)}" for line in e.lines)


def _examples(b: Examples) -> list[str]:
    return [f"### {md_text(b.title)}", "", *(_example(e) for e in b.items), ""]


def _group(b: Group) -> list[str]:
    count = f" ({md_text(b.count)})" if b.count else ""
    return [f"### {md_text(b.label)}{count}", "", *(line for block in b.blocks for line in _block(block))]


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


def _block(b: Block) -> list[str]:
    return _BLOCKS[type(b)](b)


def _section(s: Section) -> list[str]:
    return [f"## {md_text(s.title)}", ""] + [line for b in s.blocks for line in _block(b)]


def anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def render_markdown_document(doc: Document) -> str:
    """The whole document."""
    out = [f"# {md_text(doc.title)}", ""]
    if doc.headline:
        out += [f"**{md_text(doc.headline)}**", ""]
    out += [md_text(doc.subtitle), ""]
    if doc.contents and doc.sections:
        out += [f"- [{md_text(s.title)}](#{anchor(s.title)})" for s in doc.sections] + [""]
    for s in doc.sections:
        out += _section(s)
    out += ["---", "", md_text(doc.footer), ""]
    return "\n".join(out)
