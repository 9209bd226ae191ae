"""Regenerate the study section of docs/results.md from a finished study directory.

    python scripts/results_table.py kdaudit-out/study            # rewrite docs/results.md
    python scripts/results_table.py kdaudit-out/study --check    # exit 1 if the docs differ

The section between ``<!-- study:begin -->`` and ``<!-- study:end -->`` in docs/results.md becomes
the block of the study's ``study.md`` between ``<!-- study-table:begin -->`` and
``<!-- study-table:end -->`` (the provenance line with date, machine, command and wall time, the
cross-setup answer, the table and the pooled estimates; headings one level down), followed by the
forest plots, which are copied to docs/assets/study/ (next to the page). So the figures in the
docs are those of an actual run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "results.md"
BEGIN, END = "<!-- study:begin -->", "<!-- study:end -->"
REPORT_LINK = re.compile(r"\[([^\]]*)\]\([^)\s]*report\.html\)")
BLOCK_BEGIN, BLOCK_END = "<!-- study-table:begin -->", "<!-- study-table:end -->"
FIGURES = (
    (
        "forest_delta.png",
        "Δ+ and Δ− per setup with 95 % intervals, grouped by modality; the diamonds are the pooled estimates",
    ),
    ("forest_h.png", "h+ and h− per setup with 95 % intervals; the diamonds are the pooled estimates"),
)


def study_block(study_dir: Path) -> str:
    md = (study_dir / "study.md").read_text()
    if BLOCK_BEGIN not in md or BLOCK_END not in md:
        raise SystemExit(f"{study_dir / 'study.md'} has no {BLOCK_BEGIN} … {BLOCK_END} block")
    return md.split(BLOCK_BEGIN, 1)[1].split(BLOCK_END, 1)[0].strip("\n")


def demoted(block: str) -> str:
    """The block's headings one level down (they sit under a section of the docs page), and the
    links to each setup's report.html as plain names (those reports stay in the study directory)."""
    block = REPORT_LINK.sub(r"\1", block)
    return "\n".join("#" + line if line.startswith("#") else line for line in block.split("\n"))


def section(study_dir: Path, assets: Path | None) -> str:
    """The docs' study section; the forest plots are copied into ``assets`` (None: not copied)."""
    parts = [BEGIN, demoted(study_block(study_dir)), ""]
    for name, caption in FIGURES:
        found = sorted(study_dir.glob(f"**/{name}"))
        found = [p for p in found if "jobs" not in p.relative_to(study_dir).parts]
        if not found:
            continue
        if assets is not None:
            assets.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found[0], assets / name)
        parts.append(f"![{caption}](assets/study/{name})")
        parts.append("")
    parts.append(END)
    return "\n".join(parts)


def render(doc: str, new_section: str) -> str:
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return head + new_section + tail
    title, _, body = doc.partition("\n")
    return f"{title}\n\n{new_section}\n{body}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study_dir", type=Path)
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--check", action="store_true", help="exit 1 when the docs differ from the study")
    args = ap.parse_args(argv)
    doc = args.doc.read_text()
    assets = None if args.check else args.doc.parent / "assets" / "study"
    new = render(doc, section(args.study_dir, assets))
    if args.check:
        if new != doc:
            print(
                f"{args.doc} differs from {args.study_dir / 'study.md'}; run scripts/results_table.py", file=sys.stderr
            )
            return 1
        return 0
    args.doc.write_text(new)
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
