"""The ``local`` executor on several cores: jobs in worker processes, the same numbers as one process.

The grids are digits-mlp with a 16-unit MLP (21 models): small enough that the automatic choice
trains them in this process, so the pool is forced with ``execution.workers=2``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY2, as_sets, cli_env, kdaudit, kdaudit_popen, outputs_by_key, records
from kdaudit.audit import run_audit
from kdaudit.config.loader import resolve_spec
from kdaudit.errors import KdauditError, TrainingError
from kdaudit.execute import pool as pool_mod
from kdaudit.execute import runner
from kdaudit.execute.runner import job_threads, load_data
from kdaudit.plan import build_plan

GRID = TINY2


class Events:
    """A progress that records what it is told, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def start(self, total, todo):
        self.seen.append(("start", total, todo))

    def job_started(self, job, epochs):
        self.seen.append(("job_started", job.run_id, epochs))

    def epoch_done(self, job, epoch, epochs, loss):
        self.seen.append(("epoch_done", job.run_id, epoch))

    def job_finished(self, job, skipped):
        self.seen.append(("job_finished", job.run_id, skipped))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("pool") / "here"
    outcome = run_audit(resolve_spec("digits-mlp", [*GRID, "execution.workers=1"]), out)
    assert outcome.meta["execution"] == "local, in one process, 1 thread(s) per job"
    return out


@pytest.mark.slow  # two audits of 21 models, one in worker processes
def test_worker_processes_give_the_numbers_of_one_process(one_process, tmp_path, monkeypatch):
    def not_here(*a, **k):
        raise AssertionError("a job trained in the kdaudit process")

    monkeypatch.setattr(runner, "train_model", not_here)  # the workers run their own, unpatched copy
    out = tmp_path / "pool"
    events = Events()
    outcome = run_audit(resolve_spec("digits-mlp", [*GRID, "execution.workers=2"]), out, events)
    assert outcome.meta["execution"] == "local, 2 worker processes, 1 thread(s) per job"
    assert (out / "runs.csv").read_bytes() == (one_process / "runs.csv").read_bytes()
    ref, got = outputs_by_key(one_process), outputs_by_key(out)
    assert set(got) == set(ref) and len(got) == 21
    for key in ref:
        for name in ref[key]:
            assert np.array_equal(ref[key][name], got[key][name]), (key, name)
    assert all(r["host"]["threads"] == 1 for r in records(out).values())
    # progress from the workers reaches the caller: every model starts, runs 2 epochs and finishes
    plan = build_plan(resolve_spec("digits-mlp", GRID))
    names = {j.run_id for j in plan.trained}
    assert events.seen[0] == ("start", 21, 21)
    for kind in ("job_started", "job_finished"):
        assert sorted(e[1] for e in events.seen if e[0] == kind) == sorted(names)
    for name in names:  # a model's epochs are reported between its start and its end
        mine = [e[0] for e in events.seen if e[1] == name]
        assert mine == ["job_started", "epoch_done", "epoch_done", "job_finished"], (name, mine)
    # the teacher finished before any KD student started
    order = [(e[0], e[1]) for e in events.seen]
    first_kd = min(i for i, e in enumerate(order) if e[0] == "job_started" and e[1].startswith("kd-"))
    assert order.index(("job_finished", "teacher")) < first_kd
    # a rerun trains nothing
    again = Events()
    run_audit(resolve_spec("digits-mlp", [*GRID, "execution.workers=2"]), out, again)
    assert not [e for e in again.seen if e[0] == "job_started"]
    assert "execution" not in (out / "audit.json").read_text()


def test_threads_per_job_and_the_automatic_choice(monkeypatch):
    monkeypatch.setattr(runner, "cores", lambda: 8)
    spec = lambda *sets: resolve_spec("digits-mlp", list(sets))  # noqa: E731
    assert job_threads(spec()) == 1  # one worker per core, one thread each
    assert job_threads(spec("execution.workers=2")) == 4  # the cores shared among the workers
    assert job_threads(spec("execution.workers=1")) == 8
    assert job_threads(spec("execution.workers=3")) == 2
    assert job_threads(spec("execution.workers=16")) == 1
    assert job_threads(spec("execution.threads_per_worker=3")) == 3
    assert job_threads(spec("train.threads=2", "execution.threads_per_worker=3")) == 2
    assert job_threads(spec("execution.workers=4"), workers_per_host=2) == 4  # dask: per host

    small = spec("protocol.seeds=2", "train.epochs=1")
    plan, data = build_plan(small), load_data(small)
    todo = list(plan.jobs)
    work = pool_mod.pool_work(todo, data)
    assert work == len(data.x_train) * 1 * len(plan.trained)
    assert work < pool_mod.MIN_POOL_WORK and not pool_mod.use_pool(small, todo, data)
    monkeypatch.setattr(pool_mod, "MIN_POOL_WORK", work)
    assert pool_mod.use_pool(small, todo, data)  # worth it: one worker per core
    one = spec("protocol.seeds=2", "train.epochs=1", "execution.workers=1")
    assert not pool_mod.use_pool(one, todo, data)
    forced = spec("protocol.seeds=2", "train.epochs=1", "execution.workers=2")
    monkeypatch.setattr(pool_mod, "MIN_POOL_WORK", 10**12)
    assert pool_mod.use_pool(forced, todo, data)  # asked for
    assert not pool_mod.use_pool(forced, [plan.init, plan.teacher], data)  # one job to train
    monkeypatch.setattr(runner, "cores", lambda: 1)
    assert not pool_mod.use_pool(small, todo, data)  # one core: one process


