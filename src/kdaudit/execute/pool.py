"""The ``local`` executor on several cores: independent jobs train at the same time, one worker
process per core.

A grid is hundreds of small models, and a small model leaves most of a core idle between its
matrix products (Python, the autograd engine, the optimizer, small element-wise kernels). Two
single-threaded jobs on two cores train about 1.5 times as many samples per second as one job on
two threads (``benchmarks/bench_training.py``), so by default every job trains on one thread and
as many jobs run at once as there are cores.

The worker processes fork from a ``forkserver`` that imports torch and kdaudit once (a few
seconds, once per ``kdaudit`` process; later pools start in a fraction of a second), and receive
the dataset through shared memory, not one copy each. Every job is the same call of
:func:`~kdaudit.execute.runner.run_job` as in the ``kdaudit`` process and writes only its own job
directory, atomically. Numbers do not depend on where a job ran, only on its thread count
(:func:`~kdaudit.execute.runner.job_threads`): with the same threads, a job trained by a worker is
bit-identical to the same job trained in the ``kdaudit`` process.

Failures: a job that raises stops new jobs from starting; the jobs already running finish and
are saved, then the error is raised as it was raised in the worker. A worker that dies (killed,
out of memory) ends the run with an error naming the jobs it was training; everything finished is
in the store, so a rerun trains only what is missing. If the ``kdaudit`` process itself dies, its
workers notice within a second and exit.
"""

from __future__ import annotations

import multiprocessing.context
import os
import queue as queue_mod
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from typing import Any

from ..config.schema import AuditSpec
from ..data.base import DataBundle
from ..errors import KdauditError
from ..plan.jobs import Job, Plan, device_class
from ..store import JobStore
from .device import gpu_slots, pin_gpu
from .groups import ensembles_note, plan_units, run_here, run_unit, unit_deps
from .runner import (
    ExecutionStats,
    NullProgress,
    Progress,
    begin_execution,
    job_threads,
    local_workers,
    on_device,
    plan_keys_of,
)

# a grid smaller than this many training samples × epochs (summed over the jobs to train) runs
# in the kdaudit process: starting workers would cost more than it saves
MIN_POOL_WORK = 1_000_000


def pool_work(todo: list[Job], data: DataBundle) -> int:
    """Training samples × epochs of the jobs still to train."""
    n = len(data.x_train)
    return sum(n * int(j.params["train"]["epochs"]) for j in todo if j.trains and "checkpoint" not in j.params)


def use_pool(spec: AuditSpec, todo: list[Job], data: DataBundle) -> bool:
    """Whether the local executor starts worker processes: more than one worker and more than one
    job to train, and either ``execution.workers`` set or a grid worth it (:data:`MIN_POOL_WORK`).
    Either way each job trains with ``job_threads`` threads, so the numbers are the same."""
    workers = local_workers(spec)
    trainable = [j for j in todo if j.trains]
    if workers < 2 or len(trainable) < 2:
        return False
    if device_class(spec.train.device) == "cuda":  # one worker per GPU slot: always worth it
        return True
    return spec.execution.workers is not None or pool_work(todo, data) >= MIN_POOL_WORK


# -- in the worker processes -----------------------------------------------------------------

_WORKER: dict = {}


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie, killed but not yet reaped, has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a process exists under that pid
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):  # no /proc: only the signal test above
        return False


def _watch_parent(parent: int, server: int) -> None:
    """Exit when the kdaudit process is gone: killed with SIGKILL, it cannot stop its workers.
    (The fork server, our parent, exits with it: we are then adopted by another process.)"""
    while True:
        time.sleep(0.5)
        if os.getppid() != server or _gone(parent):
            os._exit(1)


def _init_worker(data: DataBundle, threads: int, events, parent: int, gpus) -> None:
    import torch

    if gpus is not None:  # a GPU audit: this worker's one GPU, before any CUDA call here
        pin_gpu(gpus.get(timeout=60))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the kdaudit process's to handle
    torch.set_num_threads(threads)
    _WORKER.update(data=data, events=events)
    threading.Thread(target=_watch_parent, args=(parent, os.getppid()), daemon=True).start()


class _QueueProgress:
    """Progress events of a worker, sent to the kdaudit process."""

    def __init__(self, events) -> None:
        self.events = events

    def start(self, total: int, todo: int) -> None: ...

    def job_started(self, job: Job, epochs: int) -> None:
        self.events.put(("job_started", job.key, epochs))

    def epoch_done(self, job: Job, epoch: int, epochs: int, loss: float) -> None:
        self.events.put(("epoch_done", job.key, epoch, epochs, loss))

    def job_finished(self, job: Job, skipped: bool) -> None: ...


def _run_in_worker(unit: list[Job], spec: AuditSpec, store: JobStore, plan_keys: dict[str, str]) -> list[str]:
    return run_unit(unit, spec, store, plan_keys, _WORKER["data"], _QueueProgress(_WORKER["events"]))


def _warm() -> None:
    """What every job would import or build lazily the first time (the optimizers' dynamo hooks,
    about 3 s), done once in the fork server so each worker inherits it."""
    import torch

    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


# -- in the kdaudit process ------------------------------------------------------------------

_CONTEXT: multiprocessing.context.BaseContext | None = None


