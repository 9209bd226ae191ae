"""The report's "What is copied" section: which of the teacher's mistakes the KD students copy.

:func:`write_copied` reads the per-sample shares of ``copied.csv``
(:func:`kdaudit.analysis.copied.follow_shares`), compares KD at each α with SIDDO
(:func:`kdaudit.analysis.copied.compare_shares`) and writes, per α, a heat map of the difference
KD − SIDDO over the (true class, teacher label) pairs (``figures/copied_kd_<α>.png`` and
``.svg``) and a thumbnail of each example KD copies most (``figures/examples/test-<i>.png``,
from the test inputs when they are given). Its :class:`CopiedReport` carries the section's blocks:
the largest α in full, every other α in a collapsed group; :func:`copied_section` makes the
section of them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdaudit.analysis.copied import (
    BASE_COLUMNS,
    CONTROL,
    NO_CONTROL,
    NO_WRONG,
    Copying,
    compare_shares,
    difference_matrix,
    parse_group_name,
)
from kdaudit.report.document import (
    Block,
    Details,
    Example,
    Examples,
    FigureInfo,
    Figures,
    Glossary,
    Group,
    Note,
    Section,
    Table,
)
from kdaudit.report.formatting import fmt_int
from kdaudit.report.plotting import alpha_text, figure_dir, label_text, new_figure, save_png
from kdaudit.report.thumbnails import render_input, write_png

__all__ = ["CopiedReport", "CopiedSource", "copied_section", "write_copied"]

TOP_PAIRS = 10
TOP_EXAMPLES = 8
KD = "kd"
SECTION_ID = "copied"
SECTION_TITLE = "What is copied"


@dataclass
class CopiedSource:
    """What the section is made of: ``copied.csv`` as a table, the data's info (``data.json``:
    class names, standardisation, tokenizer) and, when available, the test inputs as the models
    saw them (N × ...), indexed by the ``sample`` column."""

    follow: pd.DataFrame
    info: Mapping[str, Any] = field(default_factory=dict)
    inputs: np.ndarray | None = None
    n_test: int | None = None


@dataclass
class CopiedReport:
    """The section's blocks and the files written for it (by their name under the audit directory)."""

    blocks: list[Block]
    paths: dict[str, Path] = field(default_factory=dict)


def copied_section(report: CopiedReport | None) -> Section | None:
    """The "What is copied" section (None without a report)."""
    return None if report is None else Section(SECTION_ID, SECTION_TITLE, list(report.blocks))


# --------------------------------------------------------------------------------------------
# terms and labels
# --------------------------------------------------------------------------------------------
def _terms(n_wrong: int, n_test: int | None) -> Glossary:
    of = f" ({fmt_int(n_wrong)} of {fmt_int(n_test)} here)" if n_test else f" ({fmt_int(n_wrong)} here)"
    return Glossary(
        [
            ("Teacher-wrong samples (𝒲)", f"The test samples whose teacher prediction is not the true label{of}."),
            ("Copies", "A student copies a mistake when it outputs the teacher's wrong label on a sample of 𝒲."),
            (
                "SIDDO",
                "The control: students with the same initialisation as the KD students but a different data "
                "order, trained on the labels alone, so they show how often a mistake is made untaught.",
            ),
            (
                "Share and difference",
                "A share is the fraction of a group's students (over its seeds) that copy; the difference "
                "KD − SIDDO is the copying that distillation adds (positive: KD copies more).",
            ),
        ]
    )


def _class_names(info: Mapping[str, Any], follow: pd.DataFrame) -> list[str]:
    n = int(info.get("num_classes") or 0)
    if len(follow):
        n = max(n, int(follow["label"].max()) + 1, int(follow["teacher_label"].max()) + 1)
    classes = info.get("classes")
    if isinstance(classes, Sequence) and not isinstance(classes, str) and len(classes) >= n:
        return [str(c) for c in classes[:n]]
    return [str(i) for i in range(n)]


def _pair_text(names: Sequence[str], y: int, t: int) -> str:
    return f"{names[y]} → {names[t]}"


def _share(x: float) -> str:
    return f"{x:.2f}"


def _diff(x: float) -> str:
    return f"{x:+.2f}"


