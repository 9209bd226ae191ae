"""The audit report as a :class:`~kdaudit.report.document.Document`, section by section.

Order: the verdicts, the setup facts, the summary, the transfer table, the security results (when
audited), the significance tests, the figures, "How to read this report" and the resolved
specification. The section ids are those of ``report.html`` (``verdicts``, ``setup``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from kdaudit.analysis.audit import AuditTables, Verdict
from kdaudit.report import prose
from kdaudit.report.document import (
    Badge,
    Block,
    Bullets,
    Code,
    Details,
    Document,
    Facts,
    FigureInfo,
    Figures,
    Glossary,
    Note,
    Section,
    VerdictCard,
    Verdicts,
    badge_kind,
)
from kdaudit.report.formatting import DASH, fmt_duration, fmt_int, fmt_num, missing, number, spec_text
from kdaudit.report.tables import security_table, summary_table, tests_tables, transfer_table

__all__ = ["build_document"]

_VERDICT_FIELDS: tuple[tuple[str, str], ...] = (
    ("knowledge_transfer", "Knowledge transfer"),
    ("beyond_regularisation", "Beyond regularisation"),
    ("negative_transfer", "Negative transfer"),
    ("asymmetry", "Asymmetry"),
    ("negative_asymmetric_payoff", "Negative asymmetric payoff"),
    ("compression", "Compression"),
)

#: meta keys shown under "Setup", in this order, with their labels.
_META_FACTS: tuple[tuple[str, str], ...] = (
    ("setup", "Setup"),
    ("dataset", "Dataset"),
    ("model", "Model"),
    ("distillation", "Distillation"),
    ("teacher_model", "Teacher model"),
    ("teacher_checkpoint", "Teacher checkpoint"),
    ("teacher_epochs", "Teacher epochs"),
    ("hint", "Hint loss"),
    ("student_params", "Student parameters"),
    ("teacher_params", "Teacher parameters"),
    ("n_train", "Training samples"),
    ("n_test", "Test samples"),
    ("teacher_accuracy", "Teacher test accuracy"),
    ("teacher_loss", "Teacher test loss"),
    ("n_teacher_wrong", "Test samples the teacher gets wrong"),
    ("n_models", "Models trained"),
    ("wall_time_s", "Wall time"),
    ("precision", "Precision"),
    ("execution", "Trained on"),
    ("kdaudit_version", "kdaudit version"),
    ("torch_version", "PyTorch version"),
    ("created", "Created"),
)
_META_NOT_FACTS = {"title"}
_COUNTS = {"n_train", "n_test", "n_teacher_wrong", "n_models", "student_params", "teacher_params"}


def build_document(
    tables: AuditTables,
    spec: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    figures: Sequence[FigureInfo] = (),
    security: Any = None,
    security_figures: Sequence[FigureInfo] = (),
) -> Document:
    """The whole report; ``security`` (the security tables, or None) adds its section."""
    meta = dict(meta or {})
    sections = [_verdicts(tables), _setup(meta, tables), _summary(tables), _transfer(tables)]
    if security is not None:
        sections.append(_security(security, security_figures))
    sections += [_tests(tables), _figures(figures), _how_to_read(), _spec(spec)]
    return Document(
        title=prose.title(meta),
        subtitle=prose.subtitle(meta),
        sections=[s for s in sections if s is not None],
        footer=prose.footer(meta),
    )


def _verdict_card(v: Verdict) -> VerdictCard:
    badges = []
    for name, label in _VERDICT_FIELDS:
        value = getattr(v, name, None)
        text = DASH if missing(value) else str(value)
        badges.append(Badge(label, text, badge_kind(name, text)))
    return VerdictCard(prose.verdict_title(v), badges, [s for s in (v.sentences or []) if not missing(s)])


def _verdicts(tables: AuditTables) -> Section:
    blocks: list[Block] = [Note(line) for line in prose.statistics_lines(tables)]
    if tables.verdicts:
        blocks.append(Verdicts([_verdict_card(v) for v in tables.verdicts]))
    else:
        blocks.append(Note(prose.NO_VERDICTS))
    return Section("verdicts", "Verdicts", blocks, labelled=True)


def _fact_text(key: str, value: Any) -> str:
    if key == "wall_time_s":
        return fmt_duration(value)
    if key == "teacher_accuracy":
        v = number(value)
        return f"{v:.4f} ({100 * v:.2f} %)" if v is not None and 0 <= v <= 1 else fmt_num(value)
    if key in _COUNTS:
        return fmt_int(value) if number(value) is not None else str(value)
    return str(value)


def _seed_range(summary: pd.DataFrame | None) -> str:
    if summary is None or len(summary) == 0 or "n" not in summary.columns:
        return ""
    n = pd.to_numeric(summary["n"], errors="coerce").dropna()
    if n.empty:
        return ""
    lo, hi = int(n.min()), int(n.max())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def _facts(meta: Mapping[str, Any], tables: AuditTables) -> list[tuple[str, str]]:
    """The known meta keys in their order, the seeds per group, then any other plain meta value."""
    facts = [(label, _fact_text(key, meta[key])) for key, label in _META_FACTS if not missing(meta.get(key))]
    seeds = _seed_range(tables.summary)
    if seeds:
        facts.append(("Seeds per group", seeds))
    known = {k for k, _ in _META_FACTS} | _META_NOT_FACTS
    for key, value in meta.items():
        if key in known or missing(value) or isinstance(value, Mapping | list | tuple):
            continue
        facts.append((str(key).replace("_", " ").capitalize(), str(value)))
    return facts


def _setup(meta: Mapping[str, Any], tables: AuditTables) -> Section | None:
    facts = _facts(meta, tables)
    return Section("setup", "Setup", [Facts(facts)]) if facts else None


def _summary(tables: AuditTables) -> Section:
    table = summary_table(tables.summary)
    return Section("summary", "Summary", [Note(prose.SUMMARY_NOTE), table or Note("No summary available.")])


def _transfer(tables: AuditTables) -> Section:
    table = transfer_table(tables.transfer)
    note = Note(prose.TRANSFER_NOTE, markdown=prose.TRANSFER_NOTE_MARKDOWN, fixed=True)
    return Section("transfer", "Transfer", [note, table or Note("No transfer table available.")])


def _security(security: Any, figures: Sequence[FigureInfo]) -> Section:
    blocks: list[Block] = [Bullets(list(security.sentences))]
    case = prose.backdoor_case(security)
    if case:
        blocks.append(Note(case))
    table = security_table(security)
    if table:
        blocks += [Note(prose.SECURITY_NOTE, markdown=prose.SECURITY_NOTE_MARKDOWN, fixed=True), table]
    for label, t, _ in tests_tables(security.tests):
        count = f"{len(t.rows)} tests · {sum(t.highlight)} significant"
        blocks.append(Details(f"Security tests: {label}", count, t, only="html"))
    if figures:
        blocks.append(Figures(figures, markdown_titles=False))
    return Section("security", "Security", blocks)


def _tests(tables: AuditTables) -> Section:
    tests = tests_tables(tables.tests)
    if not tests:
        return Section("tests", "Significance tests", [Note("No tests available.")])
    blocks: list[Block] = [Note(prose.TESTS_NOTE, markdown=prose.TESTS_NOTE + " Significant rows are in bold.")]
    for label, t, is_open in tests:
        n = len(t.rows)
        count = f"{n} test{'s' if n != 1 else ''} · {sum(t.highlight)} significant"
        blocks.append(Details(label, count, t, open=is_open))
    return Section("tests", "Significance tests", blocks)


def _figures(figures: Sequence[FigureInfo]) -> Section | None:
    return Section("figures", "Figures", [Figures(figures)]) if figures else None


def _how_to_read() -> Section:
    return Section("how-to-read", "How to read this report", [Glossary(prose.HOW_TO_READ)])


def _spec(spec: Mapping[str, Any] | None) -> Section | None:
    text = spec_text(spec)
    return Section("spec", "Specification", [Code("Resolved specification", text, "yaml")]) if text else None
