"""An audit from saved logits: what ``kdaudit compare --out DIR`` writes.

:func:`compare_to_dir` decides on the students with
:func:`~kdaudit.analysis.compare.compare_audit` (the audit's own
:func:`~kdaudit.analysis.audit.build_audit_tables` on a runs table made from the logits) and
writes the outputs of an audit: ``runs.csv`` (one row per student, named by its file),
``tests.csv``, ``transfer.csv``, ``summary.csv``, ``copied.csv`` (a column per group, named
without α), ``report.html`` / ``report.md`` with their figures
(:func:`~kdaudit.report.render.write_report`) and ``audit.json`` — the headline, the verdicts with
their reasons and primary tests, the statistics, the facts of the comparison and the input files,
with ``"kind": "compare"``. The files carry no α: it is empty (NaN, ``null``) in every output.

:func:`check_out_dir` refuses, before anything is computed, an ``--out`` that is a file or a
non-empty directory other than an earlier compare output (which is rewritten).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .analysis.audit import AuditTables
from .analysis.compare import compare_audit, json_safe, rcd_condition
from .analysis.copied import follow_shares
from .analysis.hypotheses import CONTROL, Design
from .analysis.verdicts import headline
from .audit import invoked_command, prepare_out_dir, write_copied_table, write_tables
from .errors import KdauditError
from .io import write_text
from .report.copied import CopiedSource
from .report.render import write_report

__all__ = ["KIND", "check_out_dir", "compare_to_dir", "is_compare_dir"]

KIND = "compare"
"""``audit.json``'s ``kind`` in a compare output directory."""

Students = dict[str, np.ndarray]
"""The logits of a group of students by file, in file order."""


def is_compare_dir(out: Path) -> bool:
    """True when ``out`` holds the ``audit.json`` of an earlier ``kdaudit compare --out``."""
    try:
        data = json.loads((out / "audit.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


def check_out_dir(out: Path) -> None:
    """Refuse an output path that is a file, or a non-empty directory that is no compare output."""
    if out.exists() and not out.is_dir():
        raise KdauditError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not is_compare_dir(out):
        raise KdauditError(
            f"--out {out} is a non-empty directory that holds no earlier `kdaudit compare` output; "
            "give a new or empty directory"
        )


def compare_to_dir(
    out: Path,
    teacher: tuple[str, np.ndarray],
    labels: tuple[str, np.ndarray],
    control: Students,
    groups: Mapping[str, Students],
    rcd: Mapping[str, Students],
    design: Design,
    started: float | None = None,
) -> tuple[dict[str, Any], AuditTables, dict[str, Path]]:
    """Compare the groups with the control and write the audit's outputs into ``out``.

    ``teacher`` and ``labels`` are (file, array); every group maps its files to their logits.
    Returns the result of :func:`~kdaudit.analysis.compare.compare_logits`, the tables and the
    written paths by name. ``started`` (a :func:`time.perf_counter` value) gives the wall time.
    """
    (t_file, zt), (y_file, y) = teacher, labels
    files = {CONTROL: list(control), **{n: list(g) for n, g in groups.items()}}
    files.update({rcd_condition(n): list(g) for n, g in rcd.items()})
    result, tables = compare_audit(
        zt,
        y,
        list(control.values()),
        {n: list(g.values()) for n, g in groups.items()},
        rcd={n: list(g.values()) for n, g in rcd.items()},
        design=design,
        run_ids=files,
    )
    meta = _meta(tables, zt, y, t_file, y_file)
    students = {CONTROL: control, **groups, **{rcd_condition(n): g for n, g in rcd.items()}}
    follow = follow_shares(
        y, zt.argmax(1), {c: np.stack([z.argmax(1) for z in g.values()]) for c, g in students.items()}
    )
    out = prepare_out_dir(out)
    paths = write_tables(out, tables)
    paths.update(write_copied_table(out, follow))
    spec = {
        "compare": {"teacher": t_file, "labels": y_file, "students": files},
        "analysis": {**asdict(design), "paired": False},
    }
    if started is not None:
        meta["wall_time_s"] = round(time.perf_counter() - started, 1)
    paths.update(write_report(out, tables, spec, meta, None, CopiedSource(follow, n_test=len(y))))
    summary: dict[str, Any] = {
        "kind": KIND,
        "headline": headline(tables.verdicts, tables.statistics),
        "meta": meta,
        "inputs": spec["compare"],
        "statistics": tables.statistics,
        "verdicts": [asdict(v) for v in tables.verdicts],
    }
    text = json.dumps(json_safe(summary), indent=2, allow_nan=False, default=str, ensure_ascii=False)
    paths["audit.json"] = write_text(out / "audit.json", text)
    return result, tables, paths


def _meta(tables: AuditTables, zt: np.ndarray, y: np.ndarray, t_file: str, y_file: str) -> dict[str, Any]:
    """The facts of the comparison, under the keys the report knows."""
    runs = tables.runs
    teacher = runs.loc[runs["role"] == "teacher"].iloc[0]
    students = runs.loc[runs["role"] == "student"]
    meta: dict[str, Any] = {
        "title": "kdaudit — comparison from saved logits",
        "setup": "saved logits (kdaudit compare)",
        "teacher_logits": t_file,
        "labels": y_file,
        "n_test": int(zt.shape[0]),
        "classes": int(zt.shape[1]),
        "teacher_accuracy": float(teacher["accuracy"]),
        "teacher_loss": float(teacher["loss"]),
        "n_teacher_wrong": int((zt.argmax(1) != y).sum()),
        "students_compared": int(len(students)),
        "kdaudit_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    command = invoked_command()
    if command is not None:
        meta["command"] = command
    return meta