# --------------------------------------------------------------------------------------------
# the heat map
# --------------------------------------------------------------------------------------------
def plot_heatmap(copying: Copying, names: Sequence[str], group: Judged, out_dir: Path) -> list[Path]:
    """The difference KD − SIDDO per (true class, teacher label) pair as a heat map centred on 0
    (blue: KD copies less, red: more; blank: the teacher never made that mistake); PNG and SVG."""
    n = len(names)
    matrix = difference_matrix(copying.pairs, n)
    side = min(11.0, 3.2 + 0.32 * n)
    fig, ax = new_figure(side + 1.2, side)
    ax.grid(False)
    bound = max(0.05, float(np.nanmax(np.abs(matrix)))) if np.isfinite(matrix).any() else 1.0
    cmap = _diverging()
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=-bound, vmax=bound, aspect="equal")
    size = max(5.0, min(9.0, 110.0 / max(n, 1)))
    ticks = [label_text(c, 14) for c in names]
    ax.set_xticks(range(n), ticks, rotation=90 if n > 10 or max(map(len, ticks), default=0) > 3 else 0, fontsize=size)
    ax.set_yticks(range(n), ticks, fontsize=size)
    ax.set_xlabel("Teacher's (wrong) label")
    ax.set_ylabel("True class")
    if n <= 12:
        for (y, t), v in np.ndenumerate(matrix):
            if np.isfinite(v):
                colour = "white" if abs(v) > 0.6 * bound else "#1f2937"
                ax.text(t, y, f"{v:+.2f}", ha="center", va="center", fontsize=size - 1, color=colour)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("KD − SIDDO share copying the teacher", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    ax.set_title(f"KD {group.where} against SIDDO", fontsize=10)
    stem = f"copied_kd_{group.slug}"
    png = save_png(fig, figure_dir(out_dir) / f"{stem}.png")  # and the SVG beside it
    svg = png.with_suffix(".svg")
    return [png, svg] if svg.is_file() else [png]


def _diverging() -> Any:
    from matplotlib import colormaps

    return colormaps["RdBu_r"].with_extremes(bad="#dcdfe4")


# --------------------------------------------------------------------------------------------
# the blocks of one α
# --------------------------------------------------------------------------------------------
def _pairs_table(copying: Copying, names: Sequence[str]) -> Table:
    top = copying.top_pairs(TOP_PAIRS)
    rows = [
        [
            _pair_text(names, int(r.label), int(r.teacher_label)),
            fmt_int(r.samples),
            _share(r.kd_share),
            _share(r.siddo_share),
            _diff(r.difference),
        ]
        for r in top.itertuples(index=False)
    ]
    return Table(
        headers=["True class → teacher label", "Samples", "KD share", "SIDDO share", "Difference"],
        numeric=[False, True, True, True, True],
        rows=rows,
        highlight=[False] * len(rows),
    )


def _thumbnail(
    out_dir: Path, sample: int, source: CopiedSource, written: dict[str, Path]
) -> tuple[Path | None, str, str | None]:
    """Test sample ``sample`` shown as itself: its thumbnail (written once) and link, or its text."""
    if source.inputs is None or not 0 <= sample < len(source.inputs):
        return None, "", None
    rendered = render_input(np.asarray(source.inputs[sample]), source.info)
    if rendered is None or rendered.picture is None:
        return None, "", None if rendered is None else rendered.text
    link = f"figures/examples/test-{sample}.png"
    if link not in written:
        written[link] = write_png(out_dir / link, rendered.picture)
    return written[link], link, None


def _examples(
    copying: Copying, names: Sequence[str], group: Judged, source: CopiedSource, out_dir: Path, written: dict[str, Path]
) -> Examples:
    items = []
    for r in copying.top_samples(TOP_EXAMPLES).itertuples(index=False):
        sample = int(r.sample)
        image, link, text = _thumbnail(out_dir, sample, source, written)
        items.append(
            Example(
                id=f"ex-kd-{group.slug.replace('.', '-')}-{sample}",
                title=f"Test sample {sample}",
                lines=[
                    f"true: {names[int(r.label)]} · teacher: {names[int(r.teacher_label)]}",
                    f"KD {_share(r.kd_share)} · SIDDO {_share(r.siddo_share)} ({_diff(r.difference)})",
                ],
                image=image,
                link=link,
                text=text,
            )
        )
    return Examples(f"The test samples KD copies most {group.where}", items)


def _alpha_blocks(
    copying: Copying, names: Sequence[str], group: Judged, source: CopiedSource, out_dir: Path, written: dict[str, Path]
) -> list[Block]:
    files = plot_heatmap(copying, names, group, out_dir)
    for p in files:
        written[f"figures/{p.name}"] = p
    png = files[0]
    figure = FigureInfo(
        png.stem,
        png,
        f"What KD copies {group.where}: KD − SIDDO share per mistake",
        "Per (true class, teacher's wrong label) pair: the share of KD students that output the teacher's wrong "
        "label minus the share of SIDDO students that do, over the pair's test samples; red: KD copies more, "
        "blue: less, blank: the teacher never made that mistake.",
    )
    n = len(copying.pairs)
    count = f"top {min(TOP_PAIRS, n)} of {n} pair{'s' if n != 1 else ''}"
    table = Details(f"Most-copied mistakes, KD {group.where}", count, _pairs_table(copying, names), open=True)
    return [Figures([figure]), table, _examples(copying, names, group, source, out_dir, written)]


# --------------------------------------------------------------------------------------------
# the whole section
# --------------------------------------------------------------------------------------------
def is_control(condition: str) -> bool:
    """SIDDO, LS and the random controls: the groups a KD group is judged against, not judged."""
    return condition in (CONTROL, "ls", "teacher") or condition.startswith("rcd")


@dataclass(frozen=True)
class Judged:
    """A group of students set against SIDDO: ``where`` completes "KD …" in titles, ``slug`` names files."""

    where: str
    slug: str


def _kd_columns(follow: pd.DataFrame) -> list[tuple[Judged, str]]:
    """The KD groups and their columns, the largest α first. Groups named without α (the students
    of ``kdaudit compare``, given by the user) are judged as they come, in column order."""
    found, named = [], []
    for col in follow.columns[len(BASE_COLUMNS) :]:
        cond, alpha = parse_group_name(str(col))
        if cond == KD and math.isfinite(alpha):
            found.append((alpha, str(col)))
        elif not math.isfinite(alpha) and not is_control(cond):
            named.append(str(col))
    judged = [(Judged(f"at α = {alpha_text(a)}", alpha_text(a)), col) for a, col in sorted(found, reverse=True)]
    return judged + [(Judged(f"(students {col!r})", re.sub(r"[^A-Za-z0-9_.-]+", "-", col)), col) for col in named]


def _comparisons(source: CopiedSource) -> tuple[list[tuple[Judged, Copying]], str]:
    """KD against SIDDO at each α (largest first), or why there is none."""
    f = source.follow
    kd = _kd_columns(f)
    if not kd:
        return [], "There are no KD students in this audit, so there is nothing to compare."
    if len(f) == 0:
        return [], NO_WRONG[0].upper() + NO_WRONG[1:] + "."
    if CONTROL not in f.columns:
        return [], NO_CONTROL[0].upper() + NO_CONTROL[1:] + "."
    out = []
    for group, col in kd:
        columns = (f["sample"], f["label"], f["teacher_label"], f[col], f[CONTROL])
        copying = compare_shares(*(c.to_numpy() for c in columns))
        if not copying.available:
            return [], copying.reason[0].upper() + copying.reason[1:] + "."
        out.append((group, copying))
    return out, ""


def write_copied(out_dir: Path | str, source: CopiedSource) -> CopiedReport:
    """Write the section's figures and thumbnails into ``out_dir/figures`` and return its blocks."""
    out = Path(out_dir)
    follow = source.follow
    blocks: list[Block] = [_terms(len(follow), source.n_test)]
    comparisons, reason = _comparisons(source)
    if not comparisons:
        return CopiedReport(blocks + [Note(reason)])
    names = _class_names(source.info, follow)
    if source.inputs is None:
        blocks.append(Note("The test inputs are not available, so the examples show their test indices only."))
    written: dict[str, Path] = {}
    for i, (group, copying) in enumerate(comparisons):
        inner = _alpha_blocks(copying, names, group, source, out, written)
        if i == 0:
            blocks += inner
        else:
            n = len(copying.pairs)
            blocks.append(Group(f"KD {group.where}", f"{n} pair{'s' if n != 1 else ''}", inner))
    return CopiedReport(blocks, written)