def test_a_failing_job_raises_its_own_error_and_keeps_what_finished(tmp_path):
    # a loss that overflows: every job fails the same way, in the worker as in this process
    sets = [*GRID, "train.lr=1e30"]
    with pytest.raises(TrainingError) as here:
        run_audit(resolve_spec("digits-mlp", [*sets, "execution.workers=1"]), tmp_path / "here")
    with pytest.raises(TrainingError) as there:
        run_audit(resolve_spec("digits-mlp", [*sets, "execution.workers=2"]), tmp_path / "pool")
    assert "the training loss became" in str(here.value) and "the training loss became" in str(there.value)
    # M0 was saved before anything failed, and no half-written job is left behind
    assert [r for r in records(tmp_path / "pool")] == ["m0"]
    assert not list((tmp_path / "pool" / "jobs").glob(".tmp-*"))


@pytest.mark.slow
def test_a_worker_killed_mid_job_loses_nothing(one_process, tmp_path):
    out = tmp_path / "killed"
    args = [
        "run",
        "digits-mlp",
        *as_sets(GRID),
        "--workers",
        "2",
        "--out",
        str(out),
        "--quiet",
    ]
    # every worker kills itself (SIGKILL) in its 3rd epoch of training
    r = kdaudit(*args, env=cli_env(KDAUDIT_FAILPOINT="train.epoch:3"))
    assert r.returncode == 2, r.stderr
    assert "a worker process died" in r.stderr and "rerun to resume" in r.stderr
    finished = records(out)
    assert 0 < len(finished) < 22
    r = kdaudit(*args)
    assert r.returncode == 0, r.stderr
    assert (out / "runs.csv").read_bytes() == (one_process / "runs.csv").read_bytes()
    again = records(out)
    assert len(again) == 22
    assert all(again[k]["created"] == v["created"] for k, v in finished.items())  # nothing retrained


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, grandchildren, ...), read from /proc."""
    parent_of = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            parent_of[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent_of.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_workers_end_with_the_kdaudit_process(tmp_path, sig):
    out = tmp_path / "run"
    sets = ["protocol.seeds=3", "train.epochs=30", "model.kwargs.hidden=[64]", "train.threads=1"]
    proc = kdaudit_popen("run", "digits-mlp", *as_sets(sets), "--workers", "2", "--out", str(out), "--quiet")
    try:
        deadline = time.monotonic() + 120
        while len(records(out)) < 3 and time.monotonic() < deadline:  # M0 and two trained models
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert len(records(out)) >= 3
        below = _descendants(proc.pid)
        assert len(below) >= 3  # the fork server and two workers
        os.kill(proc.pid, sig)
        proc.communicate(timeout=60)
        assert proc.returncode != 0
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in below) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in below if _alive(p)], "worker processes outlived the kdaudit process"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_rich_progress_shows_one_line_per_model_in_training():
    from rich.console import Console

    from kdaudit.cli.run_cmds import RichProgress

    plan = build_plan(resolve_spec("digits-mlp", GRID))
    a, b, c = plan.trained[:3]
    with RichProgress(Console(file=open(os.devnull, "w"))) as p:
        p.start(21, 21)
        p.job_started(a, 2)
        p.job_started(b, 2)
        p.epoch_done(b, 1, 2, 0.5)
        shown = {t.description.split()[0] for t in p.progress.tasks if t.visible and t.id != p.models}
        assert shown == {a.run_id, b.run_id}
        p.job_finished(a, skipped=False)
        p.job_started(c, 2)  # reuses the first line
        p.job_finished(b, skipped=False)
        lines = [t for t in p.progress.tasks if t.id != p.models]
        assert len(lines) == 1 and lines[0].description.startswith(c.run_id)
        p.job_finished(c, skipped=False)
        assert p.progress.tasks[0].completed == 3


def test_workers_must_be_positive():
    with pytest.raises(KdauditError, match="workers"):
        resolve_spec("digits-mlp", ["execution.workers=0"])
