"""Determinism: the same spec, run twice into two directories, gives the same bits.

Both runs are real `kdaudit run` processes, started together. Every job must end with
bit-identical test logits (and teacher training logits, and weights), the tables must be
byte-identical, and every record must state the seeds it was trained from. Non-default init and
teacher seeds make sure the records carry the spec's values rather than defaults.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import ONE_THREAD, as_sets, kdaudit_popen, tiny_grid
from kdaudit.config.loader import resolve_spec
from kdaudit.plan.jobs import build_plan
from kdaudit.store import JobStore

pytestmark = pytest.mark.slow  # two whole audits of 27 models

SETS = tiny_grid(2, ONE_THREAD, "protocol.init_seed=3", "protocol.teacher_seed=5")


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    args = ["run", "digits-mlp", *as_sets(SETS), "--quiet"]
    procs = [kdaudit_popen(*args, "--out", str(root / name)) for name in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    return root / "a", root / "b"


def test_the_same_spec_twice_gives_bit_identical_logits_weights_and_tables(twin_runs):
    a, b = twin_runs
    plan = build_plan(resolve_spec("digits-mlp", SETS))
    sa, sb = JobStore(a / "jobs"), JobStore(b / "jobs")
    for job in plan.jobs:
        assert sa.is_done(job.key) and sb.is_done(job.key), job.run_id
        wa, wb = sa.load_weights(job.key), sb.load_weights(job.key)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"{job.run_id}: weights differ"
        if not job.trains:
            continue
        oa, ob = sa.load_outputs(job.key), sb.load_outputs(job.key)
        assert oa.keys() == ob.keys()
        assert oa["test_logits"].dtype == np.float32
        for name in oa:  # test logits and labels; the teacher's training logits too
            assert np.array_equal(oa[name], ob[name]), f"{job.run_id}: {name} differ"
    assert "train_logits" in sa.load_outputs(plan.teacher.key)
    for name in ("runs.csv", "tests.csv", "transfer.csv", "summary.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_every_record_holds_its_seeds(twin_runs):
    a, _ = twin_runs
    plan = build_plan(resolve_spec("digits-mlp", SETS))
    store = JobStore(a / "jobs")
    expected = {"m0": 3, "teacher": 5}
    for job in plan.jobs:
        rec = store.load_record(job.key)
        seed = expected.get(job.run_id, job.seed)
        assert rec["seed"] == seed, job.run_id
        assert rec["init_seed"] == 3, job.run_id
        if job.kind == "init":
            assert rec["params"]["init_seed"] == 3
        else:
            assert rec["params"]["seed"] == seed, job.run_id
            assert rec["deps"][0] == plan.init.key  # trained from M0, drawn from the init seed
            assert rec["host"]["threads"] == 1
    students = [store.load_record(j.key) for j in plan.students]
    assert sorted({r["seed"] for r in students}) == [1, 2]
    assert json.loads((a / "audit.json").read_text())["meta"]["n_models"] == len(plan.trained)
