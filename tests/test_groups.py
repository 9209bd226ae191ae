"""Units of work: students grouped into vectorised ensembles by the executors, and what an audit
trained that way gives (the same numbers as sequential training, within float tolerance)."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import as_sets, assert_runs_close, run_cli, tiny_grid
from kdaudit.config.loader import resolve_spec
from kdaudit.execute import groups as groups_mod
from kdaudit.execute.groups import ensemble_size, plan_units, run_unit, unit_deps
from kdaudit.execute.runner import load_data, plan_keys_of, run_job
from kdaudit.plan import build_plan
from kdaudit.store import JobStore

GRID = tiny_grid(2, "train.threads=1")


def _spec(*more: str):
    return resolve_spec("digits-mlp", [*GRID, *more])


def test_auto_is_off_on_the_cpu_and_n_caps_the_groups():
    assert ensemble_size(_spec()) == (groups_mod.AUTO_MAX if torch.cuda.is_available() else 0)
    assert ensemble_size(_spec("execution.ensemble=off")) == 0
    assert ensemble_size(_spec("execution.ensemble=5")) == 5


def test_units_put_m0_and_the_teacher_first_and_split_students_evenly():
    spec = _spec("execution.ensemble=10")
    plan = build_plan(spec)
    data = load_data(spec)
    units = plan_units(list(plan.jobs), spec, data)
    assert [u[0].kind for u in units[:2]] == ["init", "teacher"] and all(len(u) == 1 for u in units[:2])
    students = [u for u in units[2:]]
    # 26 students of one architecture, at most 10 a group: three groups of 9, 9 and 8
    assert sorted(len(u) for u in students) == [8, 9, 9]
    assert sorted(j.key for u in students for j in u) == sorted(j.key for j in plan.jobs if j.kind == "student")
    assert all(unit_deps(u) <= {plan.init.key, plan.teacher.key} for u in students)
    assert [len(u) for u in plan_units(list(plan.jobs), _spec("execution.ensemble=off"), data)] == [1] * len(plan.jobs)


def test_students_that_cannot_be_members_train_alone():
    spec = _spec("execution.ensemble=50", "model.kwargs.dropout=0.2")
    plan = build_plan(spec)
    units = plan_units(list(plan.jobs), spec, load_data(spec))
    assert all(len(u) == 1 for u in units)  # dropout: every student on its own
    assert "dropout" in (groups_mod.solo_reason(plan.trained[1], spec, load_data(spec)) or "")
    spec = _spec("execution.ensemble=50", "train.checkpoint_every=1")
    assert "checkpoint" in (groups_mod.solo_reason(build_plan(spec).trained[1], spec, load_data(spec)) or "")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_audit_of_ensembles_equals_the_sequential_audit(tmp_path, capsys, workers):
    args = ["run", "digits-mlp", "--quiet", *as_sets(GRID), "--set", f"execution.workers={workers}"]
    code, _, err = run_cli([*args, "--out", str(tmp_path / "seq"), "--set", "execution.ensemble=off"], capsys)
    assert code == 0, err
    code, _, err = run_cli([*args, "--out", str(tmp_path / "ens"), "--set", "execution.ensemble=7"], capsys)
    assert code == 0, err
    assert_runs_close(tmp_path / "seq", tmp_path / "ens", 27)
    meta = json.loads((tmp_path / "ens" / "audit.json").read_text())["meta"]
    assert "26 students in 4 vectorised ensemble(s)" in meta["execution"]
    assert "vectorised" not in json.loads((tmp_path / "seq" / "audit.json").read_text())["meta"]["execution"]
    # each member's record says it was trained in an ensemble, and of how many (26 = 7 + 7 + 6 + 6)
    recs = [json.loads(p.read_text()) for p in (tmp_path / "ens" / "jobs").glob("*/record.json")]
    assert sorted(r.get("ensemble", {}).get("members", 1) for r in recs) == [1, 1] + [6] * 12 + [7] * 14


def test_a_group_out_of_gpu_memory_is_split_until_it_fits(tmp_path, monkeypatch):
    spec = _spec("execution.ensemble=8")
    plan = build_plan(spec)
    data = load_data(spec)
    store = JobStore(tmp_path)
    keys = plan_keys_of(plan)
    for job in (plan.init, plan.teacher):
        run_job(job, spec, store, keys, data)
    real = groups_mod.train_ensemble
    sizes: list[int] = []

    def small_gpu(members, *a, **k):
        sizes.append(len(members))
        if len(members) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(members, *a, **k)

    monkeypatch.setattr(groups_mod, "train_ensemble", small_gpu)
    unit = [j for j in plan.jobs if j.kind == "student"][:8]
    assert run_unit(unit, spec, store, keys, data) == ["trained"] * 8
    assert sizes == [8, 4, 2, 2, 4, 2, 2]  # 8 → 4 + 4 → each 4 → 2 + 2
    assert all(store.is_done(j.key) for j in unit)
    assert run_unit(unit, spec, store, keys, data) == ["skipped"] * 8  # a rerun trains nothing


def test_auto_groups_fill_the_share_of_free_gpu_memory(monkeypatch):
    """auto's group size: 0.6 of the free memory over one member's measured step, capped."""
    spec = _spec()
    job = build_plan(spec).trained[1]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (10 * 2**30, 80 * 2**30))
    monkeypatch.setattr(groups_mod, "step_bytes", lambda *a: 100 * 2**20)  # 100 MiB a member
    assert groups_mod.auto_size(job, None, torch.device("cuda")) == int(0.6 * 10 * 1024 // 100)  # 61
    monkeypatch.setattr(groups_mod, "step_bytes", lambda *a: 2**40)  # larger than the GPU
    assert groups_mod.auto_size(job, None, torch.device("cuda")) == 1
    monkeypatch.setattr(groups_mod, "step_bytes", lambda *a: 1)
    assert groups_mod.auto_size(job, None, torch.device("cuda")) == groups_mod.AUTO_MAX


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_one_members_step_memory_is_measured_on_the_gpu():
    spec = _spec()
    job = build_plan(spec).trained[1]
    data = load_data(spec)
    assert groups_mod.step_bytes(job, data, torch.device("cuda")) > 0


def test_a_diverging_member_does_not_take_its_group_down(tmp_path, monkeypatch):
    """One member's loss becomes non-finite: its error is raised, the other members are saved."""
    from kdaudit.errors import TrainingError

    spec = _spec("execution.ensemble=8")
    plan = build_plan(spec)
    data = load_data(spec)
    store = JobStore(tmp_path)
    keys = plan_keys_of(plan)
    for job in (plan.init, plan.teacher):
        run_job(job, spec, store, keys, data)
    unit = [j for j in plan.jobs if j.kind == "student"][:4]
    bad = unit[2]
    real_run_job = groups_mod.run_job

    def diverges(job, *a, **k):
        if job.key == bad.key:
            raise TrainingError(f"{job.run_id}: the training loss became nan at epoch 1")
        return real_run_job(job, *a, **k)

    def group_diverges(members, *a, **k):
        raise TrainingError(f"{bad.run_id}: the training loss became nan at epoch 1")

    monkeypatch.setattr(groups_mod, "train_ensemble", group_diverges)
    monkeypatch.setattr(groups_mod, "run_job", diverges)
    with pytest.raises(TrainingError, match=bad.run_id):
        run_unit(unit, spec, store, keys, data)
    assert [store.is_done(j.key) for j in unit] == [True, True, False, True]


def test_on_cuda_every_gpu_worker_gets_a_group(monkeypatch):
    """Four GPU slots: the 26 students are split into (at least) four groups, one per worker."""
    monkeypatch.setattr(groups_mod, "local_workers", lambda spec: 4)
    monkeypatch.setattr(groups_mod, "device_class", lambda name: "cuda")
    spec = _spec("execution.ensemble=100")
    plan = build_plan(spec)
    units = plan_units(list(plan.jobs), spec, load_data(spec))
    assert sorted(len(u) for u in units if u[0].kind == "student") == [6, 6, 7, 7]
