"""The ``dask`` executor: same numbers as ``local``, dependencies, retries, dead workers.

Every cluster here is a LocalCluster of 2 single-threaded worker processes bound to 127.0.0.1.
Runs fix the torch thread count to 1 on both executors (``train.threads`` for local,
``execution.threads_per_worker`` for dask): numbers are bit-identical at equal thread counts.
"""

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import FOUR_CONDITIONS, as_sets, assert_runs_close, kdaudit_here, outputs_by_key, records, tiny_grid

distributed = pytest.importorskip("distributed")

from kdaudit.config.loader import resolve_spec  # noqa: E402
from kdaudit.errors import KdauditError  # noqa: E402
from kdaudit.execute.dask_executor import execute_plan_dask, run_task  # noqa: E402
from kdaudit.plan.jobs import build_plan  # noqa: E402
from kdaudit.store import JobStore  # noqa: E402

TINY = as_sets(tiny_grid(1, FOUR_CONDITIONS))
LOCAL_1T = [*TINY, "--set", "train.threads=1"]
DASK_1T = [*TINY, "--set", "execution.threads_per_worker=1"]
SMALL = tiny_grid(
    1,
    "protocol.conditions=[siddo,kd]",
    "protocol.alphas=[0.5]",
    "execution.executor=dask",
    "execution.threads_per_worker=1",
)


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "ref"
    assert kdaudit_here("run", "digits-mlp", *LOCAL_1T, "--out", str(out), "--quiet") == 0
    return out


@pytest.mark.slow  # a local cluster, and audits of 21 models on both executors
def test_dask_gives_the_same_runs_csv_and_logits_as_local(local_ref, tmp_path, capsys):
    out = tmp_path / "dask"
    start = time.perf_counter()
    assert (
        kdaudit_here(
            "run", "digits-mlp", *DASK_1T, "--out", str(out), "--executor", "dask", "--workers", "2", "--quiet"
        )
        == 0
    )
    assert "on 2 Dask workers" in capsys.readouterr().out
    assert (out / "runs.csv").read_bytes() == (local_ref / "runs.csv").read_bytes()
    ref, got = outputs_by_key(local_ref), outputs_by_key(out)
    assert set(got) == set(ref) and len(got) == 21  # same job keys: executors do not change them
    for key in ref:
        for name in ref[key]:
            assert np.array_equal(ref[key][name], got[key][name]), (key, name)
    recs = records(out)
    assert len(recs) == 22 and all(rec["host"]["threads"] == 1 for rec in recs.values())
    assert "executor: dask" in (out / "spec.yaml").read_text()
    # a rerun on dask trains nothing and starts no cluster
    assert kdaudit_here("run", "digits-mlp", *DASK_1T, "--out", str(out), "--executor", "dask", "--quiet") == 0
    assert {k: v["created"] for k, v in records(out).items()} == {k: v["created"] for k, v in recs.items()}
    print(f"dask run + rerun: {time.perf_counter() - start:.1f} s")


# -- in-process runs with a wrapped task: dependencies, retries, failure collection --------------


def recording_task(events: str, fail: tuple, unit, spec, root, plan_keys, threads, per_host, *deps):
    """``run_task`` that notes each attempt of a unit (its members joined by "+") and its start
    and end time, and fails the members in ``fail`` after saving the others (as an ensemble whose
    member diverges does)."""
    d = Path(events)
    name = "+".join(j.run_id for j in unit)
    with open(d / f"{name}.attempts", "a") as fh:
        fh.write(f"{os.getpid()}\n")
    failing = [j.run_id for j in unit if j.run_id in fail]
    if failing:
        rest = [j for j in unit if j.run_id not in fail]
        if rest:
            run_task(rest, spec, root, plan_keys, threads, per_host, *deps)
        raise RuntimeError(f"injected failure in {failing[0]}")
    start = time.time()
    outcomes = run_task(unit, spec, root, plan_keys, threads, per_host, *deps)
    (d / f"{name}.json").write_text(json.dumps({"start": start, "end": time.time(), "deps": list(deps)}))
    return outcomes


