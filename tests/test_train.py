import numpy as np
import pytest
import torch

import kdaudit.execute.train as train_mod
from helpers import job_named
from kdaudit.config.loader import resolve_spec
from kdaudit.errors import TrainingError
from kdaudit.execute.runner import load_data
from kdaudit.execute.train import init_weights, noise_table, train_model
from kdaudit.objectives import OBJECTIVES
from kdaudit.plan import build_plan


@pytest.fixture(scope="module")
def setup():
    spec = resolve_spec(
        "digits-mlp",
        [
            "protocol.seeds=2",
            "train.epochs=2",
            "model.kwargs.hidden=[16]",
            "model.kwargs.dropout=0.2",
            "data.train_subset=300",
        ],
    )
    plan = build_plan(spec)
    data = load_data(spec)
    return spec, plan, data, init_weights(plan.init.params, data)


def _spy_batches(monkeypatch):
    """Record, for every step, the batch indices (via the inputs) and the soft targets σ(z_t; T)
    (training indexes a table of them computed once per job)."""
    seen = []
    real_get = OBJECTIVES.get

    def get(name):
        real = real_get(name)

        def spy(logits, labels, target, **kw):
            soft = kw.get("soft_targets")
            seen.append((labels.clone(), None if soft is None else soft[-1].clone(), logits.detach().clone()))
            return real(logits, labels, target, **kw)

        return spy

    monkeypatch.setattr(OBJECTIVES, "get", get)
    return seen


def test_students_with_the_same_seed_see_identical_batches(setup, monkeypatch):
    spec, plan, data, m0 = setup
    captured = {}
    real_forward = torch.nn.Module.__call__
    for run_id in ("siddo-s01", "kd-a0.5-s01", "rcd-uniform-a0.9-s01", "siddo-s02"):
        job = job_named(plan, run_id)
        inputs = []
        model_cls = train_mod.make_model(job.params, data).__class__

        def record(self, x, *a, _inputs=inputs, _cls=model_cls, **k):
            if isinstance(self, _cls) and self.training:
                _inputs.append(x.clone())
            return real_forward(self, x, *a, **k)

        monkeypatch.setattr(torch.nn.Module, "__call__", record)
        target = torch.randn(len(data.x_train), data.num_classes) if job.alpha > 0 else None
        train_model(job.params, data, m0, target_logits=target)
        monkeypatch.setattr(torch.nn.Module, "__call__", real_forward)
        captured[run_id] = inputs
    base = captured["siddo-s01"]
    assert len(base) == 2 * int(np.ceil(300 / 64))
    for other in ("kd-a0.5-s01", "rcd-uniform-a0.9-s01"):
        assert len(captured[other]) == len(base)
        assert all(torch.equal(a, b) for a, b in zip(base, captured[other]))
    assert not all(torch.equal(a, b) for a, b in zip(base, captured["siddo-s02"]))


def test_rcd_noise_is_fixed_per_sample_across_epochs_and_differs_across_seeds(setup, monkeypatch):
    spec, plan, data, m0 = setup
    z1 = noise_table("rcd-gaussian", 1, len(data.x_train), 10)
    assert torch.equal(z1, noise_table("rcd-gaussian", 1, len(data.x_train), 10))
    assert not torch.equal(z1, noise_table("rcd-gaussian", 2, len(data.x_train), 10))
    assert not torch.equal(z1, noise_table("rcd-uniform", 1, len(data.x_train), 10))
    u = noise_table("rcd-uniform", 3, 1000, 10)
    assert float(u.min()) >= 0 and float(u.max()) < 1
    g = noise_table("rcd-gaussian", 3, 4000, 10)
    assert abs(float(g.mean())) < 0.05 and abs(float(g.std()) - 1) < 0.05

    seen = _spy_batches(monkeypatch)
    job = job_named(plan, "rcd-gaussian-a0.5-s01")
    train_model(job.params, data, m0, target_logits=z1)
    # map each training sample to the target row it received; every epoch must agree with Z
    y_all = data.y_train
    steps_per_epoch = len(seen) // 2
    for epoch in range(2):
        targets = torch.cat([t for _, t, _ in seen[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]])
        labels = torch.cat([y for y, _, _ in seen[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]])
        perm = train_mod.batch_order(job.seed, len(y_all), 2, 64)[epoch]
        idx = torch.cat(perm)
        assert torch.equal(labels, y_all[idx])
        assert torch.equal(targets, torch.softmax(z1, dim=1)[idx])  # T = 1


