"""One audit end to end: plan → execute → store → analysis → report.

This module ties the stages together for the CLI and for library users::

    from kdaudit.config.spec import resolve_spec
    from kdaudit.audit import run_audit
    outcome = run_audit(resolve_spec("digits-mlp", ["protocol.seeds=3"]), "out/digits")
    print(outcome.tables.verdicts)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .analysis.audit import AuditTables, build_audit_tables
from .analysis.collect import collect_runs
from .config.spec import AuditSpec, dump_spec, read_yaml, validate_spec
from .errors import KdauditError
from .faults import failpoint
from .execute.runner import ExecutionStats, Progress, execute_plan, load_data, set_threads
from .models import build_model
from .plan.jobs import Plan, build_plan
from .store import JobStore
from .tracking import open_tracker

OUTPUT_FILES = ("spec.yaml", "data.json", "runs.csv", "tests.csv", "transfer.csv", "summary.csv",
                "audit.json", "report.md", "report.html")


@dataclass
class AuditOutcome:
    out_dir: Path
    spec: AuditSpec
    plan: Plan
    tables: AuditTables
    meta: dict
    stats: ExecutionStats | None
    paths: dict[str, Path]
    security: object | None = None  # SecurityTables when spec.security is enabled


def default_out_dir(spec: AuditSpec) -> Path:
    if spec.output.dir:
        return Path(spec.output.dir)
    suffix = f"-{spec.preset}" if spec.preset not in (None, "cpu") else ""
    return Path("kdaudit-out") / f"{spec.name}{suffix}"


def store_for(spec: AuditSpec, out_dir: Path) -> JobStore:
    return JobStore(Path(spec.output.store) if spec.output.store else out_dir / "jobs")


def prepare_out_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KdauditError(f"cannot create output directory {out_dir}: {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise KdauditError(f"output directory {out_dir} is not writable")
    return out_dir


def write_spec(spec: AuditSpec, out_dir: Path) -> Path:
    path = out_dir / "spec.yaml"
    extra = {"versions": {"kdaudit": __version__, "torch": str(torch.__version__)}}
    _atomic_write(path, dump_spec(spec, extra))
    return path


def write_data_info(data, out_dir: Path) -> Path:
    """``data.json``: what the audit trained on — sizes, classes, the content fingerprint, the
    standardisation, and for text the tokenizer and its vocabulary, so outputs can be reproduced."""
    path = out_dir / "data.json"
    info = {"name": data.name, "fingerprint": data.fingerprint(), "input_shape": list(data.input_shape),
            "input_dtype": str(data.x_train.dtype).replace("torch.", ""), **data.info}
    _atomic_write(path, json.dumps(info, indent=1, default=_json_default, ensure_ascii=False))
    return path


def read_spec(out_dir: Path) -> AuditSpec:
    path = out_dir / "spec.yaml"
    if not path.exists():
        raise KdauditError(f"{out_dir} is not an audit directory (no spec.yaml)")
    raw = read_yaml(path)
    if isinstance(raw, dict):
        raw.pop("versions", None)
    return validate_spec(raw)


def run_audit(spec: AuditSpec, out_dir: str | Path | None = None, progress: Progress | None = None) -> AuditOutcome:
    """Train whatever is missing for ``spec``, then analyse and report."""
    start = time.perf_counter()
    out = prepare_out_dir(Path(out_dir) if out_dir else default_out_dir(spec))
    plan = build_plan(spec)
    data = load_data(spec)
    # bad model options fail here, before anything is written into the audit directory
    build_model(spec.model.name, data.input_shape, data.num_classes, data.model_args(), **spec.model.kwargs)
    if spec.security.enabled:
        from .security.poisoning import check_security

        check_security(spec, data)
    write_spec(spec, out)
    write_data_info(data, out)
    set_threads(spec)
    store = store_for(spec, out)
    tracker = open_tracker(spec, out)  # None unless tracking.mlflow is set
    if tracker is not None:
        progress = tracker.wrap(progress, store)
    try:
        stats = execute(spec, plan, store, data, progress)
    except BaseException:
        if tracker is not None:  # log what did finish, without hiding the failure
            try:
                tracker.log_jobs(plan, store)
            except Exception:
                pass
        raise
    outcome = analyse(spec, out, plan, store, stats, data_info=data.info, started=start, data=data,
                      progress=progress)
    if tracker is not None:
        tracker.log_jobs(plan, store)
        tracker.log_audit(out, outcome.meta)
    return outcome


def execute(spec: AuditSpec, plan: Plan, store: JobStore, data, progress: Progress | None = None) -> ExecutionStats:
    """Run the plan's missing jobs on the spec's executor (``execution.executor``)."""
    if spec.execution.executor == "dask":
        from .execute.dask_executor import execute_plan_dask

        return execute_plan_dask(spec, plan, store, progress)
    return execute_plan(spec, plan, store, data, progress)


def reanalyse(out_dir: str | Path) -> AuditOutcome:
    """Re-run the analysis and report of a finished audit directory; trains nothing."""
    out = Path(out_dir)
    spec = read_spec(out)
    plan = build_plan(spec)
    return analyse(spec, out, plan, store_for(spec, out), None)


def analyse(
    spec: AuditSpec,
    out: Path,
    plan: Plan,
    store: JobStore,
    stats: ExecutionStats | None,
    data_info: dict | None = None,
    started: float | None = None,
    data=None,
    progress=None,
) -> AuditOutcome:
    from .report.render import write_report

    runs = collect_runs(plan, store, spec.protocol.temperature)
    tables = build_audit_tables(
        runs, level=spec.analysis.level, correction=spec.analysis.correction, paired=spec.analysis.paired
    )
    teacher_rec = store.load_record(plan.teacher.key)
    t_out = store.load_outputs(plan.teacher.key)
    n_wrong = int((t_out["test_logits"].argmax(1) != t_out["test_labels"]).sum())
    records = [store.load_record(j.key) for j in plan.trained]
    meta = {
        "title": f"kdaudit — {spec.name}",
        "setup": spec.name,
        "dataset": spec.data.name,
        "model": f"{spec.model.name} {json.dumps(spec.model.kwargs)}" if spec.model.kwargs else spec.model.name,
        "n_train": (data_info or {}).get("n_train", spec.data.train_subset),
        "n_test": int(len(t_out["test_labels"])),
        "teacher_accuracy": float(runs.loc[runs.role == "teacher", "accuracy"].iloc[0]),
        "n_teacher_wrong": n_wrong,
        "n_models": len(plan.trained),
        "train_seconds_total": round(float(sum(r.get("seconds", 0.0) for r in records)), 1),
        "precision": teacher_rec.get("host", {}).get("precision", "fp32"),
        "kdaudit_version": __version__,
        "torch_version": str(torch.__version__),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if stats is not None:
        meta.update(trained_now=len([r for r in stats.trained if r != "m0"]),
                    reused=len([r for r in stats.skipped if r != "m0"]))
    paths = write_tables(out, tables)
    security = None
    if spec.security.enabled:
        security = analyse_security(spec, out, plan, store, data if data is not None else load_data(spec), progress)
        meta["security"] = security.meta
        paths.update(write_security_tables(out, security))
    if started is not None:
        meta["wall_time_s"] = round(time.perf_counter() - started, 1)
    failpoint("report.write")
    paths.update(write_report(out, tables, spec.model_dump(mode="json"), meta, security))
    summary = {"meta": meta, "verdicts": [asdict(v) for v in tables.verdicts]}
    if security is not None:
        summary["security"] = security.sentences
    _atomic_write(out / "audit.json", json.dumps(summary, indent=2, default=_json_default))
    paths["audit.json"] = out / "audit.json"
    return AuditOutcome(out, spec, plan, tables, meta, stats, paths, security)


def analyse_security(spec: AuditSpec, out: Path, plan: Plan, store: JobStore, data, progress=None):
    """Security metrics of every model (cached per model under ``out/security``) and their tests."""
    from .analysis.security import build_security_tables
    from .security.evaluate import evaluate_security

    on_model = getattr(progress, "security_model", None)
    result = evaluate_security(spec, plan, store, data, out, on_model)
    tables = build_security_tables(result.runs, result.metrics, result.meta,
                                   level=spec.analysis.level, correction=spec.analysis.correction)
    return tables


def write_security_tables(out: Path, security) -> dict[str, Path]:
    paths = {}
    for name, df in (("security_runs.csv", security.runs), ("security_tests.csv", security.tests),
                     ("security_summary.csv", security.summary)):
        _atomic_write(out / name, df.to_csv(index=False))
        paths[name] = out / name
    return paths


def write_tables(out: Path, tables: AuditTables) -> dict[str, Path]:
    paths = {}
    for name, df in (("runs.csv", tables.runs), ("tests.csv", tables.tests),
                     ("transfer.csv", tables.transfer), ("summary.csv", tables.summary)):
        _atomic_write(out / name, df.to_csv(index=False))
        paths[name] = out / name
        failpoint("analysis.tables")
    return paths


def _atomic_write(path: Path, text: str) -> None:
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a writer that was killed
        try:
            os.kill(int(stale.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except (ValueError, OSError):
            pass
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:  # e.g. a full disk: one line, and no temporary left behind
        tmp.unlink(missing_ok=True)
        raise KdauditError(f"cannot write {path}: {exc.strerror or exc}") from None


def _json_default(o):
    if isinstance(o, (np.generic,)):
        return o.item()
    return str(o)
