"""Standard distillation, hint (feature-map) losses, sweeps and bring-your-own teachers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from helpers import TINY_ONE_ALPHA, as_sets, store_records
from kdaudit.audit import run_audit
from kdaudit.config.loader import expand, resolve_raw, resolve_spec, validate_spec
from kdaudit.config.sweep import find_axes
from kdaudit.errors import SpecError
from kdaudit.execute.train import init_weights, train_model
from kdaudit.models import build_model
from kdaudit.objectives.hints import (
    HintRegressor,
    capture,
    feature_shape,
    hint_loss,
    noise_feature_table,
    target_shape,
    teacher_feature_table,
)
from kdaudit.plan.jobs import build_plan
from kdaudit.store import JobStore
from kdaudit.sweep import reanalyse_sweep, run_sweep

# digits, 2 seeds, 1 epoch, KD and RCD at one α: 1 + 2 + 2 + 2 = 7 models per audit
TINY = TINY_ONE_ALPHA


class TinyNet(nn.Module):
    """A model defined here and named by import path (``test_variants:TinyNet``)."""

    def __init__(self, input_shape, num_classes, hidden: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.Tanh())
        self.out = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.out(self.body(x))


# ----------------------------------------------------------------------------------- the plan


def test_standard_distillation_plan_gives_students_their_own_m0():
    spec = resolve_spec("digits-mlp", TINY + ["student.hidden=[8]"])
    plan = build_plan(spec)
    inits = [j for j in plan.jobs if j.kind == "init"]
    assert [j.run_id for j in inits] == ["m0", "teacher-m0"]
    t_init = next(j for j in inits if j.run_id == "teacher-m0")
    assert plan.teacher.deps == (t_init.key,)
    assert plan.teacher.params["model"]["kwargs"] == {"hidden": [16]}
    for s in plan.students:
        assert s.deps[0] == plan.init.key and s.params["model"]["kwargs"] == {"hidden": [8]}
    # siddo is the student architecture trained with CE alone
    assert all(s.params["model"]["kwargs"] == {"hidden": [8]} for s in plan.students if s.condition == "siddo")


def test_self_distillation_keys_unchanged_by_naming_the_same_student():
    a = build_plan(resolve_spec("digits-mlp", TINY))
    b = build_plan(resolve_spec("digits-mlp", TINY + ["student.hidden=[16]", "student.name=mlp"]))
    assert [j.key for j in a.jobs] == [j.key for j in b.jobs]
    assert len([j for j in a.jobs if j.kind == "init"]) == 1


def test_teacher_epochs_change_only_the_teacher_and_kd_keys():
    a = build_plan(resolve_spec("digits-mlp", TINY))
    b = build_plan(resolve_spec("digits-mlp", TINY + ["teacher.epochs=2"]))
    assert a.teacher.key != b.teacher.key and b.teacher.params["train"]["epochs"] == 2
    for x, y in zip(a.students, b.students):
        assert (x.key == y.key) == (x.condition != "kd")


# -------------------------------------------------------------------------------- hint losses


def test_capture_reads_the_named_layer():
    torch.manual_seed(0)
    model = build_model("mlp", (64,), 10, hidden=[12, 6])
    x = torch.randn(5, 64)
    with capture(model.features[4]) as box:
        model(x)
    h1 = F.relu(x @ model.features[1].weight.T + model.features[1].bias)
    expected = F.relu(h1 @ model.features[3].weight.T + model.features[3].bias)
    assert torch.allclose(box["out"], expected, atol=1e-6)
    assert model.feature_layers == ("features.2", "features.4")
    model(x)  # the hook is gone after the block
    assert len(model.features[4]._forward_hooks) == 0


def test_hint_loss_matches_a_hand_computation_for_each_regressor():
    torch.manual_seed(1)
    # same shape: identity
    fs, ft = torch.randn(4, 6), torch.randn(4, 6)
    r = HintRegressor((6,), (6,))
    assert r.mode == "identity" and not list(r.parameters())
    want = 0.5 * sum(float((fs[i, j] - ft[i, j]) ** 2) for i in range(4) for j in range(6)) / 24
    assert float(hint_loss(fs, ft, r, 0.5)) == pytest.approx(want, rel=1e-6)
    # vectors of different width: linear, no bias
    r = HintRegressor((6,), (3,))
    w = r.map.weight.detach()
    ft3 = torch.randn(4, 3)
    want = np.mean([(float(w[k] @ fs[i]) - float(ft3[i, k])) ** 2 for i in range(4) for k in range(3)])
    assert hint_loss(fs, ft3, r, 1.0).item() == pytest.approx(want, rel=1e-5)
    # feature maps: pool the larger spatial size, then a 1×1 conv
    fm = torch.randn(2, 4, 8, 8)
    r = HintRegressor((4, 8, 8), (3, 4, 4))
    assert target_shape((4, 8, 8), (3, 4, 4)) == (3, 4, 4)
    pooled = fm.reshape(2, 4, 4, 2, 4, 2).mean(dim=(3, 5))
    conv = torch.einsum("oc,bchw->bohw", r.map.weight.detach()[:, :, 0, 0], pooled)
    tgt = torch.randn(2, 3, 4, 4)
    assert hint_loss(fm, tgt, r, 2.0).item() == pytest.approx(2.0 * float(((conv - tgt) ** 2).mean()), rel=1e-5)


def test_teacher_feature_table_and_noise_table():
    torch.manual_seed(0)
    model = build_model("small-cnn", (1, 8, 8), 10, width=2)
    x = torch.randn(7, 1, 8, 8)
    layer = model.features[3]
    shape = target_shape(feature_shape(model, layer, x), feature_shape(model, layer, x))
    assert shape == (2, 4, 4)
    table = teacher_feature_table(model, layer, x, shape, batch_size=3)
    model.eval()
    with torch.no_grad():
        ref = model.features[:4](x)
    assert torch.allclose(table, ref, atol=1e-6)
    a = noise_feature_table("rcd-gaussian", 3, 5, (2, 3))
    assert torch.equal(a, noise_feature_table("rcd-gaussian", 3, 5, (2, 3)))
    assert not torch.equal(a, noise_feature_table("rcd-gaussian", 4, 5, (2, 3)))
    u = noise_feature_table("rcd-uniform", 3, 1000, (4,))
    assert float(u.min()) >= 0 and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.02


def test_hint_training_pulls_the_layer_towards_its_targets(tmp_path):
    spec = resolve_spec("digits-mlp", TINY + ["train.epochs=4"])
    from kdaudit.execute.runner import load_data

    data = load_data(spec)
    plan = build_plan(spec)
    init = init_weights(plan.init.params, data)
    job = next(j for j in plan.students if j.condition == "rcd-uniform")
    shape = (16,)
    targets = noise_feature_table("rcd-uniform", job.seed, len(data.x_train), shape)
    params = {
        **job.params,
        "hint": {
            "weight": 5.0,
            "student_layer": "features.2",
            "teacher_layer": "features.2",
            "teacher_model": job.params["model"],
        },
    }
    logits = torch.rand(len(data.x_train), 10, generator=torch.Generator().manual_seed(0))
    with_hint = train_model(params, data, init, target_logits=logits, hint_targets=targets)
    without = train_model(job.params, data, init, target_logits=logits)
    again = train_model(params, data, init, target_logits=logits, hint_targets=targets)

    def gap(state):
        model = build_model("mlp", data.input_shape, 10, hidden=[16])
        model.load_state_dict(state)
        with torch.no_grad(), capture(model.features[2]) as box:
            model.eval()(data.x_train)
        return float(((box["out"] - targets) ** 2).mean())

    assert gap(with_hint.state) < gap(without.state)
    assert np.array_equal(with_hint.test_logits, again.test_logits)  # deterministic


def test_hint_audit_runs_kd_and_rcd_with_hints(tmp_path):
    spec = resolve_spec("digits-mlp", TINY + ["protocol.hint={weight: 1.0, student_layer: features.2}"])
    out = run_audit(spec, tmp_path / "a")
    recs = store_records(tmp_path / "a" / "jobs")
    hinted = [r for r in recs if "hint" in r["params"]]
    assert sorted(r["condition"] for r in hinted) == ["kd"] * 2 + ["rcd-uniform"] * 2
    assert "features.2" in out.meta["hint"]
    assert "Hint loss" in (tmp_path / "a" / "report.md").read_text()


@pytest.mark.parametrize(
    "hint, message",
    [
        ("{weight: 1.0, student_layer: nope}", "nope"),
        ("{weight: 1.0, student_layer: features.2, max_table_mb: 0.001}", "max_table_mb"),
        ("{weight: 0, student_layer: features.2}", "protocol.hint.weight"),
    ],
)
def test_hint_errors_before_training(tmp_path, hint, message):
    with pytest.raises(SpecError, match=message):
        run_audit(resolve_spec("digits-mlp", TINY + [f"protocol.hint={hint}"]), tmp_path / "a")
    assert not (tmp_path / "a" / "jobs").exists()


# ------------------------------------------------------------------------------------- sweeps


def test_find_axes_only_where_one_value_is_expected():
    raw = resolve_raw(
        "digits-mlp",
        ["protocol.temperature=[1,2]", "student.width=[0.5,1]", "teacher.epochs=[1,3]", "model.kwargs.hidden=[16]"],
    )
    assert find_axes(raw) == {"protocol.temperature": [1, 2], "student.width": [0.5, 1], "teacher.epochs": [1, 3]}
    sweep = expand(raw)
    assert len(sweep.points) == 8
    assert sweep.points[0].label == "protocol.temperature=1,student.width=0.5,teacher.epochs=1"
    assert sweep.points[-1].spec.student.kwargs == {"width": 1} and sweep.points[-1].spec.teacher.epochs == 3
    explicit = expand({**resolve_raw("digits-mlp", TINY), "sweep": {"model.kwargs.hidden": [[8], [16]]}})
    assert [p.spec.model.kwargs["hidden"] for p in explicit.points] == [[8], [16]]


@pytest.mark.parametrize(
    "sets, message",
    [
        (["protocol.temperature=[]"], "empty list"),
        (["protocol.temperature=[1, 1]"], "twice"),
        (["protocol.temperature=[1, -2]"], r"protocol.temperature.*sweep point protocol.temperature=-2"),
    ],
)
def test_sweep_errors(sets, message):
    with pytest.raises(SpecError, match=message):
        expand(resolve_raw("digits-mlp", TINY + sets))


def test_resolve_spec_refuses_a_sweep():
    with pytest.raises(SpecError, match="sweeps protocol.temperature"):
        resolve_spec("digits-mlp", ["protocol.temperature=[1,2]"])


@pytest.mark.slow
def test_temperature_sweep_trains_one_teacher(tmp_path):
    sweep = expand(resolve_raw("digits-mlp", TINY + ["protocol.temperature=[1,4]"]))
    outcome = run_sweep(sweep, tmp_path / "sw")
    recs = store_records(tmp_path / "sw" / "jobs")
    kinds = [r["kind"] for r in recs]
    assert kinds.count("teacher") == 1 and kinds.count("init") == 1
    # siddo shared; kd and rcd differ per temperature: 2 + 2 × (2 + 2)
    assert kinds.count("student") == 2 + 2 * 4
    assert outcome.outcomes[1].meta["trained_now"] == 4  # the second point trains only its kd/rcd students
    for name in ("sweep.html", "sweep.md", "sweep_metrics.csv", "sweep_transfer.csv", "sweep_audit.json"):
        assert (tmp_path / "sw" / name).exists(), name
    for p in sweep.points:
        assert (tmp_path / "sw" / p.label / "report.html").exists()
    metrics = outcome.tables.metrics
    assert set(metrics["protocol.temperature"]) == {1, 4}
    again = reanalyse_sweep(tmp_path / "sw")
    assert again.tables.metrics.equals(metrics)


def test_teacher_epochs_sweep_shares_the_controls(tmp_path):
    sweep = expand(resolve_raw("digits-mlp", TINY + ["teacher.epochs=[1,2,3]"]))
    outcome = run_sweep(sweep, tmp_path / "sw")
    recs = store_records(tmp_path / "sw" / "jobs")
    assert [r["kind"] for r in recs].count("teacher") == 3
    assert len([r for r in recs if r["condition"] in ("siddo", "rcd-uniform")]) == 4  # shared by all points
    losses = [o.meta["teacher_loss"] for o in outcome.outcomes]
    assert len(set(losses)) == 3
    assert len(outcome.tables.trend) > 0


# ---------------------------------------------------------------------------- bring your own


def _npz_folder(root: Path, n_train=120, n_test=60, d=12, classes=3) -> Path:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, d)) * 0.4

    def split(n):
        y = rng.integers(0, classes, n)
        return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y

    root.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        x, y = split(n)
        np.savez(root / f"{name}.npz", x=x, y=y)
    return root


def _byo_spec(folder: Path, **extra) -> dict:
    raw = {
        "name": "byo",
        "data": {"name": "npz", "data_dir": str(folder)},
        "model": {"name": "test_variants:TinyNet", "kwargs": {"hidden": 8}},
        "train": {"epochs": 3, "lr": 0.1, "batch_size": 32, "threads": 1},
        "protocol": {"seeds": 2, "alphas": [0.5], "conditions": ["siddo", "kd", "rcd-gaussian"]},
    }
    for k, v in extra.items():
        raw[k] = v
    return raw


def test_bring_your_own_model_data_and_teacher(tmp_path):
    folder = _npz_folder(tmp_path / "data")
    first = run_audit(validate_spec(_byo_spec(folder)), tmp_path / "a")
    teacher_weights = first.out_dir / "jobs" / first.plan.teacher.key / "weights.safetensors"
    ckpt = tmp_path / "teacher.safetensors"
    ckpt.write_bytes(teacher_weights.read_bytes())
    spec = validate_spec(_byo_spec(folder, teacher={"checkpoint": str(ckpt)}))
    plan = build_plan(spec)
    assert plan.teacher.deps == () and "checkpoint" in plan.teacher.params
    out = run_audit(spec, tmp_path / "b")
    # the given teacher is evaluated, not trained: its outputs equal the trained one's
    a = JobStore(tmp_path / "a" / "jobs").load_outputs(first.plan.teacher.key)
    b = JobStore(tmp_path / "b" / "jobs").load_outputs(plan.teacher.key)
    assert np.allclose(a["test_logits"], b["test_logits"], atol=1e-6)
    assert np.allclose(a["train_logits"], b["train_logits"], atol=1e-6)
    assert out.meta["distillation"] == "standard" and out.meta["teacher_checkpoint"] == str(ckpt)
    assert out.tables.verdicts and len(out.tables.runs) == 1 + 2 + 2 + 2


def test_bring_your_own_errors(tmp_path):
    folder = _npz_folder(tmp_path / "data")
    bad = tmp_path / "bad.safetensors"
    save_file(
        {
            "body.1.weight": torch.zeros(8, 12),
            "body.1.bias": torch.zeros(8),
            "out.weight": torch.zeros(5, 8),
            "out.bias": torch.zeros(5),
        },
        str(bad),
    )
    with pytest.raises(SpecError, match=r"out.weight has shape \(5, 8\).*dataset has 3"):
        run_audit(validate_spec(_byo_spec(folder, teacher={"checkpoint": str(bad)})), tmp_path / "x")
    partial = tmp_path / "partial.safetensors"
    save_file({"out.weight": torch.zeros(3, 8)}, str(partial))
    with pytest.raises(SpecError, match="missing 3"):
        run_audit(validate_spec(_byo_spec(folder, teacher={"checkpoint": str(partial)})), tmp_path / "x")
    with pytest.raises(SpecError, match="file not found"):
        run_audit(
            validate_spec(_byo_spec(folder, teacher={"checkpoint": str(tmp_path / "none.safetensors")})), tmp_path / "x"
        )
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(SpecError, match="not a readable safetensors"):
        run_audit(validate_spec(_byo_spec(folder, teacher={"checkpoint": str(junk)})), tmp_path / "x")
    with pytest.raises(SpecError, match="cannot import"):
        validate_spec(_byo_spec(folder, model={"name": "no_such_pkg.nets:Net"}))
    with pytest.raises(SpecError, match="epochs"):
        validate_spec(_byo_spec(folder, teacher={"checkpoint": str(bad), "epochs": 3}))
    assert not (tmp_path / "x" / "jobs").exists()


@pytest.mark.slow
def test_cli_runs_and_reports_a_sweep(tmp_path):
    from helpers import kdaudit

    sets = as_sets(TINY)
    res = kdaudit(
        "run", "digits-mlp", *sets, "--set", "protocol.temperature=[1,3]", "--out", str(tmp_path / "sw"), "--quiet"
    )
    assert res.returncode == 0, res.stderr
    assert "Sweep digits-mlp: 2 audits" in res.stdout and "Point 2/2: protocol.temperature=3" in res.stdout
    assert "Sweep report:" in res.stdout
    again = kdaudit("report", str(tmp_path / "sw"))
    assert again.returncode == 0, again.stderr
    assert "protocol.temperature=3" in again.stdout
    bad = kdaudit("run", "digits-mlp", *sets, "--set", "protocol.temperature=[1,1]", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "lists a value twice" in bad.stderr
