"""Execute a plan: train what is missing, skip what is done.

:func:`run_job` is the unit of work: it trains one job from its spec slice and the artifacts of
the jobs it depends on, and writes its own job directory atomically. It is a plain function of
its arguments, so an executor can run it in this process (:func:`kdaudit.execute.groups.execute_plan`), in local worker
processes (:mod:`kdaudit.execute.pool`, which chooses between the two) or on a Dask worker. An
interrupted audit resumes where it stopped and a rerun of a finished audit trains nothing.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import torch

from ..config.schema import AuditSpec
from ..data.base import DataBundle, load_dataset
from ..plan.jobs import Job, Plan, device_class, job_device_class, versions
from ..security.poisoning import poisoned_bundle, teacher_train_logits, transfer_bundle
from ..store import JobStore
from .checkpoint import Checkpointer
from .device import device_name, gpu_slots, job_device
from .snapshots import read_snapshot, snapshot_args, snapshot_stage, staged_snapshots
from .train import (
    TrainResult,
    init_weights,
    label_smoothing_table,
    load_teacher,
    noise_table,
    teacher_top_probability,
    train_model,
)


class Progress(Protocol):
    def start(self, total: int, todo: int) -> None: ...
    def job_started(self, job: Job, epochs: int) -> None: ...
    def epoch_done(self, job: Job, epoch: int, epochs: int, loss: float) -> None: ...
    def job_finished(self, job: Job, skipped: bool) -> None: ...


class NullProgress:
    def start(self, total: int, todo: int) -> None: ...
    def job_started(self, job: Job, epochs: int) -> None: ...
    def epoch_done(self, job: Job, epoch: int, epochs: int, loss: float) -> None: ...
    def job_finished(self, job: Job, skipped: bool) -> None: ...


@dataclass
class ExecutionStats:
    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rerun_corrupt: list[str] = field(default_factory=list)
    seconds: float = 0.0
    where: str = ""  # how the jobs ran, in words (stated in the report)


_DATA_CACHE: dict[str, DataBundle] = {}


def load_data(spec: AuditSpec) -> DataBundle:
    """The spec's dataset, loaded once per process (workers reuse it across jobs)."""
    d = spec.data
    cache_key = json.dumps(d.model_dump(mode="json"), sort_keys=True)
    if cache_key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # hold one dataset at a time
        _DATA_CACHE[cache_key] = load_dataset(
            d.name,
            **({"data_dir": d.data_dir} if d.data_dir else {}),
            train_subset=d.train_subset,
            test_subset=d.test_subset,
            subset_seed=d.subset_seed,
            **d.options,
        )
    return _DATA_CACHE[cache_key]


def default_threads(spec: AuditSpec) -> int:
    """Torch threads of the kdaudit process outside training (analysis, security evaluation)."""
    return spec.train.threads or max(1, min(cores(), 8))


def cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_workers(spec: AuditSpec) -> int:
    """Worker processes of the local executor: on CUDA, ``execution.jobs_per_gpu`` per visible GPU
    (:func:`~kdaudit.execute.device.gpu_slots`); else ``execution.workers``, by default one per core."""
    if device_class(spec.train.device) == "cuda":
        return max(1, len(gpu_slots(spec.train.device, spec.execution.jobs_per_gpu)))
    return spec.execution.workers or cores()


