"""The report as a document: sections of blocks, built once and written as HTML and as Markdown.

A :class:`Document` holds plain, unescaped strings; each renderer
(:mod:`~kdaudit.report.html_renderer`, :mod:`~kdaudit.report.markdown_renderer`) escapes them
for its format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Badge",
    "Block",
    "Bullets",
    "Code",
    "Details",
    "Document",
    "Example",
    "Examples",
    "Facts",
    "FigureInfo",
    "Figures",
    "Format",
    "Glossary",
    "Group",
    "Note",
    "Section",
    "Table",
    "VerdictCard",
    "Verdicts",
    "badge_kind",
]

Format = Literal["html", "markdown"]
"""The formats a document is rendered to."""


@dataclass
class Table:
    """A table of formatted cells; ``highlight`` marks rows (significant tests, a negative payoff)
    and the cells of ``badge_cols`` are yes / no / not testable answers."""

    headers: list[str]
    numeric: list[bool]
    rows: list[list[str]]
    highlight: list[bool]
    badge_cols: tuple[int, ...] = ()


@dataclass
class FigureInfo:
    """A written figure file with its title and caption."""

    name: str  # file stem
    path: Path
    title: str
    caption: str

    @property
    def html_id(self) -> str:
        return "fig-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.name)

    @property
    def svg(self) -> Path | None:
        """The SVG written beside the PNG, if there is one."""
        svg = Path(self.path).with_suffix(".svg")
        return svg if svg.is_file() else None


def badge_kind(field_name: str, value: Any) -> str:
    """The badge of an answer: ``yes``, ``no``, ``nt`` (not testable) or ``warn`` (a “yes”
    that is bad news: negative transfer, a negative asymmetric payoff)."""
    s = str(value).strip().lower()
    if s == "yes":
        return "warn" if field_name in ("negative_asymmetric_payoff", "negative_transfer") else "yes"
    if s == "no":
        return "no"
    return "nt"


@dataclass
class Badge:
    """One labelled answer of a verdict."""

    label: str
    text: str
    kind: str


@dataclass
class Note:
    """A paragraph. ``markdown`` is its Markdown wording where that differs. ``fixed`` marks the
    report's own fixed wording, which HTML writes with its apostrophes and quotes as they are."""

    text: str
    markdown: str | None = None
    fixed: bool = False


@dataclass
class Bullets:
    """A bulleted list of sentences."""

    items: list[str]


@dataclass
class Facts:
    """Labelled values (the setup of an audit)."""

    items: list[tuple[str, str]]


@dataclass
class VerdictCard:
    """The verdict of one condition and α: its answers and the sentences behind them."""

    title: str
    badges: list[Badge]
    sentences: list[str]


@dataclass
class Verdicts:
    """The verdict cards, side by side in HTML (with a legend of the badges)."""

    cards: list[VerdictCard]


@dataclass
class Details:
    """A titled table, collapsible in HTML (open or closed), under a heading in Markdown;
    ``only`` names the one format that shows it (None: both)."""

    label: str
    count: str
    table: Table
    open: bool = False
    only: Format | None = None


@dataclass
class Figures:
    """Figures with titles and captions; ``markdown_titles=False`` shows the images alone in Markdown."""

    items: Sequence[FigureInfo]
    markdown_titles: bool = True


@dataclass
class Glossary:
    """Terms and their explanations."""

    items: Sequence[tuple[str, str]]


@dataclass
class Code:
    """A block of code: collapsed under ``summary`` in HTML (the resolved spec), or shown with
    ``summary`` as its caption when ``collapsed`` is False (a command, a citation); ``id`` names
    it in HTML."""

    summary: str
    text: str
    language: str
    collapsed: bool = True
    id: str = ""


@dataclass
class Example:
    """One test input shown as itself: a picture (``image``, linked from Markdown as ``link``), a
    text snippet, or neither (its title alone), with caption lines; ``id`` names its HTML element."""

    id: str
    title: str
    lines: list[str]
    image: Path | None = None
    link: str = ""
    text: str | None = None


@dataclass
class Examples:
    """Test inputs side by side under a heading."""

    title: str
    items: list[Example]


@dataclass
class Group:
    """Blocks under a label: collapsible in HTML (open or closed), under a heading in Markdown."""

    label: str
    count: str
    blocks: list[Block]
    open: bool = False


Block = Note | Bullets | Facts | Verdicts | Table | Details | Figures | Glossary | Code | Examples | Group


@dataclass
class Section:
    """A titled section with an id; ``labelled`` gives its heading an id of its own that the
    section refers to (``aria-labelledby``)."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    labelled: bool = False


@dataclass
class Document:
    """A whole report. ``headline`` is its first text after the title (the answer in one
    sentence); ``contents`` adds a list of links to the sections after it."""

    title: str
    subtitle: str
    sections: list[Section]
    footer: str
    headline: str = ""
    contents: bool = False
