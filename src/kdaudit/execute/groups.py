"""Units of work: single jobs, and groups of students trained as one vectorised ensemble.

``execution.ensemble`` decides: ``off`` trains every job on its own; ``N`` puts students that
can train together (:func:`kdaudit.execute.ensemble.group_key`: the same model and training
settings; seeds, conditions, α and targets may differ) into groups of at most N; ``auto`` does so
on CUDA, sized to the GPU's free memory (:func:`auto_size`), and not on the CPU, where the
default executor's single-threaded workers train the default grid faster without them
(``docs/gpu.md``), and CNNs lost too. A student
that cannot be an ensemble member (:func:`kdaudit.execute.ensemble.why_not`: dropout, a
poisoned or triggered training set, mid-run checkpoints, ``train.compile``) trains on its own.

Each member's numbers equal its sequential training within float tolerance (not bit for bit:
batched products round differently), and its record says it was trained in an ensemble of K.
A group that runs out of GPU memory is split in two and each half tried again, down to single
jobs.
"""

from __future__ import annotations

import hashlib
import math
import time

import torch

from ..config.schema import AuditSpec
from ..data.base import DataBundle
from ..errors import TrainingError
from ..plan.jobs import Job, Plan, device_class
from ..store import JobStore
from .device import configure
from .ensemble import Member, group_key, train_ensemble, why_not
from .runner import (
    ExecutionStats,
    NullProgress,
    Progress,
    base_record_of,
    begin_execution,
    device_of,
    hint_table,
    job_targets,
    job_threads,
    local_workers,
    on_device,
    plan_keys_of,
    run_job,
    save_result,
)

# the most members ``auto`` puts in one group on CUDA, whatever the memory allows
AUTO_MAX = 256


def ensemble_size(spec: AuditSpec) -> int:
    """The most members of one group; below 2: no ensembles."""
    setting = spec.execution.ensemble
    if setting == "off":
        return 0
    if setting == "auto":
        return AUTO_MAX if device_class(spec.train.device) == "cuda" else 0
    return int(setting)


def solo_reason(job: Job, spec: AuditSpec, data: DataBundle) -> str | None:
    """Why ``job`` trains on its own rather than in an ensemble; None when it can be a member."""
    if job.kind != "student":
        return "not a student"
    if spec.train.checkpoint_every:
        return "train.checkpoint_every (mid-run checkpoints are per job)"
    if "backdoor" in job.params or "transfer_poison" in job.params:
        return "a poisoned or triggered training set"
    return why_not(job.params, data)


