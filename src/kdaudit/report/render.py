"""The audit report (PROTOCOL §6): ``report.md``, a self-contained ``report.html`` and figures.

:func:`write_report` is the entry point. The report opens with its headline (the answer in one
sentence) and contents, then the verdicts (one block per
:class:`~kdaudit.analysis.audit.Verdict`), the figures, the tables (summary, transfer, fidelity,
the significance tests), the settings, "Reproduce and cite" and a plain-words "How to read this
report" section (the order is that of :mod:`~kdaudit.report.sections`). Every figure is written
as a PNG with an SVG beside it, which both reports link.

The report is built once as a :class:`~kdaudit.report.document.Document`
(:mod:`~kdaudit.report.sections`) and written twice: ``report.html``
(:mod:`~kdaudit.report.html_renderer`) needs nothing but itself: the CSS is inline, every figure
is embedded as a ``data:image/png;base64`` ``<img>`` with alt text and an id
(``fig-<figure name>``), and there are no scripts and no external URLs. Every string that comes
from the data is escaped. ``report.md`` (:mod:`~kdaudit.report.markdown_renderer`) carries the
same content and links the figures as ``figures/NAME.png``. The verdict section has the id
``verdicts``. Both files are written atomically (:func:`kdaudit.io.write_text`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kdaudit.analysis.audit import AuditTables
from kdaudit.io import write_text
from kdaudit.report.copied import CopiedSource, write_copied
from kdaudit.report.document import FigureInfo
from kdaudit.report.figures import write_figures
from kdaudit.report.formatting import fmt_num, fmt_p
from kdaudit.report.html_renderer import render_html_document
from kdaudit.report.markdown_renderer import render_markdown_document
from kdaudit.report.prose import figure_info, security_figure_info
from kdaudit.report.sections import build_document

__all__ = [
    "write_report",
    "render_html",
    "render_markdown",
    "FigureInfo",
    "figure_info",
    "fmt_num",
    "fmt_p",
]


def render_html(
    tables: AuditTables,
    spec: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    figures: Sequence[FigureInfo] = (),
    security: Any = None,
    security_figures: Sequence[FigureInfo] = (),
) -> str:
    """The self-contained HTML report as a string (figures read from their paths and embedded)."""
    return render_html_document(build_document(tables, spec, meta, figures, security, security_figures))


def render_markdown(
    tables: AuditTables,
    spec: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    figures: Sequence[FigureInfo] = (),
    security: Any = None,
    security_figures: Sequence[FigureInfo] = (),
) -> str:
    """The Markdown report; figures are linked as ``figures/NAME.png``."""
    return render_markdown_document(build_document(tables, spec, meta, figures, security, security_figures))


def write_report(
    out_dir: Path | str,
    tables: AuditTables,
    spec: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    security: Any = None,
    copied: CopiedSource | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` into ``out_dir``.

    ``meta`` may hold title, setup, dataset, model, n_train, n_test, teacher_accuracy,
    n_teacher_wrong, n_models, wall_time_s, precision, kdaudit_version, torch_version and
    created; missing keys are left out of the report. ``spec`` (the resolved spec) is shown
    in an appendix. Returns the written paths by name: ``"report.md"``, ``"report.html"`` and
    ``"figures/<NAME>.png"`` for each figure. ``copied`` (``copied.csv`` with the data's info and test
    inputs) adds the "What is copied" section, its figures and thumbnails.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig_paths = list(write_figures(out, tables))
    infos = figure_info(fig_paths, str((getattr(tables, "statistics", None) or {}).get("standard", "kdaudit")))
    sec_infos: list[FigureInfo] = []
    if security is not None:
        from .security_figures import write_security_figures

        sec_paths = write_security_figures(security.runs, security.meta, out)
        sec_infos = security_figure_info(sec_paths, security.meta)
        fig_paths += sec_paths
    copied_report = write_copied(out, copied) if copied is not None else None
    doc = build_document(tables, spec, meta, infos, security, sec_infos, copied_report)
    written: dict[str, Path] = {
        "report.md": write_text(out / "report.md", render_markdown_document(doc)),
        "report.html": write_text(out / "report.html", render_html_document(doc)),
    }
    for p in fig_paths:
        written[f"figures/{Path(p).name}"] = Path(p)
        if Path(p).with_suffix(".svg").is_file():
            written[f"figures/{Path(p).stem}.svg"] = Path(p).with_suffix(".svg")
    written.update(copied_report.paths if copied_report is not None else {})
    return written