class Recorder:
    def __init__(self):
        self.started, self.finished = None, []

    def start(self, total, todo):
        self.started = (total, todo)

    def job_started(self, job, epochs): ...

    def epoch_done(self, job, epoch, epochs, loss): ...

    def job_finished(self, job, skipped):
        self.finished.append((job.run_id, skipped))


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster for the in-process runs: its workers stay warm between them."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this file
    c = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    yield c
    c.close()


@pytest.fixture(scope="module")
def flaky_then_rerun(tmp_path_factory, cluster):
    root = tmp_path_factory.mktemp("flaky")
    spec = resolve_spec("digits-mlp", [*SMALL, f"execution.scheduler={cluster.scheduler_address}"])
    plan = build_plan(spec)
    store = JobStore(root / "jobs")
    first, second = root / "first", root / "second"
    first.mkdir(), second.mkdir()
    progress = Recorder()
    t0 = time.perf_counter()
    with pytest.raises(KdauditError) as err:
        execute_plan_dask(
            spec, plan, store, progress, task=functools.partial(recording_task, str(first), ("teacher", "siddo-s01"))
        )
    done_after_first = {j.run_id for j in plan.jobs if store.is_done(j.key)}
    t1 = time.perf_counter()
    stats = execute_plan_dask(spec, plan, store, Recorder(), task=functools.partial(recording_task, str(second), ()))
    print(f"failing run {t1 - t0:.1f} s, rerun {time.perf_counter() - t1:.1f} s")
    return plan, store, first, second, str(err.value), progress, stats, done_after_first


def events(d: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in d.glob("*.json")}


@pytest.mark.slow
def test_a_failing_job_is_retried_once_then_reported_while_the_others_finish(flaky_then_rerun):
    plan, store, first, _, message, progress, stats, done_after_first = flaky_then_rerun
    # each failing task ran twice (retries=1); the jobs that need the teacher never ran
    for run_id in ("teacher", "siddo-s01"):
        assert len((first / f"{run_id}.attempts").read_text().split()) == 2
    assert not list(first.glob("kd-*.attempts"))
    assert "2 of 6 jobs failed" in message
    assert "teacher (RuntimeError: injected failure in teacher)" in message
    assert "siddo-s01 (RuntimeError: injected failure in siddo-s01)" in message
    assert "not run because a job they need failed: kd-a0.5-s01, kd-a0.5-s02" in message
    assert "2 finished jobs are saved in the store; rerun to resume" in message
    assert "\n" not in message
    # the independent jobs finished and are in the store
    assert done_after_first == {"m0", "siddo-s02"}
    assert progress.started == (5, 5) and progress.finished == [("siddo-s02", False)]
    # the rerun trains exactly what was missing
    assert sorted(stats.trained) == ["kd-a0.5-s01", "kd-a0.5-s02", "siddo-s01", "teacher"]
    assert sorted(stats.skipped) == ["m0", "siddo-s02"]
    assert all(store.is_done(j.key) for j in plan.jobs)


@pytest.mark.slow
def test_tasks_run_after_the_jobs_they_depend_on(flaky_then_rerun):
    plan, _, first, second, *_ = flaky_then_rerun
    ev1, ev2 = events(first), events(second)
    assert set(ev1) == {"m0", "siddo-s02"}
    assert ev1["siddo-s02"]["start"] >= ev1["m0"]["end"]
    assert ev1["siddo-s02"]["deps"] == [["trained"]]  # the result of M0's task
    assert set(ev2) == {"teacher", "siddo-s01", "kd-a0.5-s01", "kd-a0.5-s02"}
    for kd in ("kd-a0.5-s01", "kd-a0.5-s02"):
        assert ev2[kd]["start"] >= ev2["teacher"]["end"]
        assert ev2[kd]["deps"] == [["trained"]]  # M0 was done already: only the teacher's task
    assert ev2["teacher"]["deps"] == [] and ev2["siddo-s01"]["deps"] == []


# -- a worker killed mid-task ---------------------------------------------------------------


def arm_failpoint(value: str) -> None:
    os.environ["KDAUDIT_FAILPOINT"] = value


