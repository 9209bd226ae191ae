"""One audit end to end: plan → execute → store → analysis → report.

This module ties the stages together for the CLI and for library users::

    from kdaudit.config.loader import resolve_spec
    from kdaudit.audit import run_audit
    outcome = run_audit(resolve_spec("digits-mlp", ["protocol.seeds=3"]), "out/digits")
    print(outcome.tables.verdicts)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from . import __version__
from .analysis.audit import AuditTables, build_audit_tables
from .analysis.collect import collect_runs
from .analysis.copied import follow_shares, group_name
from .analysis.hypotheses import Design, design_notes, is_regularisation_control
from .analysis.security import SecurityTables, build_security_tables
from .analysis.verdicts import headline
from .config.loader import dump_spec, read_yaml, validate_spec
from .config.schema import AuditSpec
from .data.base import DataBundle
from .errors import KdauditError
from .execute.runner import ExecutionStats, Progress, load_data, set_threads
from .faults import failpoint
from .io import write_text
from .models import build_model
from .plan.jobs import Plan, build_plan
from .security.evaluate import evaluate_security
from .security.poisoning import check_security
from .store import JobStore
from .tracking import open_tracker

if TYPE_CHECKING:
    from .report.copied import CopiedSource


@dataclass
class AuditOutcome:
    out_dir: Path
    spec: AuditSpec
    plan: Plan
    tables: AuditTables
    meta: dict
    stats: ExecutionStats | None
    paths: dict[str, Path]
    security: SecurityTables | None = None  # when spec.security is enabled


def default_out_dir(spec: AuditSpec) -> Path:
    if spec.output.dir:
        return Path(spec.output.dir)
    suffix = f"-{spec.preset}" if spec.preset not in (None, "cpu") else ""
    return Path("kdaudit-out") / f"{spec.name}{suffix}"


def store_for(spec: AuditSpec, out_dir: Path) -> JobStore:
    return JobStore(Path(spec.output.store) if spec.output.store else out_dir / "jobs")


def with_store(spec: AuditSpec, store: Path) -> AuditSpec:
    """``spec`` writing its jobs to ``store`` (shared with other audits), its directory left to the caller."""
    raw = spec.model_dump(mode="json")
    raw["output"]["store"] = str(store)
    raw["output"]["dir"] = None
    return validate_spec(raw)


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
    write_text(path, dump_spec(spec, extra))
    return path


def write_data_info(data: DataBundle, out_dir: Path) -> Path:
    """``data.json``: what the audit trained on — sizes, classes, the content fingerprint, the
    standardisation, and for text the tokenizer and its vocabulary, so outputs can be reproduced."""
    path = out_dir / "data.json"
    info = {
        "name": data.name,
        "fingerprint": data.fingerprint(),
        "input_shape": list(data.input_shape),
        "input_dtype": str(data.x_train.dtype).replace("torch.", ""),
        **data.info,
    }
    write_text(path, json.dumps(info, indent=1, default=_json_default, ensure_ascii=False))
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
    preflight(spec, data)  # bad models, checkpoints and hint layers fail before anything is written
    if spec.security.enabled:
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
            with contextlib.suppress(Exception):
                tracker.log_jobs(plan, store)
        raise
    outcome = analyse(spec, out, plan, store, stats, data_info=data.info, started=start, data=data, progress=progress)
    if tracker is not None:
        tracker.log_jobs(plan, store)
        tracker.log_audit(out, outcome.meta)
    return outcome


def planned_notes(spec: AuditSpec) -> list[str]:
    """What the planned audit cannot decide, said before anything trains: verdicts that no
    outcome of these group sizes could make "yes" (too few seeds), or that lack a control."""
    conds = spec.protocol.conditions
    units = [c for c in conds if c != "siddo" and not is_regularisation_control(c)]
    n_units = len(units) * len(spec.protocol.alphas)
    regs = any(is_regularisation_control(c) for c in conds)
    design = Design.from_spec(spec.analysis)
    notes = design_notes(spec.protocol.seeds, n_units, regs, "siddo" in conds, design)
    if n_units and "siddo" in conds and not regs:
        notes.append("there are no random-control (RCD) students, so beyond regularisation is not testable")
    return notes


def _build(model_spec, data) -> torch.nn.Module:
    return build_model(model_spec.name, data.input_shape, data.num_classes, data.model_args(), **model_spec.kwargs)


def preflight(spec: AuditSpec, data) -> None:
    """Everything that can be checked before training: both architectures build and return one
    logit per class, a given teacher checkpoint fits its model, the hint layers exist and their
    cached tables fit under the cap."""
    from .execute.train import check_checkpoint, read_checkpoint
    from .models.base import check_model_output, resolve_module

    models = {}
    for role, m in (("student", spec.student_model), ("teacher", spec.teacher_model)):
        with torch.random.fork_rng(devices=[]):
            models[role] = _build(m, data)
        check_model_output(models[role], data.input_shape, data.num_classes, data.x_train.dtype)
    if spec.teacher.checkpoint is not None:
        path = Path(spec.teacher.checkpoint).expanduser()
        check_checkpoint(models["teacher"], read_checkpoint(path), path, data.num_classes)
    a = spec.protocol.ls.a
    if "ls" in spec.protocol.conditions and a is not None and not a > 1.0 / data.num_classes:
        from .errors import SpecError

        raise SpecError(
            f"protocol.ls.a: {a} must be above 1/C = {1.0 / data.num_classes:.4g}, so that the "
            "true class is the virtual teacher's top class"
        )
    hint = spec.protocol.hint
    if hint is not None and any(c != "siddo" for c in spec.protocol.conditions):
        from .objectives.hints import check_table_size, feature_shape, target_shape

        s_shape = feature_shape(models["student"], resolve_module(models["student"], hint.student_layer), data.x_train)
        t_layer = hint.teacher_layer or hint.student_layer
        t_shape = feature_shape(models["teacher"], resolve_module(models["teacher"], t_layer), data.x_train)
        check_table_size(len(data.x_train), target_shape(s_shape, t_shape), hint.max_table_mb, "hint target")


def model_sizes(spec: AuditSpec, out: Path) -> dict[str, int]:
    """Parameter counts of the student and teacher architectures (from the audit's data.json)."""
    from types import SimpleNamespace

    from .models.base import model_param_count

    path = out / "data.json"
    if not path.exists():
        return {}
    info = json.loads(path.read_text())
    fake = SimpleNamespace(
        input_shape=tuple(info["input_shape"]),
        num_classes=int(info["num_classes"]),
        model_args=lambda: dict(info.get("model_args", {})),
    )
    with torch.random.fork_rng(devices=[]):
        return {
            "student_params": model_param_count(_build(spec.student_model, fake)),
            "teacher_params": model_param_count(_build(spec.teacher_model, fake)),
        }


def _device_label(host: dict) -> str:
    """The teacher's device in words, e.g. "cuda:0 (NVIDIA H200)"; records from before devices: cpu."""
    device = host.get("device", "cpu")
    return f"{device} ({host['device_name']})" if host.get("device_name") else device


def _model_label(m) -> str:
    return f"{m.name} {json.dumps(m.kwargs)}" if m.kwargs else m.name


def execute(spec: AuditSpec, plan: Plan, store: JobStore, data, progress: Progress | None = None) -> ExecutionStats:
    """Run the plan's missing jobs on the spec's executor (``execution.executor``)."""
    if spec.execution.executor == "dask":
        from .execute.dask_executor import execute_plan_dask

        return execute_plan_dask(spec, plan, store, progress, data)
    from .execute.pool import execute_local

    return execute_local(spec, plan, store, data, progress)


RUN_FACTS = (
    "created",
    "wall_time_s",
    "trained_now",
    "reused",
    "execution",
    "command",
    "kdaudit_version",
    "torch_version",
    "python_version",
    "numpy_version",
)
"""The keys of ``audit.json``'s meta that describe the run itself, which a re-analysis keeps."""


def run_facts(out: Path) -> dict:
    """The :data:`RUN_FACTS` of the audit in ``out`` (from its ``audit.json``; none without one)."""
    try:
        meta = json.loads((out / "audit.json").read_text()).get("meta")
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: meta[k] for k in RUN_FACTS if k in meta} if isinstance(meta, dict) else {}


