"""A sweep end to end: one audit per point, one shared job store, one sweep report.

    from kdaudit.config.loader import expand, resolve_raw
    from kdaudit.sweep import run_sweep
    outcome = run_sweep(expand(resolve_raw("digits-mlp", ["protocol.temperature=[1,4]"])), "out/t")

Layout of a sweep directory: ``sweep.json`` (the axes and points), one audit directory per
point (``<path>=<value>/``, a complete audit with its own report), ``jobs/`` (the store all
points share, unless ``output.store`` names another), and the sweep's own tables, figures and
``sweep.html`` / ``sweep.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .audit import AuditOutcome, default_out_dir, prepare_out_dir, reanalyse, run_audit, with_store
from .config.sweep import Sweep
from .errors import KdauditError
from .execute.runner import Progress
from .io import read_index_file, write_text

SWEEP_FILE = "sweep.json"


@dataclass
class SweepOutcome:
    out_dir: Path
    sweep: Sweep | None
    outcomes: list[AuditOutcome]
    tables: object  # analysis.sweep.SweepTables
    paths: dict[str, Path] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def run_sweep(
    sweep: Sweep,
    out_dir: str | Path | None = None,
    progress_for: Callable[[int, int, str], Progress | None] | None = None,
) -> SweepOutcome:
    """Run every point's audit (the shared store trains each distinct job once), then the sweep
    analysis. ``progress_for(i, n, label)`` may return a progress object for point ``i``."""
    if not sweep.is_sweep:
        raise KdauditError("this spec sweeps nothing; run it as one audit")
    start = time.perf_counter()
    first = sweep.points[0].spec
    out = prepare_out_dir(Path(out_dir) if out_dir else default_out_dir(first))
    store = Path(first.output.store) if first.output.store else out / "jobs"
    index = {
        "axes": sweep.axes,
        "points": [{"label": p.label, "values": p.values, "dir": p.label} for p in sweep.points],
    }
    write_text(out / SWEEP_FILE, json.dumps(index, indent=1, default=str))
    outcomes = []
    for i, point in enumerate(sweep.points):
        progress = progress_for(i, len(sweep.points), point.label) if progress_for else None
        spec = with_store(point.spec, store)
        with progress if isinstance(progress, AbstractContextManager) else nullcontext():
            outcomes.append(run_audit(spec, out / point.label, progress))
    result = analyse_sweep(out, outcomes)
    result.sweep = sweep
    result.meta["wall_time_s"] = round(time.perf_counter() - start, 1)
    return result


def read_sweep_index(out: Path) -> dict:
    return read_index_file(out, SWEEP_FILE, "sweep")


def is_sweep_dir(out: str | Path) -> bool:
    return (Path(out) / SWEEP_FILE).exists()


def reanalyse_sweep(out_dir: str | Path) -> SweepOutcome:
    """Re-analyse every point of a finished sweep and rewrite the sweep report; trains nothing."""
    out = Path(out_dir)
    index = read_sweep_index(out)
    outcomes = [reanalyse(out / p["dir"]) for p in index["points"]]
    return analyse_sweep(out, outcomes)


def analyse_sweep(out: Path, outcomes: list[AuditOutcome]) -> SweepOutcome:
    from .analysis.sweep import SweepPoint, build_sweep_tables
    from .report.sweep_report import write_sweep_report

    index = read_sweep_index(out)
    points = []
    for entry, outcome in zip(index["points"], outcomes, strict=True):
        meta = outcome.meta
        points.append(
            SweepPoint(
                label=entry["label"],
                values=entry["values"],
                runs=outcome.tables.runs,
                transfer=outcome.tables.transfer,
                teacher_loss=float(meta["teacher_loss"]),
                teacher_accuracy=float(meta["teacher_accuracy"]),
                student_params=int(meta.get("student_params", 0)),
                teacher_params=int(meta.get("teacher_params", 0)),
                path=entry["dir"],
            )
        )
    spec = outcomes[0].spec
    tables = build_sweep_tables(points, level=spec.analysis.level)
    meta = {
        "title": f"kdaudit sweep — {spec.name}",
        "setup": spec.name,
        "axes": index["axes"],
        "n_points": len(points),
        "n_models": sum(o.meta.get("n_models", 0) for o in outcomes),
        "trained_now": sum(o.meta.get("trained_now", 0) for o in outcomes),
    }
    paths = write_sweep_report(out, tables, points, meta)
    summary = {
        "meta": meta,
        "sentences": list(tables.sentences),
        "points": [
            {
                "label": p.label,
                "values": p.values,
                "teacher_loss": p.teacher_loss,
                "teacher_accuracy": p.teacher_accuracy,
                "student_params": p.student_params,
                "verdicts": [asdict(v) for v in o.tables.verdicts],
            }
            for p, o in zip(points, outcomes, strict=True)
        ],
    }
    write_text(out / "sweep_audit.json", json.dumps(summary, indent=2, default=str))
    paths["sweep_audit.json"] = out / "sweep_audit.json"
    return SweepOutcome(out, None, outcomes, tables, paths, meta)
