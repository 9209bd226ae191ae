"""The ``dask`` executor: the plan's jobs as a Dask task graph.

One task per job that is not done, each a call of :func:`~kdaudit.execute.runner.run_job` on a
worker, with Dask dependencies following ``job.deps`` (the teacher after M0, the students after
M0 and, for KD, the teacher). Every task writes only its own job directory, atomically, into a
store that every worker reaches at the same path. Without a scheduler address the executor
starts a :class:`distributed.LocalCluster` of ``workers`` processes (default: one per core) on
127.0.0.1; with one (``tcp://host:8786``) it runs on that cluster.

A task that raises is retried once; a job that still fails is reported by run id at the end,
after every job that does not depend on it has finished, and the finished jobs stay in the store
so a rerun resumes. A worker that dies mid-task (killed, out of memory) loses nothing: Dask runs
the task again elsewhere and the half-written job directory is never renamed into place.

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
from ..errors import KdauditError
from ..plan.jobs import Job, Plan, device_class, job_device_class
from ..store import JobStore
from .device import GPU_WORKER_ENV, gpu_slots
from .runner import (
    ExecutionStats,
    NullProgress,
    Progress,
    begin_execution,
    cores,
    job_threads,
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
    job: Job,
    spec: AuditSpec,
    store_root: str,
    plan_keys: dict[str, str],
    threads_per_worker: int | None,
    workers_per_host: int,
    *deps: str,
) -> str:
    """One job on a Dask worker; ``deps`` are the results of the tasks it waits for (order only).

    The thread count (:func:`~kdaudit.execute.runner.job_threads`: ``train.threads``, else
    ``execution.threads_per_worker``, else the host's cores shared among its workers) is set here
    because it is per process. The dataset is loaded once per
    worker process and reused by its later tasks (:func:`~kdaudit.execute.runner.load_data`).
    """
    import torch

    torch.set_num_threads(job_threads(spec, workers_per_host))
    return run_job(job, spec, JobStore(store_root), plan_keys)


TaskFn = Callable[..., str]


def submit_plan(
    client: Any,
    jobs: list[Job],
    task: TaskFn,
    spec: AuditSpec,
    store_root: str,
    plan_keys: dict[str, str],
    threads_per_worker: int | None,
    workers_per_host: int,
) -> dict[str, Any]:
    """Submit one task per job (in topological order); returns job key → future.

    A job's dependencies that are in ``jobs`` are passed to its task as futures, so Dask runs it
    after them; dependencies already done in the store impose nothing.
    """
    token = uuid.uuid4().hex[:8]
    futures: dict[str, Any] = {}
    for job in jobs:
        deps = [futures[k] for k in job.deps if k in futures]
        priority = {"init": 2, "teacher": 1}.get(job.kind, 0)
        resources = job_resources(job, spec)
        futures[job.key] = client.submit(
            task,
            job,
            spec,
            store_root,
            plan_keys,
            threads_per_worker,
            workers_per_host,
            *deps,
            key=f"kdaudit-{job.run_id}-{job.key}-{token}",
            retries=RETRIES,
            priority=priority,
            pure=False,
            **({"resources": resources} if resources else {}),
        )
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
    *,
    task: TaskFn = run_task,
) -> ExecutionStats:
    """The ``dask`` executor (see the module docstring); same stats and progress calls as local.

    ``task`` is the function each Dask task calls, :func:`run_task` unless a caller wraps it.
    Raises :class:`KdauditError` naming the failed run ids once every other job has finished.
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
    by_key = {j.key: j for j in todo}
    errors: dict[str, BaseException | None] = {}
    client = cluster = None
    gpus: list[str] | None = None
    try:
        if device_class(spec.train.device) == "cuda" and not ex.scheduler:
            on_device(spec)  # this machine's GPUs: one line if there are none
            gpus = gpu_slots(spec.train.device, ex.jobs_per_gpu)
        client, cluster = _connect(distributed, ex, gpus)
        if any(job_resources(j, spec) for j in todo):
            check_gpu_workers(client)
        per_host = local_workers(spec) if cluster is not None else _workers_per_host(client)
        futures = submit_plan(client, todo, task, spec, store_root, plan_keys, ex.threads_per_worker, per_host)
        job_of = {f.key: by_key[k] for k, f in futures.items()}
        for fut in distributed.as_completed(list(futures.values()), loop=client.loop):
            job = job_of[fut.key]
            if fut.status == "finished":
                outcome = fut.result()
                (stats.skipped if outcome == "skipped" else stats.trained).append(job.run_id)
                if job.trains:
                    progress.job_finished(job, skipped=outcome == "skipped")
            else:
                errors[job.key] = _exception(fut)
    finally:
        _close(client, cluster)
    stats.seconds = time.perf_counter() - start
    stats.where = (
        f"dask, the scheduler {ex.scheduler}"
        if ex.scheduler
        else f"dask, {len(gpus)} GPU workers on this machine"
        if gpus
        else f"dask, {ex.workers or cores()} workers on this machine"
    ) + (f", {job_threads(spec, per_host)} thread(s) per job" if client is not None else "")
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
