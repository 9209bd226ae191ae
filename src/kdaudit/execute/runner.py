"""Execute a plan on the local machine: train what is missing, skip what is done.

Jobs run in topological order (M0 → teacher → students). Each job is loaded from, and written
to, the :class:`JobStore` atomically, so an interrupted audit resumes where it stopped and a
rerun of a finished audit trains nothing.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

import torch

from ..config.spec import AuditSpec
from ..data.base import DataBundle, load_dataset
from ..plan.jobs import Job, Plan, versions
from ..store import JobStore
from .train import init_weights, noise_table, train_model


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


def load_data(spec: AuditSpec) -> DataBundle:
    d = spec.data
    return load_dataset(
        d.name,
        **({"data_dir": d.data_dir} if d.data_dir else {}),
        train_subset=d.train_subset,
        test_subset=d.test_subset,
        subset_seed=d.subset_seed,
        **d.options,
    )


def set_threads(spec: AuditSpec) -> int:
    threads = spec.train.threads or max(1, min(os.cpu_count() or 1, 8))
    torch.set_num_threads(threads)
    return threads


def execute_plan(
    spec: AuditSpec,
    plan: Plan,
    store: JobStore,
    data: DataBundle,
    progress: Progress | None = None,
) -> ExecutionStats:
    progress = progress or NullProgress()
    stats = ExecutionStats()
    start = time.perf_counter()
    store.clean_tmp()
    status = {j.key: store.status(j.key) for j in plan.jobs}
    todo = [j for j in plan.trained if status[j.key] != "done"]
    progress.start(len(plan.trained), len(todo))
    fingerprint = data.fingerprint()
    teacher_train_logits: torch.Tensor | None = None
    threads = torch.get_num_threads()

    for job in plan.jobs:
        if status[job.key] == "done":
            stats.skipped.append(job.run_id)
            if job.trains:
                progress.job_finished(job, skipped=True)
            continue
        if status[job.key] == "corrupt":
            stats.rerun_corrupt.append(job.run_id)
        base_record = {
            "run_id": job.run_id, "kind": job.kind, "condition": job.condition,
            "alpha": job.alpha, "seed": job.seed, "deps": list(job.deps), "params": job.params,
            "versions": versions(), "data_fingerprint": fingerprint,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": {"python": platform.python_version(), "threads": threads, "precision": "fp32"},
        }
        if job.kind == "init":
            state = init_weights(job.params, data)
            store.save(job.key, {**base_record, "metrics": {}}, state)
            stats.trained.append(job.run_id)
            continue

        init_state = store.load_weights(plan.init.key)
        target = None
        if job.condition == "kd":
            if teacher_train_logits is None:
                teacher_train_logits = torch.from_numpy(store.load_outputs(plan.teacher.key)["train_logits"])
            target = teacher_train_logits
        elif job.condition.startswith("rcd-"):
            target = noise_table(job.condition, job.seed, len(data.x_train), data.num_classes)

        progress.job_started(job, spec.train.epochs)
        result = train_model(
            job.params, data, init_state,
            target_logits=target,
            keep_train_logits=job.kind == "teacher",
            eval_batch_size=spec.train.eval_batch_size,
            on_epoch=lambda e, n, loss, job=job: progress.epoch_done(job, e, n, loss),
            name=job.run_id,
        )
        outputs = {"test_logits": result.test_logits, "test_labels": result.test_labels}
        if result.train_logits is not None:
            outputs["train_logits"] = result.train_logits
        labels = result.test_labels
        acc = float((result.test_logits.argmax(1) == labels).mean())
        record = {
            **base_record,
            "metrics": {"test_accuracy": acc, "final_train_loss": result.history[-1]["train_loss"]},
            "history": result.history,
            "seconds": result.seconds,
        }
        store.save(job.key, record, result.state, outputs)
        if job.kind == "teacher":
            teacher_train_logits = torch.from_numpy(result.train_logits) if result.train_logits is not None else None
        stats.trained.append(job.run_id)
        progress.job_finished(job, skipped=False)
    stats.seconds = time.perf_counter() - start
    return stats