def invoked_command(argv: Sequence[str] | None = None) -> str | None:
    """The ``kdaudit`` command line this process runs (``sys.argv``), as a shell command; None when
    the process is not the kdaudit command (a Python program calling :func:`run_audit`)."""
    args = list(sys.argv if argv is None else argv)
    if not args:
        return None
    prog = Path(args[0])
    module = prog.parts[-2:] == ("kdaudit", "__main__.py") or prog.parts[-3:] == ("kdaudit", "cli", "__main__.py")
    if prog.name not in ("kdaudit", "kdaudit.exe") and not module:
        return None
    return shlex.join(["kdaudit", *args[1:]])


def spec_hash(out: Path) -> str | None:
    """The sha256 of the audit's ``spec.yaml`` as written (None without one)."""
    path = out / "spec.yaml"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def reanalyse(out_dir: str | Path) -> AuditOutcome:
    """Re-run the analysis and report of a finished audit directory; trains nothing. The facts of the
    run (:data:`RUN_FACTS`: when and how long it ran, what it trained and where) are kept, and
    ``reanalysed`` says when the analysis was redone."""
    out = Path(out_dir)
    spec = read_spec(out)
    plan = build_plan(spec)
    return analyse(spec, out, plan, store_for(spec, out), None, kept=run_facts(out))


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
    kept: dict | None = None,
) -> AuditOutcome:
    from .report.render import write_report

    runs = collect_runs(plan, store, spec.protocol.temperature)
    tables = build_audit_tables(runs, design=Design.from_spec(spec.analysis))
    teacher_rec = store.load_record(plan.teacher.key)
    t_out = store.load_outputs(plan.teacher.key)
    n_wrong = int((t_out["test_logits"].argmax(1) != t_out["test_labels"]).sum())
    records = [store.load_record(j.key) for j in plan.trained]
    meta = {
        "title": f"kdaudit — {spec.name}",
        "setup": spec.name,
        "dataset": spec.data.name,
        "model": _model_label(spec.student_model),
        "n_train": (data_info or {}).get("n_train", spec.data.train_subset),
        "n_test": int(len(t_out["test_labels"])),
        "teacher_accuracy": float(runs.loc[runs.role == "teacher", "accuracy"].iloc[0]),
        "teacher_loss": float(runs.loc[runs.role == "teacher", "loss"].iloc[0]),
        "n_teacher_wrong": n_wrong,
        "n_models": len(plan.trained),
        "train_seconds_total": round(float(sum(r.get("seconds", 0.0) for r in records)), 1),
        "precision": teacher_rec.get("host", {}).get("precision", "fp32"),
        "device": _device_label(teacher_rec.get("host", {})),
        "kdaudit_version": __version__,
        "torch_version": str(torch.__version__),
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec_sha256": spec_hash(out),
    }
    if not spec.self_distillation:
        meta["distillation"] = "standard"
        meta["teacher_model"] = _model_label(spec.teacher_model)
        if spec.teacher.checkpoint is not None:
            meta["teacher_checkpoint"] = str(spec.teacher.checkpoint)
    if spec.teacher.epochs is not None:
        meta["teacher_epochs"] = spec.teacher.epochs
    if spec.protocol.hint is not None:
        h = spec.protocol.hint
        meta["hint"] = f"{h.weight:g} × MSE({h.student_layer} → {h.teacher_layer or h.student_layer})"
    meta.update(model_sizes(spec, out))
    command = invoked_command() if stats is not None else None
    if command is not None:
        meta["command"] = command
    if stats is not None:
        meta.update(
            trained_now=len([r for r in stats.trained if r != "m0"]),
            reused=len([r for r in stats.skipped if r != "m0"]),
        )
        if stats.where and meta["trained_now"]:
            meta["execution"] = stats.where
    paths = write_tables(out, tables)
    follow = copied_table(plan, store)
    paths.update(write_copied_table(out, follow))
    security = None
    if spec.security.enabled:
        security = analyse_security(spec, out, plan, store, data if data is not None else load_data(spec), progress)
        meta["security"] = security.meta
        paths.update(write_security_tables(out, security))
    if started is not None:
        meta["wall_time_s"] = round(time.perf_counter() - started, 1)
    if kept is not None:  # a re-analysis: the run's facts stay those of the run
        meta.update(kept, reanalysed=f"{datetime.now(UTC).isoformat(timespec='seconds')} (kdaudit {__version__})")
    failpoint("report.write")
    copied = copied_source(spec, out, follow, data, t_out["test_labels"])
    paths.update(write_report(out, tables, spec.model_dump(mode="json"), meta, security, copied))
    summary = {
        "headline": headline(tables.verdicts, tables.statistics),
        "meta": meta,
        "statistics": tables.statistics,
        "verdicts": [asdict(v) for v in tables.verdicts],
    }
    if security is not None:
        summary["security"] = security.sentences
    write_text(out / "audit.json", json.dumps(summary, indent=2, default=_json_default))
    paths["audit.json"] = out / "audit.json"
    return AuditOutcome(out, spec, plan, tables, meta, stats, paths, security)


