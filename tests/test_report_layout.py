"""The report's layout: the headline first, the contents, the sections in order, the tests
collapsed, an SVG beside every PNG, fidelity (not compression) and "Reproduce and cite"."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kdaudit.analysis.verdicts import headline
from kdaudit.report.markdown_renderer import md_text
from kdaudit.report.render import write_report
from test_report import META, SPEC, synthetic_tables

SECTIONS = ["verdicts", "figures", "summary", "transfer", "fidelity", "tests", "setup", "reproduce", "how-to-read"]


class _Text(HTMLParser):
    """The text of a page after its ``<h1>``, each piece with the ids of the elements around it."""

    VOID = {"br", "img", "meta", "link", "hr", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.after_h1 = False
        self.texts: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(dict(attrs).get("id") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()
        if tag == "h1":
            self.after_h1 = True

    def handle_data(self, data: str) -> None:
        if self.after_h1 and data.strip():
            self.texts.append((data.strip(), [i for i in self.stack if i]))


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    out = tmp_path_factory.mktemp("layout")
    tables = synthetic_tables()
    tables.statistics = {"standard": "kdaudit", "level": 0.05, "correction": "holm", "primary_family_size": 8}
    paths = write_report(out, tables, SPEC, META)
    return out, paths["report.html"].read_text(encoding="utf-8"), paths["report.md"].read_text(encoding="utf-8")


def test_the_headline_is_the_first_text_after_the_title(audit) -> None:
    _, doc, md = audit
    parser = _Text()
    parser.feed(doc)
    text, ids = parser.texts[0]
    assert "headline" in ids
    expected = headline(synthetic_tables().verdicts, {})
    assert text == expected and expected.startswith("KD students at α = 0.5")
    assert md.split("\n")[2] == f"**{md_text(expected)}**"  # after "# title" and a blank line


def test_contents_then_sections_in_order(audit) -> None:
    _, doc, _ = audit
    nav = re.search(r'<nav id="contents"[^>]*>(.*?)</nav>', doc, flags=re.S)
    assert nav and doc.index('id="headline"') < nav.start() < doc.index('<section id="verdicts"')
    links = re.findall(r'href="#([^"]+)"', nav.group(1))
    assert links == SECTIONS
    at = [doc.index(f'<section id="{s}"') for s in SECTIONS]
    assert at == sorted(at)


def test_terms_are_explained_before_the_verdict_cards(audit) -> None:
    _, doc, _ = audit
    verdicts = doc[doc.index('<section id="verdicts"') : doc.index('<section id="figures"')]
    terms = verdicts.index("Terms:")
    assert terms < verdicts.index('class="verdict-grid"')
    for term in ("SIDDO (Same Initialisation, Different Data Order)", "RCD (random control distillation)"):
        assert term in verdicts
    for term in ("LS (label smoothing)", "𝒞 / 𝒲", "Δ+ / Δ−", "h+ / h−", "percentage points"):
        assert term in verdicts[terms : verdicts.index('class="verdict-grid"')]


def test_every_tests_table_is_collapsed_primary_first(audit) -> None:
    _, doc, _ = audit
    tests = doc[doc.index('<section id="tests"') : doc.index('<section id="setup"')]
    opening = re.findall(r"<details\b[^>]*>", tests)
    assert opening and all(" open" not in tag for tag in opening)
    summaries = re.findall(r"<summary>([^<]*)", tests)
    assert summaries[0].startswith("Against the SIDDO control")  # no primary family in the synthetic tables


def test_an_svg_beside_every_png_linked_from_both_reports(audit) -> None:
    out, doc, md = audit
    pngs = sorted((out / "figures").glob("*.png"))
    assert pngs
    for png in pngs:
        svg = png.with_suffix(".svg")
        assert svg.is_file() and "<svg" in svg.read_text(encoding="utf-8")[:2000]
        assert f'href="figures/{svg.name}"' in doc
        assert f"](figures/{png.name})" in md and f"](figures/{svg.name})" in md


def test_units_percent_points_and_the_deciding_reading(audit) -> None:
    _, doc, _ = audit
    transfer = doc[doc.index('<section id="transfer"') : doc.index('<section id="fidelity"')]
    assert "Δ+ (points)" in transfer and "★ h− − h+ [95 % CI]" in transfer and "Δ− − Δ+ (points)" in transfer
    summary = doc[doc.index('<section id="summary"') : doc.index('<section id="transfer"')]
    assert "Agreement (%)" in summary and "Accuracy (%)" in summary


def test_fidelity_for_siddo_and_kd_side_by_side_and_no_compression(audit) -> None:
    _, doc, md = audit
    fidelity = doc[doc.index('<section id="fidelity"') : doc.index('<section id="tests"')]
    rows = re.findall(r"<tr[^>]*>\s*<td[^>]*>([^<]*)</td>", fidelity)
    assert rows[0] == "siddo" and "kd" in rows
    assert "Fidelity ≥ 0.95 bar" in doc and "SIDDO fidelity ≥ 0.95 bar" in doc
    assert "compress" not in doc.lower() and "compress" not in md.lower()


def test_compression_is_named_only_for_a_smaller_student(tmp_path) -> None:
    meta = {**META, "student_params": 1_000, "teacher_params": 50_000}
    doc = write_report(tmp_path, synthetic_tables(), SPEC, meta)["report.html"].read_text(encoding="utf-8")
    fidelity = doc[doc.index('<section id="fidelity"') : doc.index('<section id="tests"')]
    assert "compresses the teacher" in fidelity and "1,000 parameters" in fidelity


def test_reproduce_and_cite(audit) -> None:
    _, doc, md = audit
    rep = doc[doc.index('<section id="reproduce"') : doc.index('<section id="how-to-read"')]
    command = re.search(r'<pre class="code" id="command">([^<]*)</pre>', rep)
    assert command and command.group(1) == "kdaudit run digits-mlp --set protocol.seeds=3 --out &#x27;my audit&#x27;"
    assert "0123456789ab" in rep and "0123456789abc" not in rep  # the spec's hash, short
    for version in ("0.1.0", "2.3.0", "3.11.7", "2.0.0"):
        assert version in rep
    assert "@article{masonwilliams2025rethinking," in rep and "arXiv:2510.12615" in rep
    assert '<details id="spec"><summary>Resolved specification' in rep
    assert "kdaudit run digits-mlp --set protocol.seeds=3" in md and "@article{masonwilliams2025rethinking" in md


def test_without_a_command_the_report_says_so(tmp_path) -> None:
    meta = {k: v for k, v in META.items() if k != "command"}
    doc = write_report(tmp_path, synthetic_tables(), SPEC, meta)["report.html"].read_text(encoding="utf-8")
    rep = doc[doc.index('<section id="reproduce"') :]
    assert "command line was not recorded" in rep and 'id="command"' not in rep