@pytest.mark.slow
def test_workers_killed_mid_write_lose_nothing(local_ref, cluster, tmp_path, capsys):
    """Each worker process of a running cluster is set to kill itself inside its 3rd job write
    (its files written, its record not yet); the nanny starts a fresh worker and Dask reruns the
    task. The grid completes with the same runs.csv and no half-written job counted (on a rerun,
    should a task run out of workers)."""
    out = tmp_path / "killed"
    with distributed.Client(cluster, set_as_default=False) as client:
        pids_before = set(client.run(os.getpid).values())
        client.run(arm_failpoint, "store.artifacts:3")  # these processes only: restarted ones are clean
        rc = kdaudit_here(
            "run", "digits-mlp", *DASK_1T, "--out", str(out), "--scheduler", cluster.scheduler_address, "--quiet"
        )
        client.wait_for_workers(2, timeout=120)
        pids_after = set(client.run(os.getpid).values())
    assert pids_before and not pids_before & pids_after, "both workers must have been killed and restarted"
    assert list((out / "jobs").glob(".tmp-*")), "a kill must have landed inside a job write"
    if rc != 0:  # a task whose workers all died is reported, the rest is kept
        err = capsys.readouterr().err
        assert "jobs failed on the dask executor" in err and "rerun to resume" in err
        rc = kdaudit_here("run", "digits-mlp", *DASK_1T, "--out", str(out), "--executor", "dask", "--quiet")
    assert rc == 0
    assert (out / "runs.csv").read_bytes() == (local_ref / "runs.csv").read_bytes()
    assert len(records(out)) == 22


# -- options, extras ------------------------------------------------------------------------


def test_cli_flags_override_the_spec_and_never_change_job_keys(capsys):
    from kdaudit.cli.run_cmds import apply_run_options

    spec = resolve_spec("digits-mlp", TINY[1::2])
    assert spec.execution.executor == "local" and spec.execution.workers is None  # one per core
    on = apply_run_options(spec, None, 3, "tcp://10.0.0.1:8786", None, None)
    assert (on.execution.executor, on.execution.scheduler, on.execution.workers) == ("dask", "tcp://10.0.0.1:8786", 3)
    back = apply_run_options(on, "local", None, None, None, None)
    assert back.execution.executor == "local" and back.execution.scheduler is None
    assert [j.key for j in build_plan(on).jobs] == [j.key for j in build_plan(spec).jobs]
    with pytest.raises(KdauditError, match="cannot go with --executor local"):
        apply_run_options(spec, "local", None, "tcp://h:8786", None, None)
    assert apply_run_options(spec, None, 4, None, None, None).execution.workers == 4  # the local executor's
    assert apply_run_options(spec, "dask", 4, None, None, None).execution.workers == 4
    assert kdaudit_here("run", "digits-mlp", *TINY, "--set", "execution.scheduler=tcp://h:1", "--quiet") == 2
    assert "needs executor: dask" in capsys.readouterr().err


def test_an_unreachable_scheduler_is_one_line(tmp_path, capsys):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        rc = kdaudit_here(
            "run", "digits-mlp", *TINY, "--out", str(tmp_path / "x"), "--scheduler", "tcp://127.0.0.1:9", "--quiet"
        )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("kdaudit: error: cannot connect to the Dask scheduler tcp://127.0.0.1:9")
    assert len(err.strip().splitlines()) == 1


def test_missing_dask_is_one_line_saying_what_to_install(monkeypatch):
    from kdaudit.execute import dask_executor

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(KdauditError, match=r"pip install 'kdaudit\[dask\]'"):
        dask_executor.import_distributed()