def analyse_security(
    spec: AuditSpec, out: Path, plan: Plan, store: JobStore, data: DataBundle, progress: Progress | None = None
) -> SecurityTables:
    """Security metrics of every model (cached per model under ``out/security``) and their tests."""
    on_model = getattr(progress, "security_model", None)
    result = evaluate_security(spec, plan, store, data, out, on_model)
    if result is None:
        raise KdauditError("the spec enables no security audit (security.adversarial or security.backdoor)")
    return build_security_tables(
        result.runs, result.metrics, result.meta, level=spec.analysis.level, correction=spec.analysis.correction
    )


def write_security_tables(out: Path, security: SecurityTables) -> dict[str, Path]:
    """``security_runs.csv``, ``security_tests.csv`` and ``security_summary.csv``."""
    paths = {}
    for name, df in (
        ("security_runs.csv", security.runs),
        ("security_tests.csv", security.tests),
        ("security_summary.csv", security.summary),
    ):
        write_text(out / name, df.to_csv(index=False))
        paths[name] = out / name
    return paths


def write_tables(out: Path, tables: AuditTables) -> dict[str, Path]:
    paths = {}
    for name, df in (
        ("runs.csv", tables.runs),
        ("tests.csv", tables.tests),
        ("transfer.csv", tables.transfer),
        ("summary.csv", tables.summary),
    ):
        write_text(out / name, df.to_csv(index=False))
        paths[name] = out / name
        failpoint("analysis.tables")
    return paths