def plan_units(todo: list[Job], spec: AuditSpec, data: DataBundle, gpu_workers: int | None = None) -> list[list[Job]]:
    """``todo`` as units of work, in an order that respects dependencies: the jobs that train on
    their own in plan order, then the ensembles (students depend only on M0 and the teacher).
    Each group's members are split into equal parts of at most :func:`ensemble_size`, and on CUDA
    into at least as many parts as there are GPU workers (``gpu_workers``, by default the local
    executor's: :func:`~kdaudit.execute.runner.local_workers`)."""
    size = ensemble_size(spec)
    if size < 2:
        return [[j] for j in todo]
    singles: list[list[Job]] = []
    groups: dict[str, list[Job]] = {}
    for job in todo:
        if solo_reason(job, spec, data) is None:
            groups.setdefault(group_key(job.params) + "|" + job.deps[0], []).append(job)
        else:
            singles.append([job])
    units = list(singles)
    for members in groups.values():
        parts = math.ceil(len(members) / size)
        if device_class(spec.train.device) == "cuda":  # at least one group per GPU worker: every GPU busy
            parts = max(parts, min(len(members), gpu_workers or local_workers(spec)))
        cuts = [round(i * len(members) / parts) for i in range(parts + 1)]  # sizes differ by one at most
        units += [members[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    return units


def ensembles_note(units: list[list[Job]]) -> str:
    """``, 120 students in 2 vectorised ensembles`` when some units are ensembles; else empty."""
    groups = [u for u in units if len(u) > 1]
    if not groups:
        return ""
    return f", {sum(len(u) for u in groups)} students in {len(groups)} vectorised ensemble(s)"


def unit_deps(unit: list[Job]) -> set[str]:
    """The job keys a unit waits for (those of its own members excluded)."""
    own = {j.key for j in unit}
    return {d for j in unit for d in j.deps if d not in own}


def run_unit(
    unit: list[Job],
    spec: AuditSpec,
    store: JobStore,
    plan_keys: dict[str, str],
    data: DataBundle,
    progress: Progress | None = None,
) -> list[str]:
    """Train a unit; one outcome per member, "trained" or "skipped" (already in the store)."""
    progress = progress or NullProgress()
    if len(unit) == 1:
        return [run_job(unit[0], spec, store, plan_keys, data, progress)]
    todo = [j for j in unit if not store.is_done(j.key)]
    if len(todo) == 1:
        run_job(todo[0], spec, store, plan_keys, data, progress)
    elif todo:
        _train_group(todo, spec, store, plan_keys, data, progress)
    return ["trained" if j in todo else "skipped" for j in unit]


def _train_group(
    jobs: list[Job],
    spec: AuditSpec,
    store: JobStore,
    plan_keys: dict[str, str],
    data: DataBundle,
    progress: Progress,
) -> None:
    """Train ``jobs`` as ensembles (split in two on running out of GPU memory) and save each; if
    a member diverges, the others of its part are trained on their own, the remaining parts go on,
    and the first error is raised at the end."""
    dev = device_of(jobs[0], spec)
    size = len(jobs)
    if dev.type == "cuda" and spec.execution.ensemble == "auto":
        configure(dev, jobs[0].params["train"])  # before the first CUDA work of the group
        size = min(size, auto_size(jobs[0], data, dev))
    first: TrainingError | None = None
    for i in range(0, len(jobs), max(1, size)):
        part = jobs[i : i + size]
        outcome = _try_part(part, spec, store, plan_keys, data, progress, dev)
        # the retries run here, outside the except block: the failed attempt's tensors, which its
        # traceback would keep alive there, are freed by now
        if outcome == "oom":
            if len(part) == 1:
                raise torch.OutOfMemoryError(f"{part[0].run_id}: out of GPU memory even on its own")
            torch.cuda.empty_cache()
            half = len(part) // 2
            for piece in (part[:half], part[half:]):
                try:
                    _train_group(piece, spec, store, plan_keys, data, progress)
                except TrainingError as exc:
                    first = first or exc
        elif outcome == "diverged":
            try:
                _one_by_one([j for j in part if not store.is_done(j.key)], spec, store, plan_keys, data, progress)
            except TrainingError as exc:
                first = first or exc
    if first is not None:
        raise first


def _try_part(
    part: list[Job],
    spec: AuditSpec,
    store: JobStore,
    plan_keys: dict[str, str],
    data: DataBundle,
    progress: Progress,
    dev: torch.device,
) -> str:
    """Train one part as an ensemble: "done", or "oom" / "diverged" for the caller to retry."""
    try:
        _train_part(part, spec, store, plan_keys, data, progress, dev)
    except torch.OutOfMemoryError:
        return "oom"
    except TrainingError:
        return "diverged"
    return "done"


def _one_by_one(
    jobs: list[Job], spec: AuditSpec, store: JobStore, plan_keys: dict[str, str], data: DataBundle, progress: Progress
) -> None:
    """Train ``jobs`` one after another, each saved as it finishes; the first error is raised
    once all have been tried."""
    first: TrainingError | None = None
    for job in jobs:
        try:
            run_job(job, spec, store, plan_keys, data, progress)
        except TrainingError as exc:
            first = first or exc
    if first is not None:
        raise first


def _train_part(
    jobs: list[Job],
    spec: AuditSpec,
    store: JobStore,
    plan_keys: dict[str, str],
    data: DataBundle,
    progress: Progress,
    dev: torch.device,
) -> None:
    if len(jobs) == 1:
        run_job(jobs[0], spec, store, plan_keys, data, progress)
        return
    start = time.perf_counter()
    init_state = store.load_weights(jobs[0].deps[0])  # one M0 for every member (part of the group key)
    members, extras = [], []
    tables: dict[str, torch.Tensor] = {}  # one copy of each distinct table (the KD members share one)
    for job in jobs:
        target, extra = job_targets(job, spec, store, plan_keys, data)
        if target is not None:
            target = tables.setdefault(_digest(target), target)
        hints = None
        if "hint" in job.params:
            cap = spec.protocol.hint.max_table_mb if spec.protocol.hint is not None else 2048.0
            hints = hint_table(job, data, store, plan_keys["teacher"], cap)
        members.append(Member(job.params, target, hints, job.run_id))
        extras.append({**extra, "ensemble": {"members": len(jobs)}})
        progress.job_started(job, job.params["train"]["epochs"])

    def on_epoch(epoch: int, epochs: int, losses: list[float]) -> None:
        for job, loss in zip(jobs, losses, strict=True):
            progress.epoch_done(job, epoch, epochs, loss)

    results = train_ensemble(
        members, data, init_state, device=dev, eval_batch_size=spec.train.eval_batch_size, on_epoch=on_epoch
    )
    seconds = (time.perf_counter() - start) / len(jobs)  # each member's share of the group's time
    for job, result, extra in zip(jobs, results, extras, strict=True):
        result.seconds = seconds
        save_result(job, store, base_record_of(job, spec, data, dev), result, extra)


def _digest(t: torch.Tensor) -> str:
    """A table's content, hashed: equal tables (the teacher's logits of every KD member, the shared
    RCD tables) are passed to the ensemble once."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str((tuple(t.shape), t.dtype)).encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def auto_size(job: Job, data: DataBundle, dev: torch.device, share: float = 0.6) -> int:
    """How many members of ``job``'s kind fit in ``share`` of the GPU's free memory, from the
    measured peak memory of one training step of one model (:func:`step_bytes`)."""
    per_member = step_bytes(job, data, dev)
    free, _ = torch.cuda.mem_get_info(dev)
    return max(1, min(AUTO_MAX, int(share * free // max(per_member, 1))))


def step_bytes(job: Job, data: DataBundle, dev: torch.device) -> int:
    """Peak GPU memory of one training step of one model of ``job`` (forward and backward on one
    batch), plus its optimiser state (two buffers per weight, as Adam keeps)."""
    from .train import make_model

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    model = make_model(job.params, data).to(dev)
    batch = int(job.params["train"]["batch_size"])
    x = data.x_train[:batch].to(dev)
    y = data.y_train[:batch].to(dev)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    peak = torch.cuda.max_memory_allocated(dev) - before + 2 * weights
    del model, x, y
    torch.cuda.empty_cache()
    return int(peak)


def execute_plan(
    spec: AuditSpec,
    plan: Plan,
    store: JobStore,
    data: DataBundle,
    progress: Progress | None = None,
) -> ExecutionStats:
    """The ``local`` executor in this process: every job in topological order, each with
    :func:`job_threads` torch threads."""
    progress = progress or NullProgress()
    start = time.perf_counter()
    stats, _, todo = begin_execution(plan, store, progress)
    return run_here(spec, plan, store, data, progress, stats, todo, start)


def run_here(
    spec: AuditSpec,
    plan: Plan,
    store: JobStore,
    data: DataBundle,
    progress: Progress,
    stats: ExecutionStats,
    todo: list[Job],
    start: float,
) -> ExecutionStats:
    """The jobs ``todo`` (in plan order) in this process, after :func:`begin_execution`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(job_threads(spec))
    try:
        plan_keys = plan_keys_of(plan)
        units = plan_units(todo, spec, data)
        for unit in units:
            outcomes = run_unit(unit, spec, store, plan_keys, data, progress)
            for job, outcome in zip(unit, outcomes, strict=True):
                (stats.skipped if outcome == "skipped" else stats.trained).append(job.run_id)
                if job.trains:
                    progress.job_finished(job, skipped=outcome == "skipped")
    finally:
        torch.set_num_threads(threads)
    stats.seconds = time.perf_counter() - start
    stats.where = f"local, in one process, {job_threads(spec)} thread(s) per job{on_device(spec)}"
    stats.where += ensembles_note(units)
    return stats
