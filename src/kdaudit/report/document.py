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
    "Facts",
    "FigureInfo",
    "Figures",
    "Format",
    "Glossary",
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
    """A block of code (the resolved spec), collapsed under ``summary`` in HTML."""

    summary: str
    text: str
    language: str


Block = Note | Bullets | Facts | Verdicts | Table | Details | Figures | Glossary | Code


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
    """A whole report."""

    title: str
    subtitle: str
    sections: list[Section]
    footer: str