def test_training_is_deterministic_and_starts_from_m0(setup):
    spec, plan, data, m0 = setup
    job = job_named(plan, "kd-a0.9-s02")
    target = torch.randn(len(data.x_train), data.num_classes, generator=torch.Generator().manual_seed(0))
    a = train_model(job.params, data, m0, target_logits=target)
    b = train_model(job.params, data, m0, target_logits=target)
    assert np.array_equal(a.test_logits, b.test_logits)
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert not torch.equal(a.state["head.weight"], m0["head.weight"])
    # M0 is reproducible from init_seed
    again = init_weights(plan.init.params, data)
    assert all(torch.equal(again[k], m0[k]) for k in m0)


def test_non_finite_loss_stops_the_job_with_its_name(setup):
    spec, plan, data, m0 = setup
    job = job_named(plan, "siddo-s01")
    params = {**job.params, "train": {**job.params["train"], "lr": 1e30}}
    with pytest.raises(TrainingError, match="siddo-s01.*training loss became"):
        train_model(params, data, m0, name="siddo-s01")


def test_target_shape_mismatch_is_rejected(setup):
    spec, plan, data, m0 = setup
    job = job_named(plan, "kd-a0.5-s01")
    with pytest.raises(ValueError, match="target logits have shape"):
        train_model(job.params, data, m0, target_logits=torch.zeros(3, 10))


def test_warmup_then_cosine_and_step_factors_by_hand():
    import math

    from kdaudit.execute.train import _lr_factor

    t = {"epochs": 10, "warmup_epochs": 2, "schedule": "cosine", "step_epochs": [], "step_gamma": 0.1}
    got = [_lr_factor(t, e) for e in range(10)]
    want = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    assert got == pytest.approx(want)
    s = {"epochs": 100, "warmup_epochs": 0, "schedule": "step", "step_epochs": [60], "step_gamma": 0.2}
    assert [_lr_factor(s, e) for e in (0, 59, 60, 99)] == pytest.approx([1, 1, 0.2, 0.2])


def test_grad_clip_bounds_every_update():
    """With SGD (no momentum) and grad_clip c, no step moves the parameters by more than lr·c."""
    from kdaudit.data.base import load_dataset
    from kdaudit.execute.train import init_weights, train_model

    data = load_dataset("digits", train_subset=256, test_subset=64)
    params = {
        "model": {"name": "mlp", "kwargs": {"hidden": [16]}},
        "init_seed": 0,
        "seed": 1,
        "train": {
            "optimizer": "sgd",
            "lr": 0.5,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "schedule": "constant",
            "step_epochs": [],
            "step_gamma": 0.1,
            "epochs": 1,
            "batch_size": 256,
            "warmup_epochs": 0,
            "grad_clip": 1e-3,
        },
    }
    init = init_weights(params, data)
    moved = train_model(params, data, init).state
    norm = sum(float(((moved[k] - init[k]) ** 2).sum()) for k in init) ** 0.5
    # one full batch: one step of length at most lr·c (float32 weights: 1e-4 relative slack)
    assert 0 < norm <= 0.5 * 1e-3 * (1 + 1e-4)
    params["train"]["grad_clip"] = None
    free = train_model(params, data, init).state
    assert sum(float(((free[k] - init[k]) ** 2).sum()) for k in init) ** 0.5 > 10 * norm