def test_importing_kdaudit_imports_neither_dask_nor_mlflow():
    code = (
        "import sys, kdaudit, kdaudit.audit, kdaudit.cli.main, kdaudit.cli.run_cmds, kdaudit.tracking, "
        "kdaudit.execute.dask_executor;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'mlflow')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_jobs_planned_for_cuda_ask_for_one_gpu_each():
    from kdaudit.execute.dask_executor import job_resources

    for device, want in (("cuda", {"GPU": 1}), ("cpu", None)):
        spec = resolve_spec("digits-mlp", [*SMALL, f"train.device={device}"])
        plan = build_plan(spec)
        assert job_resources(plan.init, spec) is None  # M0 is drawn on the CPU
        assert all(job_resources(j, spec) == want for j in plan.trained)


@pytest.mark.slow  # starts a cluster of two worker processes
def test_the_gpu_cluster_gives_each_worker_its_gpu_and_one_gpu_resource():
    from kdaudit.execute.dask_executor import gpu_cluster
    from kdaudit.execute.device import GPU_WORKER_ENV

    # two slots naming no GPU ("" hides every GPU): the same cluster a GPU machine gets, minus CUDA
    with gpu_cluster(distributed, ["", ""]) as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        env = client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get(GPU_WORKER_ENV)))
        assert sorted(env.values()) == [("", "1"), ("", "1")]
        info = client.scheduler_info()["workers"]
        assert [w["resources"] for w in info.values()] == [{"GPU": 1}, {"GPU": 1}]
        assert all(w["host"] == "127.0.0.1" for w in info.values())

        # six tasks that each need the one GPU: never two at once on a worker
        def task():
            import time as t

            start = t.monotonic()
            t.sleep(0.3)
            return distributed.get_worker().address, start, t.monotonic()

        spans = client.gather([client.submit(task, resources={"GPU": 1}, pure=False) for _ in range(6)])
        for worker in {w for w, _, _ in spans}:
            mine = sorted((a, b) for w, a, b in spans if w == worker)
            assert all(b0 <= a1 for (_, b0), (a1, _) in zip(mine, mine[1:], strict=False)), mine


@pytest.mark.slow  # starts a cluster
def test_a_cuda_plan_on_workers_without_a_gpu_resource_fails_in_one_line_instead_of_waiting(tmp_path):
    # planned for CUDA (possible on a machine without one), sent to workers without a GPU resource
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as c:
        spec = resolve_spec("digits-mlp", [*SMALL, "train.device=cuda", f"execution.scheduler={c.scheduler_address}"])
        with pytest.raises(KdauditError, match="no Dask worker offers a GPU resource"):
            execute_plan_dask(spec, build_plan(spec), JobStore(tmp_path / "store"))


# -- students as vectorised ensembles on Dask --------------------------------------------------

ENSEMBLE = tiny_grid(1, "execution.ensemble=7", "execution.threads_per_worker=1", "execution.executor=dask")


class FakeClient:
    """Records what ``submit_plan`` submits; each submission returns a distinct future."""

    def __init__(self):
        self.calls = []

    def submit(self, fn, *args, **kwargs):
        future = object()
        self.calls.append((future, args, kwargs))
        return future


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_each_ensemble_is_one_task_after_the_tasks_of_m0_and_the_teacher(device):
    from kdaudit.execute.dask_executor import submit_plan
    from kdaudit.execute.groups import plan_units
    from kdaudit.execute.runner import load_data

    spec = resolve_spec("digits-mlp", [*ENSEMBLE, f"train.device={device}"])
    plan = build_plan(spec)
    units = plan_units(list(plan.jobs), spec, load_data(spec))
    client = FakeClient()
    futures = submit_plan(client, units, run_task, spec, "/store", {}, 1, 2)
    assert len(futures) == len(client.calls) == len(units) == 6  # M0, the teacher, 26 students in 4 tasks
    (m0, _, m0_kw), (teacher, t_args, t_kw), *groups = client.calls
    assert t_args[0] == [plan.teacher] and t_args[6:] == (m0,)
    sizes, waits_for_teacher = [], 0
    for _, args, kwargs in groups:
        unit, deps = args[0], args[6:]
        sizes.append(len(unit))
        assert all(j.kind == "student" for j in unit)
        want = {plan.init.key: m0, plan.teacher.key: teacher}
        needed = {d for j in unit for d in j.deps}
        assert needed <= set(want)
        waits_for_teacher += plan.teacher.key in needed
        assert sorted(map(id, deps)) == sorted(id(want[k]) for k in needed)  # each task once, not per member
        assert kwargs["key"].startswith(f"kdaudit-ensemble{len(unit)}-{unit[0].run_id}-")
        assert kwargs.get("resources") == ({"GPU": 1} if device == "cuda" else None)
    assert sorted(sizes) == [6, 6, 7, 7] and waits_for_teacher >= 1  # those with KD or LS members
    assert len({kw["key"] for _, _, kw in client.calls}) == 6
    assert "resources" not in m0_kw  # M0 is drawn on the CPU
    assert [kw["priority"] for _, _, kw in client.calls] == [2, 1, 0, 0, 0, 0]