def copied_table(plan: Plan, store: JobStore) -> pd.DataFrame:
    """``copied.csv``: per teacher-wrong test sample, the share of each student group (condition
    at α, in plan order) that outputs the teacher's wrong label (:func:`~.analysis.copied.follow_shares`)."""
    t_out = store.load_outputs(plan.teacher.key)
    preds: dict[str, list[np.ndarray]] = {}
    for job in plan.students:
        logits = store.load_outputs(job.key)["test_logits"]
        preds.setdefault(group_name(job.condition, job.alpha), []).append(logits.argmax(1))
    groups = {name: np.stack(p) for name, p in preds.items()}
    return follow_shares(t_out["test_labels"], t_out["test_logits"].argmax(1), groups)


def write_copied_table(out: Path, follow: pd.DataFrame) -> dict[str, Path]:
    """``copied.csv`` (:func:`copied_table`)."""
    return {"copied.csv": write_text(out / "copied.csv", follow.to_csv(index=False))}


def copied_source(
    spec: AuditSpec, out: Path, follow: pd.DataFrame, data: DataBundle | None, labels: np.ndarray
) -> CopiedSource:
    """What the report's "What is copied" section needs: the shares, ``data.json`` and the test
    inputs; the inputs are loaded if not given, and left out when the data cannot be loaded or is
    not the data the audit was run on (its examples then show indices only)."""
    from .report.copied import CopiedSource

    path = out / "data.json"
    info = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if data is None:
        try:
            data = load_data(spec)
        except (KdauditError, OSError, ValueError, ImportError):
            data = None
    same = (
        data is not None
        and np.array_equal(data.y_test.numpy(), labels)
        and info.get("fingerprint", data.fingerprint()) == data.fingerprint()
    )
    inputs = data.x_test.numpy() if same and data is not None else None
    return CopiedSource(follow, info, inputs, n_test=len(labels))


def _json_default(o):
    if isinstance(o, (np.generic,)):
        return o.item()
    return str(o)
