"""``security.backdoor.transfer_poison``: triggered inputs in the students' transfer set.

The teacher is poisoned as before; a share of the students' training inputs carry the same
trigger with their true labels, every student condition sees the same triggered inputs, and the
KD students' soft targets on them are the poisoned teacher's outputs on the triggered inputs.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import ONE_THREAD, as_sets, kdaudit_here, records, tiny_grid
from kdaudit.config.loader import resolve_spec
from kdaudit.data.base import DataBundle
from kdaudit.errors import SpecError
from kdaudit.plan.jobs import build_plan
from kdaudit.security.backdoor import poison, poison_transfer, transfer_indices
from kdaudit.security.poisoning import teacher_train_logits, transfer_bundle
from kdaudit.security.triggers import make_trigger

MEAN, STD = 0.3, 0.4
IMAGE_INFO = {"modality": "image", "raw_range": [0.0, 1.0], "normalization": {"mean": MEAN, "std": STD}}
GRID = ["protocol.seeds=2", "protocol.alphas=[0.9]", "model.kwargs.hidden=[16]"]
BACKDOOR = [
    "security.backdoor.enabled=true",
    "security.backdoor.rate=0.2",
    "security.backdoor.target=0",
    "security.backdoor.size=3",
]


def _toy_set(n: int = 40):
    raw = torch.rand((n, 16), generator=torch.Generator().manual_seed(5))
    return (raw - MEAN) / STD, torch.arange(n) % 4


# ----------------------------------------------------------------------------- the transfer set


def test_transfer_set_triggers_round_rate_n_non_target_inputs_and_keeps_labels():
    x, y = _toy_set()
    xb, yb = x.clone(), y.clone()
    trig = make_trigger(IMAGE_INFO, (16,), size=2)
    xt, idx = poison_transfer(x, y, trig, rate=0.25, target=1, seed=7)
    assert torch.equal(x, xb) and torch.equal(y, yb)  # inputs untouched
    assert len(idx) == round(0.25 * 40) == 10 and len(set(idx.tolist())) == 10 and list(idx) == sorted(idx)
    assert (y[idx] != 1).all()  # drawn among the non-target samples
    assert torch.equal(xt[idx], trig.apply(x[idx]))
    rest = np.setdiff1d(np.arange(40), idx)
    assert torch.equal(xt[rest], x[rest])  # byte-identical clean inputs elsewhere
    assert xt.shape == x.shape and xt.dtype == x.dtype
    # deterministic in the seed, another seed draws others, and independent of the poisoning draw
    again = poison_transfer(x, y, trig, rate=0.25, target=1, seed=7)
    assert np.array_equal(again[1], idx) and torch.equal(again[0], xt)
    assert not np.array_equal(transfer_indices(y, rate=0.25, target=1, seed=8), idx)
    assert not np.array_equal(poison(x, y, trig, rate=0.25, target=1, seed=7)[2], idx)
    # rate 0: nothing triggered
    x0, i0 = poison_transfer(x, y, trig, rate=0.0, target=1, seed=7)
    assert torch.equal(x0, x) and i0.size == 0
    with pytest.raises(SpecError):
        transfer_indices(y, rate=0.9, target=1, seed=0)  # 36 asked, 30 not of class 1


def test_transfer_bundle_keeps_labels_and_states_the_count():
    x, y = _toy_set()
    data = DataBundle("toy", x, y, x[:8], y[:8], 4, dict(IMAGE_INFO))
    params = {"rate": 0.25, "target": 1, "trigger": None, "size": 2, "value": None, "seed": 3}
    tb = transfer_bundle(data, params)
    facts = tb.info["transfer_poisoned"]
    assert facts["n_triggered"] == 10 and facts["rate"] == 0.25 and facts["n_train"] == 40
    assert torch.equal(tb.y_train, y) and torch.equal(tb.x_test, data.x_test)
    idx = facts["indices"]
    assert np.array_equal(idx, transfer_indices(y, rate=0.25, target=1, seed=3))
    changed = np.flatnonzero((tb.x_train != x).any(dim=1).numpy())
    assert np.array_equal(changed, idx)
    assert "transfer_poisoned" not in data.info


# ----------------------------------------------------------------------------- KD targets


def test_kd_targets_on_triggered_inputs_are_the_teachers_logits_on_them(tmp_path, monkeypatch):
    from kdaudit.execute.train import make_model, predict
    from kdaudit.security import poisoning
    from kdaudit.store import JobStore

    x, y = _toy_set()
    data = DataBundle("toy", x, y, x[:8], y[:8], 4, dict(IMAGE_INFO))
    params = {"model": {"name": "mlp", "kwargs": {"hidden": [8]}}}
    torch.manual_seed(0)
    teacher = make_model(params, data).eval()
    stored = predict(teacher, x).astype(np.float32)  # what a teacher job keeps: logits on the clean inputs
    store = JobStore(tmp_path / "jobs")
    store.save("tkey", {"params": params}, teacher.state_dict(), {"train_logits": stored})
    transfer = {"rate": 0.25, "target": 1, "trigger": None, "size": 2, "value": None, "seed": 3}

    assert np.array_equal(teacher_train_logits(store, "tkey", data, None), stored)  # the clean case
    poisoning._TEACHER_TRANSFER_LOGITS.clear()
    got = teacher_train_logits(store, "tkey", data, transfer)
    assert got.shape == (40, 4) and got.dtype == np.float32
    # by hand: the trigger on the drawn rows, through the teacher
    trig = make_trigger(IMAGE_INFO, (16,), size=2)
    idx = transfer_indices(y, rate=0.25, target=1, seed=3)
    with torch.no_grad():
        manual = teacher(trig.apply(x[torch.from_numpy(idx)])).numpy()
    np.testing.assert_allclose(got[idx], manual, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[idx], stored[idx])  # the trigger changed the teacher's outputs
    rest = np.setdiff1d(np.arange(40), idx)
    assert np.array_equal(got[rest], stored[rest])  # clean rows: the stored table, exactly
    # cached per process: a second student does not load the teacher again
    monkeypatch.setattr(store, "load_weights", lambda key: pytest.fail("teacher loaded twice"))
    assert teacher_train_logits(store, "tkey", data, transfer) is got
    assert np.array_equal(store.load_outputs("tkey")["train_logits"], stored)  # teacher's outputs untouched


# ----------------------------------------------------------------------------- plan and spec


def _keys(*overrides: str) -> dict[str, str]:
    return {j.run_id: j.key for j in build_plan(resolve_spec("digits-mlp", GRID + list(overrides))).jobs}


def test_job_keys_are_unchanged_at_zero_and_every_student_changes_above():
    plain = _keys(*BACKDOOR)
    zero = _keys(*BACKDOOR, "security.backdoor.transfer_poison=0")
    assert zero == plain
    plan = build_plan(resolve_spec("digits-mlp", GRID + BACKDOOR + ["security.backdoor.transfer_poison=0"]))
    assert all("transfer_poison" not in j.params for j in plan.jobs)
    assert "transfer_poison" not in plan.teacher.params["backdoor"]  # the teacher's key as before the option
    tp = _keys(*BACKDOOR, "security.backdoor.transfer_poison=0.1")
    changed = {r for r in plain if plain[r] != tp[r]}
    assert changed == {r for r in plain if r not in ("m0", "teacher")}  # every student, not the teacher
    tp2 = _keys(*BACKDOOR, "security.backdoor.transfer_poison=0.2")
    assert all(tp[r] != tp2[r] for r in changed) and tp["teacher"] == tp2["teacher"]
    # the same slice for every student condition
    plan = build_plan(resolve_spec("digits-mlp", GRID + BACKDOOR + ["security.backdoor.transfer_poison=0.1"]))
    slices = {json.dumps(j.params["transfer_poison"], sort_keys=True) for j in plan.students}
    assert len(slices) == 1 and {j.condition for j in plan.students} >= {"siddo", "kd", "ls", "rcd-uniform"}


def test_transfer_poison_needs_a_backdoor_and_a_range(tmp_path, capsys):
    with pytest.raises(SpecError, match="transfer_poison.*enabled"):
        resolve_spec("digits-mlp", ["security.backdoor.transfer_poison=0.1"])
    for bad in ("1", "1.5", "-0.1"):
        with pytest.raises(SpecError, match="transfer_poison"):
            resolve_spec("digits-mlp", BACKDOOR + [f"security.backdoor.transfer_poison={bad}"])
    out = tmp_path / "bad"
    code = kdaudit_here(
        "run", "digits-mlp", "--out", str(out), "--quiet", "--set", "security.backdoor.transfer_poison=0.1"
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "transfer_poison" in err[0]
    assert not (out / "jobs").exists()
    # hint targets are the teacher's features on clean inputs: refused before anything trains
    from kdaudit.execute.runner import load_data
    from kdaudit.security.poisoning import check_security

    spec = resolve_spec(
        "digits-mlp",
        GRID
        + BACKDOOR
        + ["security.backdoor.transfer_poison=0.1", "protocol.hint={weight: 1.0, student_layer: features.2}"],
    )
    with pytest.raises(SpecError, match="protocol.hint"):
        check_security(spec, load_data(spec))


# ----------------------------------------------------------------------------- end to end


def test_tiny_audit_with_a_poisoned_transfer_set(tmp_path, monkeypatch):
    from kdaudit.execute import runner
    from kdaudit.store import JobStore

    seen: dict[str, dict] = {}
    real = runner.train_model

    def spy(params, data, init_state, **kw):
        seen[kw["name"]] = {
            "x": data.x_train.clone(),
            "y": data.y_train.clone(),
            "target": None if kw.get("target_logits") is None else kw["target_logits"].clone(),
        }
        return real(params, data, init_state, **kw)

    monkeypatch.setattr(runner, "train_model", spy)
    out = tmp_path / "audit"
    sets = tiny_grid(
        2, ONE_THREAD, "execution.workers=1", "security.backdoor.enabled=true", "security.backdoor.transfer_poison=0.1"
    )
    code = kdaudit_here("run", "digits-mlp", "--out", str(out), "--quiet", *as_sets(sets))
    assert code == 0

    runs = pd.read_csv(out / "security_runs.csv")
    recs = records(out)
    trained = {r for r in recs if r != "m0"}
    assert set(runs.run_id) == trained and runs["backdoor_asr"].notna().all()
    assert runs["clean_accuracy"].notna().all() and list(runs.role[:1]) == ["teacher"]

    clean = runner.load_data(resolve_spec("digits-mlp", sets))
    n = len(clean.x_train)
    k = round(0.1 * n)
    idx = transfer_indices(clean.y_train, rate=0.1, target=0, seed=0)
    assert len(idx) == k
    students = [r for r in trained if r != "teacher"]
    assert {recs[r]["condition"] for r in students} == {"siddo", "kd", "ls", "rcd-uniform", "rcd-gaussian"}
    first = seen[students[0]]["x"]
    for r in students:  # every condition: the same triggered inputs, the true labels
        assert torch.equal(seen[r]["x"], first) and torch.equal(seen[r]["y"], clean.y_train)
        assert recs[r]["transfer_poison"]["n_triggered"] == k
        assert recs[r]["transfer_poison"]["rate"] == 0.1
    changed = np.flatnonzero((first != clean.x_train).reshape(n, -1).any(dim=1).numpy())
    assert np.array_equal(changed, idx)
    assert "transfer_poison" not in recs["teacher"]
    assert not torch.equal(seen["teacher"]["y"], clean.y_train)  # the teacher's own dirty labels

    # KD targets: the teacher's stored (clean) logits, but its logits on the triggered inputs there
    from kdaudit.execute.train import make_model, predict

    store = JobStore(out / "jobs")
    tkey = recs["teacher"]["key"]
    teacher = make_model(recs["teacher"]["params"], clean)
    teacher.load_state_dict(store.load_weights(tkey))
    on_triggered = predict(teacher, first[torch.from_numpy(idx)]).astype(np.float32)
    stored = store.load_outputs(tkey)["train_logits"]
    rest = np.setdiff1d(np.arange(n), idx)
    for r in (r for r in students if recs[r]["condition"] == "kd"):
        t = seen[r]["target"].numpy()
        np.testing.assert_allclose(t[idx], on_triggered, rtol=1e-5, atol=1e-5)
        assert np.array_equal(t[rest], stored[rest])

    audit = json.loads((out / "audit.json").read_text())
    facts = audit["meta"]["security"]["backdoor"]["transfer"]
    assert facts["case"] == "transfer_poison" and facts["n_triggered"] == k and facts["transfer_poison"] == 0.1
    report = (out / "report.md").read_text()
    assert f"transfer\\_poison = 0.1 ({k} of {n} training inputs carry the trigger" in report
    assert "poisoned transfer set" in (out / "report.html").read_text()