def job_threads(spec: AuditSpec, workers_per_host: int | None = None) -> int:
    """Torch threads of one training job: ``train.threads``, else ``execution.threads_per_worker``,
    else the host's cores shared among its workers (1 with the default of one worker per core).

    A job's last bits depend on its thread count, and this depends on the spec and the machine
    only, never on the executor's choices or on how many jobs are left: a resumed audit trains its
    remaining jobs exactly as an uninterrupted one would, in this process or in a worker."""
    if spec.train.threads:
        return spec.train.threads
    if spec.execution.threads_per_worker:
        return spec.execution.threads_per_worker
    per_host = workers_per_host or local_workers(spec)
    return max(1, cores() // max(1, per_host))


def set_threads(spec: AuditSpec) -> int:
    threads = default_threads(spec)
    torch.set_num_threads(threads)
    return threads


def run_job(
    job: Job,
    spec: AuditSpec,
    store: JobStore,
    plan_keys: dict[str, str],
    data: DataBundle | None = None,
    progress: Progress | None = None,
) -> str:
    """Train (or draw, for M0) one job and save it; returns "trained" or "skipped" (already done).

    ``plan_keys`` maps "teacher" to the key of the plan's teacher job, whose outputs a KD student
    reads from ``store``; a job's M0 is its first dependency.
    """
    progress = progress or NullProgress()
    if store.is_done(job.key):
        return "skipped"
    data = data if data is not None else load_data(spec)
    dev = device_of(job, spec)
    base_record = base_record_of(job, spec, data, dev)
    if job.kind == "init":
        store.save(job.key, {**base_record, "metrics": {}}, init_weights(job.params, data))
        return "trained"
    checkpoint: Checkpointer | None = None
    extra: dict = {}
    if "checkpoint" in job.params:  # a teacher given as trained weights: evaluated, not trained
        progress.job_started(job, 0)
        result = load_teacher(job.params, data, spec.train.eval_batch_size, dev)
    elif "snapshot_of" in job.params:  # teacher.snapshots: read from the teacher run, not trained
        progress.job_started(job, 0)
        result, extra = read_snapshot(job, store)
    else:
        result, checkpoint, extra = _train_job(job, spec, store, plan_keys, data, progress, dev)
    save_result(job, store, base_record, result, extra, checkpoint)
    return "trained"


def base_record_of(job: Job, spec: AuditSpec, data: DataBundle, dev: torch.device) -> dict:
    """What every job's record states besides its results: identity, spec slice, versions, host."""
    return {
        "run_id": job.run_id,
        "kind": job.kind,
        "condition": job.condition,
        "alpha": job.alpha,
        "seed": job.seed,
        "init_seed": spec.protocol.init_seed,
        "deps": list(job.deps),
        "params": job.params,
        "versions": versions(),
        "data_fingerprint": data.fingerprint(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "precision": spec.train.path_label(),
            "node": platform.node(),
            "device": str(dev),
            "device_name": device_name(dev),
        },
    }


def save_result(
    job: Job,
    store: JobStore,
    base_record: dict,
    result: TrainResult,
    extra: dict,
    checkpoint: Checkpointer | None = None,
) -> None:
    """Write a trained (or evaluated) job's directory: record, weights and outputs, atomically."""
    outputs = {"test_logits": result.test_logits, "test_labels": result.test_labels}
    if result.train_logits is not None:
        outputs["train_logits"] = result.train_logits
    acc = float((result.test_logits.argmax(1) == result.test_labels).mean())
    record = {
        **base_record,
        "metrics": {
            "test_accuracy": acc,
            "final_train_loss": result.history[-1]["train_loss"] if result.history else None,
        },
        "history": result.history,
        "seconds": result.seconds,
        "resumed_from_epoch": result.resumed_from_epoch,
        **extra,
    }
    files = staged_snapshots(job, store) if job.teacher_run else None
    store.save(job.key, record, result.state, outputs, files)
    if checkpoint is not None:
        checkpoint.clear()
    if files:
        shutil.rmtree(snapshot_stage(store, job.key), ignore_errors=True)


def device_of(job: Job, spec: AuditSpec) -> torch.device:
    """Where ``job`` trains or is evaluated here: ``train.device``, of the class its key records."""
    if job.kind == "init":  # M0 is drawn on the CPU, the same weights whatever trains them
        return torch.device("cpu")
    return job_device(spec.train.device, job_device_class(job))


def on_device(spec: AuditSpec) -> str:
    """`` on cuda:0 (NVIDIA H200)`` for a plan trained on a GPU; empty on the CPU. Checks that
    the device can be used here (a one-line error otherwise)."""
    cls = device_class(spec.train.device)
    if cls == "cpu":
        return ""
    dev = job_device(spec.train.device, cls)
    return f" on {dev} ({device_name(dev)})"


def job_targets(
    job: Job, spec: AuditSpec, store: JobStore, plan_keys: dict[str, str], data: DataBundle
) -> tuple[torch.Tensor | None, dict]:
    """A student's soft-target table (teacher logits, RCD noise or the label-smoothing control's
    virtual teacher; none for SIDDO and the teacher) and what its record states about it."""
    target = None
    extra: dict = {}
    # security.backdoor.transfer_poison: a share of every student's inputs carry the trigger, and
    # the KD targets there are the teacher's outputs on the triggered inputs
    transfer = job.params.get("transfer_poison")
    if job.condition == "kd":
        target = torch.from_numpy(
            teacher_train_logits(store, plan_keys["teacher"], data, transfer, spec.train.eval_batch_size)
        )
    elif job.condition.startswith("rcd-"):
        target = noise_table(job.condition, noise_seed(job), len(data.x_train), data.num_classes)
    elif job.condition == "ls":
        temperature = float(job.params["temperature"])
        a = job.params["ls"]["a"]
        if a is None:
            a = teacher_top_probability(
                teacher_train_logits(store, plan_keys["teacher"], data, transfer, spec.train.eval_batch_size),
                temperature,
            )
        extra["ls_a"] = float(a)
        target = label_smoothing_table(data.y_train, data.num_classes, float(a), temperature)
    return target, extra


def _train_job(
    job: Job,
    spec: AuditSpec,
    store: JobStore,
    plan_keys: dict[str, str],
    data: DataBundle,
    progress: Progress,
    dev: torch.device,
) -> tuple[TrainResult, Checkpointer | None, dict]:
    init_state = store.load_weights(job.deps[0])  # the job's M0 (the students' or the teacher's own)
    target, extra = job_targets(job, spec, store, plan_keys, data)
    transfer = job.params.get("transfer_poison")

    checkpoint = None
    if spec.train.checkpoint_every:
        checkpoint = Checkpointer(store.root / ".checkpoints" / f"{job.key}.safetensors", spec.train.checkpoint_every)
    train_data, clean_inputs = data, None
    if "backdoor" in job.params:
        train_data = poisoned_bundle(data, job.params["backdoor"])
        clean_inputs = data.x_train  # students distil the teacher's outputs on the clean data
    if transfer is not None:  # labels untouched; the record states the count
        train_data = transfer_bundle(data, transfer)
        extra["transfer_poison"] = {k: v for k, v in train_data.info["transfer_poisoned"].items() if k != "indices"}
    hint_targets = None
    if "hint" in job.params:
        hint_targets = hint_table(
            job,
            data,
            store,
            plan_keys["teacher"],
            spec.protocol.hint.max_table_mb if spec.protocol.hint is not None else 2048.0,
        )
    progress.job_started(job, job.params["train"]["epochs"])
    return (
        train_model(
            job.params,
            train_data,
            init_state,
            train_logits_inputs=clean_inputs,
            target_logits=target,
            hint_targets=hint_targets,
            keep_train_logits=job.kind == "teacher",
            eval_batch_size=spec.train.eval_batch_size,
            on_epoch=lambda e, n, loss: progress.epoch_done(job, e, n, loss),
            name=job.run_id,
            checkpoint=checkpoint,
            device=dev,
            **snapshot_args(job, store),
        ),
        checkpoint,
        extra,
    )


def noise_seed(job: Job) -> int:
    """The seed of an RCD job's noise tables: 0 for the one table all seeds share, else its seed."""
    return 0 if job.params.get("rcd_noise") == "shared" else job.seed


_FEATURE_CACHE: dict[tuple, torch.Tensor] = {}


def hint_table(job: Job, data: DataBundle, store: JobStore, teacher_key: str, max_mb: float) -> torch.Tensor:
    """The fixed per-sample hint targets of a KD / RCD job: the teacher's features at the hint
    layer (computed once per teacher and layer in this process) or an RCD noise feature table."""
    from ..models.base import resolve_module
    from ..objectives.hints import (
        check_table_size,
        feature_shape,
        noise_feature_table,
        target_shape,
        teacher_feature_table,
    )
    from .train import make_model

    h = job.params["hint"]
    teacher = make_model({"model": h["teacher_model"]}, data)
    student = make_model(job.params, data)
    t_mod = resolve_module(teacher, h["teacher_layer"])
    s_shape = feature_shape(student, resolve_module(student, h["student_layer"]), data.x_train)
    shape = target_shape(s_shape, feature_shape(teacher, t_mod, data.x_train))
    n = len(data.x_train)
    if job.condition.startswith("rcd-"):
        check_table_size(n, shape, max_mb, "noise feature")
        return noise_feature_table(job.condition, noise_seed(job), n, shape)
    cache_key = (teacher_key, h["teacher_layer"], shape)
    if cache_key not in _FEATURE_CACHE:
        check_table_size(n, shape, max_mb, "teacher feature")
        teacher.load_state_dict(store.load_weights(teacher_key))
        _FEATURE_CACHE.clear()  # hold one table at a time
        _FEATURE_CACHE[cache_key] = teacher_feature_table(teacher, t_mod, data.x_train, shape)
    return _FEATURE_CACHE[cache_key]


def plan_keys_of(plan: Plan) -> dict[str, str]:
    """What a job reads from other jobs' outputs: the keys of the plan's M0 and teacher."""
    return {"init": plan.init.key, "teacher": plan.teacher.key}


def begin_execution(
    plan: Plan, store: JobStore, progress: Progress
) -> tuple[ExecutionStats, dict[str, str], list[Job]]:
    """What every executor does first: clear dead writers' temporaries, read each job's status,
    report the finished jobs as skipped (and the corrupt ones as rerun); returns the stats so far,
    the status by job key and the jobs still to run, in plan order."""
    stats = ExecutionStats()
    store.clean_tmp()
    status = {j.key: store.status(j.key) for j in plan.jobs}
    todo = [j for j in plan.jobs if status[j.key] != "done"]
    progress.start(len([j for j in plan.jobs if j.trains]), len([j for j in todo if j.trains]))
    for job in plan.jobs:
        if status[job.key] == "done":
            stats.skipped.append(job.run_id)
            if job.trains:
                progress.job_finished(job, skipped=True)
        elif status[job.key] == "corrupt":
            stats.rerun_corrupt.append(job.run_id)
    return stats, status, todo