def test_ensembles_are_split_over_the_clusters_gpu_workers(monkeypatch):
    from kdaudit.execute import groups as groups_mod
    from kdaudit.execute.runner import load_data

    monkeypatch.setattr(groups_mod, "device_class", lambda name: "cuda")
    spec = resolve_spec("digits-mlp", [*ENSEMBLE, "execution.ensemble=100"])
    units = groups_mod.plan_units(list(build_plan(spec).jobs), spec, load_data(spec), gpu_workers=5)
    assert sorted(len(u) for u in units if u[0].kind == "student") == [5, 5, 5, 5, 6]


@pytest.mark.slow  # a local cluster, and two audits of 27 models
def test_ensembles_on_dask_equal_sequential_training(tmp_path, capsys):
    args = ["run", "digits-mlp", "--quiet", *as_sets(tiny_grid(1, "execution.threads_per_worker=1"))]
    assert kdaudit_here(*args, "--out", str(tmp_path / "seq"), "--set", "execution.ensemble=off") == 0
    on_dask = ["--executor", "dask", "--workers", "2", "--set", "execution.ensemble=7"]
    assert kdaudit_here(*args, "--out", str(tmp_path / "ens"), *on_dask) == 0
    assert_runs_close(tmp_path / "seq", tmp_path / "ens", 27)
    meta = json.loads((tmp_path / "ens" / "audit.json").read_text())["meta"]
    assert meta["execution"].startswith("dask, 2 workers on this machine")
    assert "26 students in 4 vectorised ensemble(s)" in meta["execution"]
    recs = records(tmp_path / "ens")
    assert sorted(r.get("ensemble", {}).get("members", 1) for r in recs.values()) == [1, 1] + [6] * 12 + [7] * 14


@pytest.mark.slow  # in-process runs on the module's cluster
def test_a_failing_ensemble_member_is_reported_and_its_group_is_kept(cluster, tmp_path):
    spec = resolve_spec("digits-mlp", [*ENSEMBLE, f"execution.scheduler={cluster.scheduler_address}"])
    plan = build_plan(spec)
    store = JobStore(tmp_path / "jobs")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    progress = Recorder()
    bad = "kd-a0.5-s01"
    with pytest.raises(KdauditError) as err:
        execute_plan_dask(spec, plan, store, progress, task=functools.partial(recording_task, str(first), (bad,)))
    message = str(err.value)
    assert f"1 of 28 jobs failed on the dask executor (after 1 retry): {bad} (RuntimeError" in message
    assert "27 finished jobs are saved in the store" in message
    assert [j.run_id for j in plan.jobs if not store.is_done(j.key)] == [bad]
    assert len(progress.finished) == 26 and bad not in {r for r, _ in progress.finished}
    # the group holding the failing member was attempted twice; the groups with KD members ran
    # after the teacher
    attempts = {p.stem: len(p.read_text().split()) for p in first.glob("*.attempts")}
    (group,) = [name for name in attempts if bad in name.split("+")]
    assert attempts[group] == 2 and len(group.split("+")) in (6, 7)
    ev = events(first)
    finished = [len(n.split("+")) for n in ev if "+" in n]
    assert sorted([*finished, len(group.split("+"))]) == [6, 6, 7, 7]
    with_kd = [n for n in ev if "+" in n and "kd-" in n]
    assert with_kd and all(ev[n]["start"] >= ev["teacher"]["end"] for n in with_kd)
    # the rerun trains the one member left, on its own
    stats = execute_plan_dask(spec, plan, store, Recorder(), task=functools.partial(recording_task, str(second), ()))
    assert stats.trained == [bad] and len(stats.skipped) == 27
    assert [p.stem for p in second.glob("*.json")] == [bad]
