"""The documentation: the site builds without warnings, the protocol has every section the code
cites, and the README stays short with links that resolve."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 200

#: "PROTOCOL §4", "PROTOCOL §4–5", "PROTOCOL §3-§5": the section numbers cited.
_CITE = re.compile(r"PROTOCOL ?§ ?(\d+)(?: ?[–-] ?§? ?(\d+))?")
#: an inline Markdown link or image: [text](target) / ![alt](target)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _cited_sections() -> dict[int, list[str]]:
    """Section number -> the places in src/ that cite it."""
    cited: dict[int, list[str]] = {}
    for path in sorted((ROOT / "src").rglob("*.py")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in _CITE.finditer(line):
                first = int(m.group(1))
                last = int(m.group(2)) if m.group(2) else first
                for n in range(first, last + 1):
                    cited.setdefault(n, []).append(f"{path.relative_to(ROOT)}:{lineno}")
    return cited


def _protocol_sections() -> set[int]:
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    return {int(n) for n in re.findall(r"^## (\d+)\. \S", text, flags=re.M)}


def _without_code(text: str) -> str:
    """Markdown text without fenced code blocks and inline code spans (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def test_protocol_has_every_section_the_code_cites() -> None:
    cited = _cited_sections()
    assert cited, "no PROTOCOL §N citation found in src/: the pattern no longer matches the code"
    sections = _protocol_sections()
    missing = {n: places for n, places in cited.items() if n not in sections}
    assert not missing, f"docs/protocol.md has no '## N.' heading for sections cited in src/: {missing}"


def test_protocol_sections_are_numbered_in_order() -> None:
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. \S", text, flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1)), numbers


def test_readme_is_short() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}); move detail into docs/"


def test_readme_relative_links_resolve() -> None:
    targets = _LINK.findall(_without_code(README.read_text(encoding="utf-8")))
    relative = [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    assert relative, "README.md links to no file: the docs should be reachable from it"
    broken = [t for t in relative if not (ROOT / t.split("#", 1)[0]).exists()]
    assert not broken, f"README.md links to files that do not exist: {broken}"


def test_readme_links_every_docs_page() -> None:
    text = README.read_text(encoding="utf-8")
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    unlinked = [p for p in pages if f"(docs/{p}" not in text]
    assert not unlinked, f"README.md's 'Where the rest lives' does not link: {unlinked}"


def test_mkdocs_nav_lists_every_page() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["docs_dir"] == "docs"
    nav = {next(iter(item.values())) for item in config["nav"]}
    pages = {p.name for p in DOCS.glob("*.md")}
    assert nav == pages, f"in docs/ but not in the nav: {pages - nav}; in the nav but not in docs/: {nav - pages}"


def test_citation_matches_the_package() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert cff["cff-version"] == "1.2.0"
    assert cff["title"] == project["name"] == "kdaudit"
    assert cff["version"] == project["version"]
    license_ = project["license"]
    assert cff["license"] == (license_["text"] if isinstance(license_, dict) else license_) == "MIT"
    paper = cff["preferred-citation"]
    assert paper["type"] == "article"
    assert "2510.12615" in paper["url"]
    assert "Copyright (c) 2026 the kdaudit authors" in (ROOT / "LICENSE").read_text(encoding="utf-8")


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """Broken links or anchors, pages missing from the nav, bad config: all fail the strict build."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[dev]' installs it)")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site" / "protocol" / "index.html").is_file()


def test_results_page_holds_a_generated_study_section() -> None:
    """docs/results.md's cross-setup table is a study's study.md block (scripts/results_table.py):
    it states the run's date, machine, command and wall time, has a row per setup, and its forest
    plots are in docs/assets/study/."""
    text = (DOCS / "results.md").read_text(encoding="utf-8")
    assert "<!-- study:begin -->" in text and "<!-- study:end -->" in text
    section = text.split("<!-- study:begin -->", 1)[1].split("<!-- study:end -->", 1)[0]
    assert "kdaudit study" in section and "wall time" in section, "the section names its command and wall time"
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| Setup")]
    assert len(rows) >= 10, "a row per named setup"
    assert "report.html" not in section, "the setups' own reports stay in the study directory"
    for image in _LINK.findall(section):
        assert (DOCS / image).is_file(), image