def _context():
    """A forkserver that has imported torch and kdaudit: workers fork from it, already warm.
    (Forking the kdaudit process itself is unsafe once torch's thread pools have started.)"""
    global _CONTEXT
    if _CONTEXT is None:
        import torch.multiprocessing as tmp  # registers the shared-memory pickling of tensors

        ctx: multiprocessing.context.BaseContext
        try:
            server = tmp.get_context("forkserver")
            server.set_forkserver_preload(["kdaudit.execute._warm"])
            ctx = server
        except ValueError:  # no fork server on this platform (Windows): fresh interpreters
            ctx = tmp.get_context("spawn")
        _CONTEXT = ctx
    return _CONTEXT


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start workers without re-running the caller's ``__main__``: the workers need only kdaudit,
    and a script calling kdaudit at top level (no ``if __name__ == "__main__":`` guard) would
    otherwise run again in every worker."""
    main = sys.modules.get("__main__")
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__
    }
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
        yield
    finally:
        if main is not None:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


def execute_local(
    spec: AuditSpec,
    plan: Plan,
    store: JobStore,
    data: DataBundle,
    progress: Progress | None = None,
) -> ExecutionStats:
    """The ``local`` executor: the plan's missing jobs on ``local_workers`` worker processes when
    :func:`use_pool` says so, else in this process
    (:func:`~kdaudit.execute.groups.run_here`); the same stats and progress calls either way."""
    progress = progress or NullProgress()
    start = time.perf_counter()
    on_device(spec)  # a device that cannot be used here: one line, before anything is written
    stats, status, todo = begin_execution(plan, store, progress)
    if not use_pool(spec, todo, data):
        return run_here(spec, plan, store, data, progress, stats, todo, start)
    return run_pool(spec, plan, store, data, progress, stats, status, todo, start)


def run_pool(
    spec: AuditSpec,
    plan: Plan,
    store: JobStore,
    data: DataBundle,
    progress: Progress,
    stats: ExecutionStats,
    status: dict[str, str],
    todo: list[Job],
    start: float,
) -> ExecutionStats:
    """The jobs ``todo`` on worker processes, each as soon as the jobs it needs are in the store."""
    plan_keys = plan_keys_of(plan)
    by_key = {j.key: j for j in plan.jobs}
    done = {k for k, s in status.items() if s == "done"}
    units = plan_units(todo, spec, data)  # single jobs, and students trained as one ensemble
    waiting = list(units)
    running: dict[Future, list[Job]] = {}
    training: set[str] = set()  # run ids a worker has started and not finished
    failure: BaseException | None = None
    ctx = _context()
    events = ctx.Queue()
    workers = min(local_workers(spec), max(1, len(todo)))
    gpus = None
    if device_class(spec.train.device) == "cuda":  # each worker takes one slot: its GPU
        gpus = ctx.Queue()
        for gpu in gpu_slots(spec.train.device, spec.execution.jobs_per_gpu)[:workers]:
            gpus.put(gpu)
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(data, job_threads(spec), events, os.getpid(), gpus),
    )

    def drain() -> None:
        _drain(events, by_key, training, progress)

    try:
        while waiting or running:
            if failure is None:
                for unit in [u for u in waiting if unit_deps(u) <= done]:
                    waiting.remove(unit)
                    with _main_module_hidden():  # a submit may start a worker
                        running[pool.submit(_run_in_worker, unit, spec, store, plan_keys)] = unit
            if not running:
                break  # nothing can start: a job it needs failed
            finished, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            for fut in finished:
                unit = running.pop(fut)
                error = _collect(fut, unit, training, done, stats, progress, drain)
                if error is not None and failure is None:  # the job's own error: the others may finish first
                    failure = error
                    for other in running:
                        other.cancel()
            for fut in [f for f in running if f.cancelled()]:
                running.pop(fut)
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    drain()
    events.close()
    if failure is not None:
        raise failure
    stats.seconds = time.perf_counter() - start
    stats.where = f"local, {workers} worker processes, {job_threads(spec)} thread(s) per job"
    if gpus is not None:
        stats.where = f"local, {workers} worker processes on {len(set(gpu_slots(spec.train.device, 1)))} GPU(s)"
    stats.where += ensembles_note(units)
    return stats


def _drain(events: Any, by_key: dict[str, Job], training: set[str], progress: Progress) -> None:
    """Pass the workers' progress events on to ``progress``; ``training`` holds the run ids started."""
    while True:
        try:
            event = events.get_nowait()
        except (queue_mod.Empty, OSError, ValueError):
            return
        job = by_key.get(event[1])
        if job is None:
            continue
        if event[0] == "job_started":
            training.add(job.run_id)
            progress.job_started(job, event[2])
        elif event[0] == "epoch_done":
            progress.epoch_done(job, *event[2:])


def _collect(
    fut: Future,
    unit: list[Job],
    training: set[str],
    done: set[str],
    stats: ExecutionStats,
    progress: Progress,
    drain: Callable[[], None],
) -> BaseException | None:
    """Record a finished future: its jobs done, or the unit's own error returned; a dead worker raises."""
    try:
        outcomes = fut.result()
    except BrokenProcessPool:
        drain()
        lost = sorted(training) or [j.run_id for j in unit]
        raise KdauditError(
            f"a worker process died (killed, or out of memory) while these jobs were training: "
            f"{', '.join(lost)}; every job that finished is saved in the store; rerun to resume"
        ) from None
    except BaseException as exc:
        training.difference_update(j.run_id for j in unit)
        return exc
    for job, outcome in zip(unit, outcomes, strict=True):
        training.discard(job.run_id)
        done.add(job.key)
        (stats.skipped if outcome == "skipped" else stats.trained).append(job.run_id)
        if job.trains:
            progress.job_finished(job, skipped=outcome == "skipped")
    return None


def _stop(pool: ProcessPoolExecutor) -> None:
    """Kill the workers now (Ctrl-C, a dead worker): their unfinished jobs were never saved."""
    processes = list(getattr(pool, "_processes", {}).values())
    for proc in processes:
        with suppress(Exception):
            proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.join(timeout=5)
