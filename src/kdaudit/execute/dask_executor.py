"""The ``dask`` executor: the plan's jobs as a Dask task graph.

One task per unit of work that is not done (:func:`~kdaudit.execute.groups.plan_units`: a single
job, or with ``execution.ensemble`` a group of students trained as one vectorised ensemble), each
a call of :func:`run_task` on a worker, with Dask dependencies following ``job.deps`` (the teacher
after M0, the students after M0 and, for KD, the teacher). Every task writes only its own jobs'
directories, atomically, into a store that every worker reaches at the same path. Without a
scheduler address the executor starts a :class:`distributed.LocalCluster` of ``workers``
processes (default: one per core) on 127.0.0.1; with one (``tcp://host:8786``) it runs on that
cluster.

A task that raises is retried once (an ensemble's retry trains only the members not yet saved);
a job that still fails is reported by run id at the end, after every job that does not depend on
it has finished, and the finished jobs stay in the store so a rerun resumes. A worker that dies
mid-task (killed, out of memory) loses nothing: Dask runs the task again elsewhere and the
half-written job directory is never renamed into place.

Dask is an optional dependency (``pip install 'kdaudit[dask]'``), imported only when this
executor runs.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config.schema import AuditSpec
from ..data.base import DataBundle
from ..errors import KdauditError
from ..plan.jobs import Job, Plan, device_class, job_device_class
from ..store import JobStore
from .device import GPU_WORKER_ENV, gpu_slots
from .groups import ensemble_size, ensembles_note, plan_units, run_unit, unit_deps
from .runner import (
    ExecutionStats,
    NullProgress,
    Progress,
    begin_execution,
    cores,
    job_threads,
    load_data,
    local_workers,
    on_device,
    plan_keys_of,
    run_job,
)

INSTALL_HINT = "pip install 'kdaudit[dask]'"
RETRIES = 1


def import_distributed():
    """``dask.distributed``, or a one-line :class:`KdauditError` saying what to install."""
    try:
        import distributed
    except ImportError:
        raise KdauditError(
            f"the dask executor needs dask.distributed, which is not installed: {INSTALL_HINT}"
        ) from None
    return distributed


def run_task(
    unit: list[Job],
    spec: AuditSpec,
    store_root: str,
    plan_keys: dict[str, str],
    threads_per_worker: int | None,
    workers_per_host: int,
    *deps: list[str],
) -> list[str]:
    """One unit on a Dask worker: one outcome per job ("trained" or "skipped"); ``deps`` are the
    results of the tasks it waits for (order only).

    The thread count (:func:`~kdaudit.execute.runner.job_threads`: ``train.threads``, else
    ``execution.threads_per_worker``, else the host's cores shared among its workers) is set here
    because it is per process. The dataset is loaded once per worker process and reused by its
    later tasks (:func:`~kdaudit.execute.runner.load_data`); M0 is drawn without it.
    """
    import torch

    torch.set_num_threads(job_threads(spec, workers_per_host))
    store = JobStore(store_root)
    if len(unit) == 1:
        return [run_job(unit[0], spec, store, plan_keys)]
    return run_unit(unit, spec, store, plan_keys, load_data(spec))


TaskFn = Callable[..., list[str]]


def submit_plan(
    client: Any,
    units: list[list[Job]],
    task: TaskFn,
    spec: AuditSpec,
    store_root: str,
    plan_keys: dict[str, str],
    threads_per_worker: int | None,
    workers_per_host: int,
) -> list[Any]:
    """Submit one task per unit (units in an order that respects dependencies); returns the
    futures, one per unit.

    The units holding a unit's dependencies are passed to its task as futures, so Dask runs it
    after them; dependencies already done in the store impose nothing.
    """
    token = uuid.uuid4().hex[:8]
    future_of: dict[str, Any] = {}  # job key -> the future of its unit
    futures = []
    for unit in units:
        deps = list({id(f): f for f in (future_of[k] for k in sorted(unit_deps(unit)) if k in future_of)}.values())
        first = unit[0]
        priority = {"init": 2, "teacher": 1}.get(first.kind, 0)
        resources = job_resources(first, spec)
        name = first.run_id if len(unit) == 1 else f"ensemble{len(unit)}-{first.run_id}"
        fut = client.submit(
            task,
            unit,
            spec,
            store_root,
            plan_keys,
            threads_per_worker,
            workers_per_host,
            *deps,
            key=f"kdaudit-{name}-{first.key}-{token}",
            retries=RETRIES,
            priority=priority,
            pure=False,
            **({"resources": resources} if resources else {}),
        )
        futures.append(fut)
        future_of.update((j.key, fut) for j in unit)
    return futures


def job_resources(job: Job, spec: AuditSpec) -> dict[str, float] | None:
    """What a job asks of a Dask worker: one ``GPU`` resource when it trains (or is evaluated) on
    CUDA, so a worker started with ``--resources GPU=1`` runs one such job at a time; else nothing."""
    if job.kind == "init":
        return None
    return {"GPU": 1} if job_device_class(job) == "cuda" else None


def check_gpu_workers(client: Any) -> None:
    """A plan for CUDA needs workers offering a ``GPU`` resource; without one its tasks would wait
    forever, so it ends here in one line."""
    workers = client.scheduler_info().get("workers", {})
    if not any(w.get("resources", {}).get("GPU") for w in workers.values()):
        raise KdauditError(
            "the plan trains on CUDA, but no Dask worker offers a GPU resource: start each worker with "
            "CUDA_VISIBLE_DEVICES=<its GPU> dask worker ADDRESS --resources GPU=1 (or plan with --device cpu)"
        )


def gpu_cluster(distributed: Any, slots: list[str]) -> Any:
    """A cluster on this machine with one worker process per GPU slot: each sees only its GPU
    (``CUDA_VISIBLE_DEVICES``) and offers one ``GPU`` resource."""
    workers = {
        f"gpu-{i}": {
            "cls": distributed.Nanny,
            "options": {
                "nthreads": 1,
                "resources": {"GPU": 1},
                "env": {"CUDA_VISIBLE_DEVICES": gpu, GPU_WORKER_ENV: "1"},
                "host": "127.0.0.1",
            },
        }
        for i, gpu in enumerate(slots)
    }
    scheduler = {"cls": distributed.Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
    return distributed.SpecCluster(scheduler=scheduler, workers=workers)


def execute_plan_dask(
    spec: AuditSpec,
    plan: Plan,
    store: JobStore,
    progress: Progress | None = None,
    data: DataBundle | None = None,
    *,
    task: TaskFn = run_task,
) -> ExecutionStats:
    """The ``dask`` executor (see the module docstring); same stats and progress calls as local.

    ``data`` (loaded here when None) decides which students can train as ensemble members; it is
    needed only with ``execution.ensemble``. ``task`` is the function each Dask task calls,
    :func:`run_task` unless a caller wraps it. Raises :class:`KdauditError` naming the failed run
    ids once every other job has finished.
    """
    distributed = import_distributed()
    progress = progress or NullProgress()
    ex = spec.execution
    start = time.perf_counter()
    stats, status, todo = begin_execution(plan, store, progress)
    if not todo:
        stats.seconds = time.perf_counter() - start
        return stats

    store_root = str(Path(store.root).resolve())
    plan_keys = plan_keys_of(plan)
    errors: dict[str, BaseException | None] = {}
    client = cluster = None
    gpus: list[str] | None = None
    units: list[list[Job]] = []
    try:
        if device_class(spec.train.device) == "cuda" and not ex.scheduler:
            on_device(spec)  # this machine's GPUs: one line if there are none
            gpus = gpu_slots(spec.train.device, ex.jobs_per_gpu)
        client, cluster = _connect(distributed, ex, gpus)
        if any(job_resources(j, spec) for j in todo):
            check_gpu_workers(client)
        per_host = local_workers(spec) if cluster is not None else _workers_per_host(client)
        if ensemble_size(spec) >= 2:
            gpu_workers = len(gpus) if gpus else _gpu_workers(client)
            units = plan_units(todo, spec, data if data is not None else load_data(spec), gpu_workers or None)
        else:
            units = [[j] for j in todo]
        futures = submit_plan(client, units, task, spec, store_root, plan_keys, ex.threads_per_worker, per_host)
        unit_of = {f.key: u for f, u in zip(futures, units, strict=True)}
        for fut in distributed.as_completed(futures, loop=client.loop):
            unit = unit_of[fut.key]
            if fut.status == "finished":
                outcomes = fut.result()
            else:  # the members saved before the unit failed (an ensemble's others) count as trained
                exc = _exception(fut)
                outcomes = ["trained" if store.is_done(j.key) else None for j in unit]
                errors.update((j.key, exc) for j, o in zip(unit, outcomes, strict=True) if o is None)
            for job, outcome in zip(unit, outcomes, strict=True):
                if outcome is None:
                    continue
                (stats.skipped if outcome == "skipped" else stats.trained).append(job.run_id)
                if job.trains:
                    progress.job_finished(job, skipped=outcome == "skipped")
    finally:
        _close(client, cluster)
    stats.seconds = time.perf_counter() - start
    stats.where = (
        (
            f"dask, the scheduler {ex.scheduler}"
            if ex.scheduler
            else f"dask, {len(gpus)} GPU workers on this machine"
            if gpus
            else f"dask, {ex.workers or cores()} workers on this machine"
        )
        + (f", {job_threads(spec, per_host)} thread(s) per job" if client is not None else "")
        + ensembles_note(units)
    )
    if errors:
        raise KdauditError(failure_message(todo, errors, n_finished=len(stats.trained)))
    return stats


def failure_message(todo: list[Job], errors: dict[str, BaseException | None], n_finished: int) -> str:
    """One line: the jobs that failed (with why), those not run because a dependency failed."""
    failed = [j for j in todo if j.key in errors and not any(d in errors for d in j.deps)]
    blocked = [j for j in todo if j.key in errors and any(d in errors for d in j.deps)]
    parts = [
        f"{len(failed)} of {len(todo)} jobs failed on the dask executor (after {RETRIES} retry): "
        + ", ".join(f"{j.run_id} ({_describe(errors[j.key])})" for j in failed)
    ]
    if blocked:
        names = [j.run_id for j in blocked]
        shown = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
        parts.append(f"not run because a job they need failed: {shown}")
    parts.append(f"{n_finished} finished jobs are saved in the store; rerun to resume")
    return "; ".join(parts)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "cancelled"
    text = " ".join(str(exc).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _exception(fut: Any) -> BaseException | None:
    try:
        return fut.exception()
    except BaseException as exc:  # cancelled futures raise instead of returning their exception
        return exc


def _connect(distributed: Any, ex: Any, gpus: list[str] | None = None) -> tuple[Any, Any]:
    if ex.scheduler:
        try:
            return distributed.Client(ex.scheduler, set_as_default=False), None
        except (OSError, TimeoutError, ValueError) as exc:
            raise KdauditError(f"cannot connect to the Dask scheduler {ex.scheduler}: {exc}") from None
    if gpus:
        cluster = gpu_cluster(distributed, gpus)
        try:
            return distributed.Client(cluster, set_as_default=False), cluster
        except BaseException:
            cluster.close()
            raise
    cluster = distributed.LocalCluster(
        n_workers=ex.workers or cores(),
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    try:
        return distributed.Client(cluster, set_as_default=False), cluster
    except BaseException:
        cluster.close()
        raise


def _gpu_workers(client: Any) -> int:
    """The ``GPU`` resources the cluster's workers offer, summed (0 on a CPU cluster)."""
    workers = client.scheduler_info().get("workers", {})
    return int(sum(w.get("resources", {}).get("GPU", 0) for w in workers.values()))


def _workers_per_host(client: Any) -> int:
    """The most worker processes on one host of a running cluster (at least 1)."""
    try:
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
    except TypeError:  # older distributed: no n_workers argument
        workers = client.scheduler_info().get("workers", {})
    hosts = Counter(w.get("host") for w in workers.values())
    return max(hosts.values(), default=1)


def _close(client: Any, cluster: Any) -> None:
    for thing in (client, cluster):
        if thing is not None:
            with contextlib.suppress(Exception):  # closing a cluster that is already gone
                thing.close()
