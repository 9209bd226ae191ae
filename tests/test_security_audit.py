"""Security in the audit: a poisoned teacher in the plan, adversarial and backdoor metrics of every
model, their tests against SIDDO and RCD, the report section, caching and the error paths."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import kdaudit_here
from kdaudit.audit import run_audit
from kdaudit.config.loader import resolve_spec
from kdaudit.errors import SpecError
from kdaudit.plan.jobs import build_plan

# digits, 3 seeds, one α: 1 teacher + 3 siddo + 3 x (kd, rcd-uniform, rcd-gaussian) = 13 models
GRID = [
    "protocol.seeds=3",
    "protocol.alphas=[0.9]",
    "train.epochs=8",
    "model.kwargs.hidden=[64]",
    "train.threads=1",
    "train.lr=0.1",
    "protocol.conditions=[siddo,kd,rcd-uniform,rcd-gaussian]",
]
ADV = [
    "security.adversarial.enabled=true",
    "security.adversarial.eps=[0.05,0.2]",
    "security.adversarial.samples=200",
    "security.adversarial.steps=5",
]
BACKDOOR = [
    "security.backdoor.enabled=true",
    "security.backdoor.rate=0.2",
    "security.backdoor.target=0",
    "security.backdoor.size=3",
]


def test_a_backdoor_changes_the_teacher_and_the_kd_students_only():
    clean = {j.run_id: j.key for j in build_plan(resolve_spec("digits-mlp", GRID)).jobs}
    poisoned = {j.run_id: j.key for j in build_plan(resolve_spec("digits-mlp", GRID + BACKDOOR)).jobs}
    adversarial = {j.run_id: j.key for j in build_plan(resolve_spec("digits-mlp", GRID + ADV)).jobs}
    assert adversarial == clean  # attacks are measured after training: the models are shared
    changed = {r for r in clean if clean[r] != poisoned[r]}
    assert changed == {"teacher"} | {r for r in clean if r.startswith("kd-")}


@pytest.fixture(scope="module")
def security_audit(tmp_path_factory):
    out = tmp_path_factory.mktemp("sec") / "audit"
    spec = resolve_spec("digits-mlp", GRID + ADV + BACKDOOR)
    return run_audit(spec, out)


def test_security_tables_and_report(security_audit):
    out = security_audit.out_dir
    runs = pd.read_csv(out / "security_runs.csv")
    assert len(runs) == 13 and list(runs.role[:1]) == ["teacher"]
    metrics = [c for c in runs.columns if "@" in c or c in ("backdoor_asr", "clean_accuracy")]
    assert set(metrics) >= {
        "adv_fooled@0.05",
        "adv_follows@0.2",
        "adv_accuracy@0.2",
        "whitebox_accuracy@0.2",
        "adv_flipped@0.05",
        "adv_flipped@0.2",
        "backdoor_asr",
        "clean_accuracy",
    }
    # in the metric order: fooled, follows, flipped, accuracy at each ε, then the white-box accuracy
    assert metrics[:9] == [
        f"adv_{m}@{e}" for e in ("0.05", "0.2") for m in ("fooled", "follows", "flipped", "accuracy")
    ] + ["whitebox_accuracy@0.2"]
    # the teacher is right on every clean transferable example and fooled on each
    assert runs.loc[0, "adv_flipped@0.2"] == 1.0
    vals = runs[metrics].to_numpy(float)
    assert np.nanmin(vals) >= 0 and np.nanmax(vals) <= 1
    # fooled = 1 − accuracy on the same transferable examples
    assert np.allclose(runs["adv_fooled@0.2"] + runs["adv_accuracy@0.2"], 1.0)
    # clean accuracy is the audit's own test accuracy of each model
    acc = pd.read_csv(out / "runs.csv").set_index("run_id")["accuracy"]
    assert np.allclose(runs.set_index("run_id")["clean_accuracy"], acc.loc[runs.run_id])
    tests = pd.read_csv(out / "security_tests.csv")
    # per metric: kd vs siddo, kd vs each rcd, and each rcd vs siddo (one α)
    assert len(tests) == len(metrics) * 5
    assert set(tests.comparison) == {"vs_siddo", "vs_rcd-uniform", "vs_rcd-gaussian"}
    assert (tests.metric == "adv_flipped@0.2").sum() == 5
    assert set(tests.loc[tests.metric == "adv_flipped@0.2", "family"]) == set(tests.family)
    summary = pd.read_csv(out / "security_summary.csv")
    assert {"adv_flipped@0.2_mean", "adv_flipped@0.2_sem"} <= set(summary.columns)
    html = (out / "report.html").read_text()
    assert 'id="security"' in html and "Backdoor" in html and "fig-security_backdoor" in html
    assert "fig-security_adv_flipped" in html and "adv_flipped@0.2" in html
    assert (out / "figures" / "security_adv_flipped.png").exists()
    audit = json.loads((out / "audit.json").read_text())
    assert any("backdoor" in s for s in audit["security"])
    assert audit["meta"]["security"]["adversarial"]["n_attacked"] == 200


def test_the_poisoned_teacher_has_its_backdoor_and_clean_students_do_not(security_audit):
    runs = pd.read_csv(security_audit.out_dir / "security_runs.csv").set_index("run_id")
    assert runs.loc["teacher", "backdoor_asr"] > 0.8
    assert runs.loc["teacher", "clean_accuracy"] > 0.85
    # students trained on clean data without the teacher: near the base rate
    siddo = runs.loc[runs.condition == "siddo", "backdoor_asr"]
    assert siddo.max() < 0.25


def test_security_metrics_are_cached_per_model(security_audit, monkeypatch):
    from kdaudit.audit import reanalyse
    from kdaudit.security import evaluate

    calls = []
    monkeypatch.setattr(evaluate._Adversarial, "measure", lambda self, *a, **k: calls.append(1) or {})
    before = pd.read_csv(security_audit.out_dir / "security_runs.csv")
    again = reanalyse(security_audit.out_dir)
    assert calls == []  # every model's numbers came from the cache
    pd.testing.assert_frame_equal(again.security.runs.reset_index(drop=True), before, check_dtype=False)


def test_an_old_security_cache_without_adv_flipped_is_measured_again(security_audit, monkeypatch):
    from kdaudit.audit import reanalyse
    from kdaudit.security import evaluate

    out = security_audit.out_dir
    job = next(j for j in security_audit.plan.students if j.condition == "kd")
    (path,) = (out / "security").glob(f"{job.key}-*.json")
    cached = json.loads(path.read_text())
    old = {k: v for k, v in cached.items() if not k.startswith("adv_flipped@")}
    assert len(old) < len(cached)
    path.write_text(json.dumps(old))  # as written before adv_flipped existed
    measure = evaluate._Adversarial.measure
    calls = []
    monkeypatch.setattr(
        evaluate._Adversarial, "measure", lambda self, *a, **k: calls.append(1) or measure(self, *a, **k)
    )
    before = pd.read_csv(out / "security_runs.csv")
    again = reanalyse(out)
    assert calls == [1]  # only the model with the old cache
    pd.testing.assert_frame_equal(again.security.runs.reset_index(drop=True), before, check_dtype=False)
    assert json.loads(path.read_text()).keys() == cached.keys()


def test_adversarial_metrics_against_a_direct_computation(security_audit):
    """Recompute one student's adv metrics at ε = 0.2 with the attack functions and a plain loop."""
    from kdaudit.audit import store_for
    from kdaudit.data.base import subset_indices
    from kdaudit.execute.runner import load_data
    from kdaudit.security.evaluate import _load_model
    from kdaudit.security.gradient import attack_batched, pgd
    from kdaudit.security.space import attack_space

    spec, plan = security_audit.spec, security_audit.plan
    store = store_for(spec, security_audit.out_dir)
    data = load_data(spec)
    teacher = _load_model(plan.teacher, store, data)
    job = next(j for j in plan.students if j.condition == "kd")
    student = _load_model(job, store, data)
    idx = subset_indices(len(data.x_test), 200, spec.security.seed + 7, labels=data.y_test.numpy())
    x, y = data.x_test[idx], data.y_test[idx]
    space = attack_space(data.info, data.x_test)
    # evaluation crafts ε levels in increasing order with a fresh generator each
    xa = attack_batched(
        pgd,
        teacher,
        x,
        y,
        512,
        eps=space.eps(0.2),
        steps=5,
        step_size=None,
        norm="linf",
        random_start=True,
        generator=torch.Generator().manual_seed(spec.security.seed),
        targeted=False,
        lo=space.lo,
        hi=space.hi,
    )
    with torch.no_grad():
        t_clean, t_adv, s_adv = teacher(x).argmax(1), teacher(xa).argmax(1), student(xa).argmax(1)
        s_clean = student(x).argmax(1)
    n = fooled = follows = right = flipped = 0
    for i in range(len(y)):
        if t_clean[i] == y[i] and t_adv[i] != y[i]:
            n += 1
            fooled += int(s_adv[i] != y[i])
            follows += int(s_adv[i] == t_adv[i])
            if s_clean[i] == y[i]:
                right += 1
                flipped += int(s_adv[i] != y[i])
    row = pd.read_csv(security_audit.out_dir / "security_runs.csv").set_index("run_id").loc[job.run_id]
    assert n >= right > 0
    assert row["adv_fooled@0.2"] == pytest.approx(fooled / n)
    assert row["adv_follows@0.2"] == pytest.approx(follows / n)
    assert row["adv_flipped@0.2"] == pytest.approx(flipped / right)


def test_security_errors_are_one_line_before_training(tmp_path, capsys):
    out = tmp_path / "bad"
    code = kdaudit_here(
        "run",
        "digits-mlp",
        "--out",
        str(out),
        "--quiet",
        *sum((["--set", s] for s in GRID + ["security.backdoor.enabled=true", "security.backdoor.target=12"]), []),
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "security.backdoor.target: 12 is not a class" in err[0]
    assert not (out / "jobs").exists()
    with pytest.raises(SpecError, match="rate"):
        resolve_spec("digits-mlp", ["security.backdoor.rate=1.5"])
    with pytest.raises(SpecError, match="ε"):
        resolve_spec("digits-mlp", ["security.adversarial.eps=[0]"])
    with pytest.raises(SpecError, match="unknown key"):
        resolve_spec("digits-mlp", ["security.adversarial.epsilon=0.1"])
