"""The audit report as a :class:`~kdaudit.report.document.Document`, section by section.

The headline (:func:`~kdaudit.analysis.verdicts.headline`) and the contents come first, then:
the verdict cards (after the terms they use), the figures, what is copied, the security results
(when audited), the tables — summary, transfer, fidelity to the teacher, the significance tests
(collapsed, primary tests first) —, the settings, "Reproduce and cite" (the command, the spec's
hash, the versions, the citation and the resolved specification) and "How to read this report".
The section ids are those of ``report.html`` (``verdicts``, ``figures``, ..., ``setup``,
``reproduce``, ``how-to-read``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from kdaudit.analysis.audit import AuditTables, Verdict
from kdaudit.analysis.verdicts import FIDELITY_BAR, headline
from kdaudit.report import prose
from kdaudit.report.copied import CopiedReport, copied_section
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
from kdaudit.report.tables import fidelity_table, security_table, summary_table, tests_tables, transfer_table

__all__ = ["build_document"]

_VERDICT_FIELDS: tuple[tuple[str, str], ...] = (
    ("knowledge_transfer", "Knowledge transfer"),
    ("beyond_regularisation", "Beyond regularisation"),
    ("negative_transfer", "Negative transfer"),
    ("asymmetry", "Asymmetry"),
    ("negative_asymmetric_payoff", "Negative asymmetric payoff"),
    ("fidelity", f"Fidelity ≥ {FIDELITY_BAR:g} bar"),
    ("control_fidelity", f"SIDDO fidelity ≥ {FIDELITY_BAR:g} bar"),
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
    ("device", "Device"),
    ("execution", "Trained on"),
)
#: meta keys shown under "Reproduce and cite", with their labels.
_RUN_FACTS: tuple[tuple[str, str], ...] = (
    ("kdaudit_version", "kdaudit version"),
    ("torch_version", "PyTorch version"),
    ("python_version", "Python version"),
    ("numpy_version", "NumPy version"),
    ("created", "Created"),
    ("reanalysed", "Re-analysed"),
)
_META_NOT_FACTS = {"title", "command", "spec_sha256"} | {k for k, _ in _RUN_FACTS}
_COUNTS = {"n_train", "n_test", "n_teacher_wrong", "n_models", "student_params", "teacher_params"}


def build_document(
    tables: AuditTables,
    spec: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    figures: Sequence[FigureInfo] = (),
    security: Any = None,
    security_figures: Sequence[FigureInfo] = (),
    copied: CopiedReport | None = None,
) -> Document:
    """The whole report; ``security`` (the security tables, or None) adds its section."""
    meta = dict(meta or {})
    sections = [_verdicts(tables), _figures(figures), copied_section(copied)]
    if security is not None:
        sections.append(_security(security, security_figures))
    sections += [_summary(tables), _transfer(tables), _fidelity(tables, meta), _tests(tables)]
    sections += [_setup(meta, tables), _reproduce(meta, spec), _how_to_read()]
    return Document(
        title=prose.title(meta),
        subtitle=prose.subtitle(meta),
        sections=[s for s in sections if s is not None],
        footer=prose.footer(meta),
        headline=headline(tables.verdicts, getattr(tables, "statistics", None) or {}),
        contents=True,
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
        blocks.append(Note(prose.TERMS, fixed=True))
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
    return Section("setup", "Settings", [Facts(facts)]) if facts else None


def _reproduce(meta: Mapping[str, Any], spec: Mapping[str, Any] | None) -> Section:
    """The command that produced the audit, the spec's hash, the versions, the citation and the spec."""
    blocks: list[Block] = []
    if missing(meta.get("command")):
        blocks.append(Note(prose.NO_COMMAND, fixed=True))
    else:
        blocks += [
            Code("The command that produced this audit:", str(meta["command"]), "sh", collapsed=False, id="command"),
            Note(prose.REPRODUCE_NOTE, fixed=True),
        ]
    facts = []
    if not missing(meta.get("spec_sha256")):
        facts.append(("spec.yaml sha256", str(meta["spec_sha256"])[:12]))
    facts += [(label, str(meta[key])) for key, label in _RUN_FACTS if not missing(meta.get(key))]
    if facts:
        blocks.append(Facts(facts))
    blocks.append(Code(prose.CITE_NOTE, prose.BIBTEX, "bibtex", collapsed=False, id="bibtex"))
    text = spec_text(spec)
    if text:
        blocks.append(Code("Resolved specification (spec.yaml)", text, "yaml", id="spec"))
    return Section("reproduce", "Reproduce and cite", blocks)


def _summary(tables: AuditTables) -> Section:
    table = summary_table(tables.summary)
    return Section("summary", "Summary", [Note(prose.SUMMARY_NOTE), table or Note("No summary available.")])


def _transfer(tables: AuditTables) -> Section:
    standard = str((getattr(tables, "statistics", None) or {}).get("standard", "kdaudit"))
    table = transfer_table(tables.transfer, standard)
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


def _fidelity(tables: AuditTables, meta: Mapping[str, Any]) -> Section | None:
    table = fidelity_table(tables.summary)
    if table is None:
        return None
    blocks: list[Block] = [Note(prose.FIDELITY_NOTE, fixed=True)]
    compression = prose.compression_note(meta)
    if compression:
        blocks.append(Note(compression))
    return Section("fidelity", "Fidelity to the teacher", [*blocks, table])


def _tests(tables: AuditTables) -> Section:
    """Every test table collapsed (HTML), the primary family first."""
    tests = tests_tables(tables.tests)
    if not tests:
        return Section("tests", "Significance tests", [Note("No tests available.")])
    blocks: list[Block] = [Note(prose.TESTS_NOTE, markdown=prose.TESTS_NOTE + " Significant rows are in bold.")]
    for label, t, _ in tests:
        n = len(t.rows)
        count = f"{n} test{'s' if n != 1 else ''} · {sum(t.highlight)} significant"
        blocks.append(Details(label, count, t, open=False))
    return Section("tests", "Significance tests", blocks)


def _figures(figures: Sequence[FigureInfo]) -> Section | None:
    return Section("figures", "Figures", [Figures(figures)]) if figures else None


def _how_to_read() -> Section:
    return Section("how-to-read", "How to read this report", [Glossary(prose.HOW_TO_READ)])
