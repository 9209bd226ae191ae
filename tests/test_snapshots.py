"""``teacher.snapshots``: one teacher run saves its state at given epochs; a ``teacher.epochs``
sweep then reads each point's teacher from that run instead of training one per point."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
import torch

from helpers import TINY_ONE_ALPHA, as_sets, cli_env, kdaudit, store_records
from kdaudit.config.loader import expand, resolve_raw, resolve_spec
from kdaudit.errors import SpecError
from kdaudit.execute.runner import load_data, plan_keys_of, run_job
from kdaudit.execute.snapshots import snapshot_stage
from kdaudit.plan import jobs as plan_jobs
from kdaudit.plan.jobs import build_plan
from kdaudit.store import JobStore
from kdaudit.sweep import run_sweep

# digits, 2 seeds, KD and RCD at one α: 1 + 2 + 2 + 2 = 7 models per audit
TINY = TINY_ONE_ALPHA


# ------------------------------------------------------------------------------------ the plan

# the plan keys of these specs as they were before teacher.snapshots existed (versions pinned, so
# that only the plan's structure counts): run id and key of every job, hashed
_KEY_SETS = [
    "protocol.seeds=2",
    "train.epochs=3",
    "model.kwargs.hidden=[16]",
    "train.threads=1",
    "protocol.alphas=[0.5]",
    "protocol.conditions=[siddo,kd,ls,rcd-uniform]",
]
PINNED = {
    "self": ([], "f39fd00af7664222", "3c122e021503b70dbc35"),
    "teacher_epochs": (["teacher.epochs=2"], "b98d259187e38a3b", "53bb3c5dd152a6701245"),
    "standard": (["student.hidden=[8]", "teacher.epochs=2"], "33db161bc42fd128", "53bb3c5dd152a6701245"),
    "cosine": (["train.schedule=cosine", "teacher.epochs=2"], "3a0e0d9e28bdf30b", "f523d6c3903aaa88ee8f"),
}


@pytest.mark.parametrize("case", sorted(PINNED))
@pytest.mark.parametrize("unset", [[], ["teacher.snapshots=null"]])
def test_plan_keys_without_snapshots_are_unchanged(monkeypatch, case, unset):
    monkeypatch.setattr(plan_jobs, "result_versions", lambda: {"code": "1", "torch": "pinned"})
    sets, digest, teacher_key = PINNED[case]
    plan = build_plan(resolve_spec("digits-mlp", _KEY_SETS + sets + unset))
    blob = "\n".join(f"{j.run_id} {j.key}" for j in plan.jobs)
    assert hashlib.sha256(blob.encode()).hexdigest()[:16] == digest
    assert plan.teacher.key == teacher_key
    assert not any(j.teacher_run for j in plan.jobs)


def test_snapshot_plan_shares_one_teacher_run():
    snap = ["teacher.snapshots=[1,2,4]"]
    sweep = expand(resolve_raw("digits-mlp", TINY + snap + ["teacher.epochs=[1,2,4]"]))
    assert list(sweep.axes) == ["teacher.epochs"]  # the snapshot list is one value, not an axis
    plans = [build_plan(p.spec) for p in sweep.points]
    runs = [[j for j in plan.jobs if j.teacher_run] for plan in plans]
    assert all(len(r) == 1 for r in runs)
    run = runs[0][0]
    assert {r[0].key for r in runs} == {run.key}  # one run for every point
    assert run.run_id == "teacher-run" and run.params["train"]["epochs"] == 4 and run.params["snapshots"] == [1, 2, 4]
    assert run.deps == (plans[0].init.key,)
    for e, plan in zip([1, 2, 4], plans):
        t = plan.teacher
        assert t.run_id == "teacher" and t.deps == (run.key,)
        assert t.params["snapshot_of"] == {"epochs": 4, "at": e} and t.params["train"]["epochs"] == e
        assert run not in plan.trained and t in plan.trained  # the audit's models: the run is not one
        assert [j.key for j in plan.jobs].index(run.key) < [j.key for j in plan.jobs].index(t.key)
        # the teacher's key differs from a teacher trained for e epochs, and so do the KD students'
        plain = build_plan(resolve_spec("digits-mlp", TINY + [f"teacher.epochs={e}"]))
        assert t.key != plain.teacher.key
        for x, y in zip(plain.students, plan.students):
            assert (x.key == y.key) == (x.condition != "kd")
    # a teacher of more epochs than the last snapshot is the run itself, to its epochs
    plan = build_plan(resolve_spec("digits-mlp", TINY + ["train.epochs=5", "teacher.snapshots=[1,2]"]))
    run = next(j for j in plan.jobs if j.teacher_run)
    assert run.params["train"]["epochs"] == 5 and plan.teacher.params["snapshot_of"] == {"epochs": 5, "at": 5}


@pytest.mark.parametrize(
    "sets, message",
    [
        (["teacher.snapshots=[0,2]"], "teacher.snapshots: every snapshot epoch must be ≥ 1"),
        (["train.epochs=3", "teacher.snapshots=[1,9]"], "teacher.snapshots: 9 above the teacher's 3 epochs"),
        (["teacher.epochs=3", "teacher.snapshots=[1,2,4]"], "teacher.snapshots: 4 above the teacher's 3 epochs"),
        (["teacher.snapshots=[2,2]"], "teacher.snapshots: lists an epoch twice"),
        (["teacher.snapshots=[]"], "teacher.snapshots: must list at least one epoch"),
        (
            ["teacher.checkpoint=t.safetensors", "teacher.snapshots=[1]"],
            "teacher.snapshots: a teacher given by teacher.checkpoint is not trained",
        ),
    ],
)
def test_invalid_snapshots_are_one_line_errors(sets, message):
    with pytest.raises(SpecError) as exc:
        resolve_spec("digits-mlp", TINY + sets)
    assert str(exc.value).startswith(f"spec: {message}") and "\n" not in str(exc.value)


def test_snapshots_are_sorted():
    assert resolve_spec("digits-mlp", TINY + ["train.epochs=4", "teacher.snapshots=[4,1,2]"]).teacher.snapshots == [
        1,
        2,
        4,
    ]


# ------------------------------------------------------------------------------ the numbers


def _teacher(sets: list[str], store: JobStore):
    """Train (or read) the teacher of a spec, and what it needs, into ``store``."""
    spec = resolve_spec("digits-mlp", TINY + ["train.epochs=4"] + sets)
    plan = build_plan(spec)
    data = load_data(spec)
    keys = plan_keys_of(plan)
    for job in plan.jobs:
        if job.kind in ("init", "teacher"):
            run_job(job, spec, store, keys, data)
    return plan


def _same(store: JobStore, a: str, b: str) -> bool:
    wa, wb = store.load_weights(a), store.load_weights(b)
    oa, ob = store.load_outputs(a), store.load_outputs(b)
    return (
        wa.keys() == wb.keys()
        and all(torch.equal(wa[k], wb[k]) for k in wa)
        and oa.keys() == ob.keys()
        and all(np.array_equal(oa[k], ob[k]) for k in oa)
    )


@pytest.mark.parametrize(
    "schedule, sched",
    [
        pytest.param("constant", ["train.schedule=constant", "train.warmup_epochs=0"], marks=pytest.mark.slow),
        ("step", ["train.schedule=step", "train.step_epochs=[1,3]", "train.warmup_epochs=1"]),
        pytest.param("cosine", ["train.schedule=cosine", "train.warmup_epochs=0"], marks=pytest.mark.slow),
    ],
)
def test_snapshot_equals_a_teacher_trained_for_its_epochs_under_a_constant_schedule(tmp_path, schedule, sched):
    store = JobStore(tmp_path / "jobs")
    snaps = {e: _teacher(sched + [f"teacher.epochs={e}", "teacher.snapshots=[1,2,4]"], store) for e in (2, 4)}
    plain = {e: _teacher(sched + [f"teacher.epochs={e}"], store) for e in (2, 4)}
    runs = {j.key for p in snaps.values() for j in p.jobs if j.teacher_run}
    assert len(runs) == 1  # both snapshot teachers read the one run
    run_key = runs.pop()
    assert sorted(p.name for p in (store.job_dir(run_key) / "snapshots").iterdir()) == ["epoch-1", "epoch-2"]
    assert store.load_record(run_key)["history"][-1]["epoch"] == 4
    assert not snapshot_stage(store, run_key).exists()  # the staging folder is gone once the run is saved
    for e in (2, 4):
        t = snaps[e].teacher
        rec = store.load_record(t.key)
        same = schedule != "cosine" or e == 4  # cosine spreads its decay over the whole run
        assert rec["snapshot_of"] == {
            **rec["snapshot_of"],
            "epochs": 4,
            "at": e,
            "key": run_key,
            "same_as_trained_for_at": same,
        }
        assert [h["epoch"] for h in rec["history"]] == list(range(1, e + 1))
        assert "train_logits" in store.load_outputs(t.key)  # a KD student's targets
        assert _same(store, t.key, plain[e].teacher.key) == same
        if same:
            assert rec["metrics"] == store.load_record(plain[e].teacher.key)["metrics"]


@pytest.mark.slow
def test_teacher_epochs_sweep_with_snapshots_trains_one_teacher(tmp_path):
    epochs = ["teacher.epochs=[1,2,3]"]
    seconds, recs, outcomes = {}, {}, {}
    for name, extra in (("plain", []), ("snapshots", ["teacher.snapshots=[1,2,3]"])):
        start = time.perf_counter()
        outcomes[name] = run_sweep(expand(resolve_raw("digits-mlp", TINY + epochs + extra)), tmp_path / name)
        seconds[name] = time.perf_counter() - start
        recs[name] = store_records(tmp_path / name / "jobs")
    print(f"tiny teacher.epochs sweep: {seconds['plain']:.1f} s without snapshots, {seconds['snapshots']:.1f} s with")

    def trained_teachers(rs):  # teachers that ran gradient steps (a snapshot job reads a run)
        return [r["run_id"] for r in rs if r["kind"] == "teacher" and "snapshot_of" not in r]

    assert sorted(trained_teachers(recs["plain"])) == ["teacher"] * 3
    assert trained_teachers(recs["snapshots"]) == ["teacher-run"]
    snaps = [r for r in recs["snapshots"] if "snapshot_of" in r]
    assert sorted(r["snapshot_of"]["at"] for r in snaps) == [1, 2, 3]
    # the executor's own statistics: the run trains once, in the first point
    trained = [o.stats.trained for o in outcomes["snapshots"].outcomes]
    assert sum(t.count("teacher-run") for t in trained) == 1 and all("teacher" in t for t in trained)
    # the same teachers (constant schedule): the same teacher losses at every point
    assert [o.meta["teacher_loss"] for o in outcomes["plain"].outcomes] == [
        o.meta["teacher_loss"] for o in outcomes["snapshots"].outcomes
    ]
    # a rerun reuses every job, the run and its snapshots included
    again = run_sweep(
        expand(resolve_raw("digits-mlp", TINY + epochs + ["teacher.snapshots=[1,2,3]"])), tmp_path / "snapshots"
    )
    assert [o.meta["trained_now"] for o in again.outcomes] == [0, 0, 0]


@pytest.mark.slow
def test_a_killed_teacher_run_leaves_nothing_and_resumes(tmp_path):
    """Killed after its second epoch (snapshots 1 and 2 staged, checkpoint at 1), the run has no job
    directory; the rerun resumes and saves the same snapshots as a run never killed."""
    args = [
        "run",
        "digits-mlp",
        *as_sets(TINY),
        "--set",
        "train.epochs=3",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "teacher.snapshots=[1,2,3]",
        "--quiet",
    ]
    killed = kdaudit(*args, "--out", str(tmp_path / "k"), env=cli_env(KDAUDIT_FAILPOINT="train.epoch:2"))
    assert killed.returncode != 0
    spec = resolve_spec(
        "digits-mlp", TINY + ["train.epochs=3", "train.checkpoint_every=1", "teacher.snapshots=[1,2,3]"]
    )
    run = next(j for j in build_plan(spec).jobs if j.teacher_run)
    store = JobStore(tmp_path / "k" / "jobs")
    assert store.status(run.key) == "missing"
    assert sorted(p.name for p in snapshot_stage(store, run.key).iterdir()) == ["epoch-1", "epoch-2"]
    assert kdaudit(*args, "--out", str(tmp_path / "k")).returncode == 0
    assert kdaudit(*args, "--out", str(tmp_path / "ref")).returncode == 0
    done = store.load_record(run.key)
    assert done["resumed_from_epoch"] == 1
    ref = JobStore(tmp_path / "ref" / "jobs").load_record(run.key)
    assert (
        {k: v for k, v in done["checksums"].items() if k.startswith("snapshots/")}
        == {k: v for k, v in ref["checksums"].items() if k.startswith("snapshots/")}
        != {}
    )
    assert not snapshot_stage(store, run.key).exists()
    (store.job_dir(run.key) / "snapshots" / "epoch-1" / "weights.safetensors").write_bytes(b"x")
    assert store.status(run.key) == "corrupt"  # the snapshots are checked like the job's own files
