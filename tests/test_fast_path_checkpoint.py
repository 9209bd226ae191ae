"""The training fast path against a straightforward reference, and mid-run checkpoint resume."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from helpers import job_named
from kdaudit.config.loader import resolve_spec
from kdaudit.execute.checkpoint import Checkpointer
from kdaudit.execute.runner import load_data
from kdaudit.execute.train import batch_order, init_weights, make_model, predict, train_model
from kdaudit.objectives.losses import soft_cross_entropy
from kdaudit.plan import build_plan


class PerSample(Dataset):
    """One sample at a time, as a typical hand-written training script does."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def reference_train(params, data, m0, teacher=None):
    """A plain loop: Dataset + DataLoader, the teacher's forward at every student step, fp32."""
    train = params["train"]
    torch.manual_seed(params["seed"])
    model = make_model(params, data)
    model.load_state_dict(m0)
    opt = torch.optim.SGD(model.parameters(), lr=train["lr"], momentum=train["momentum"])
    order = batch_order(params["seed"], len(data.y_train), train["epochs"], train["batch_size"])
    ds = PerSample(data.x_train, data.y_train)
    alpha, T = params.get("alpha", 0.0), params.get("temperature", 1.0)
    for epoch in range(train["epochs"]):
        model.train()
        # its own generator, so the loader does not draw from the global RNG (dropout)
        loader = DataLoader(ds, batch_sampler=[b.tolist() for b in order[epoch]], generator=torch.Generator())
        for x, y in loader:
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            if teacher is not None and alpha > 0:
                teacher.eval()
                with torch.no_grad():
                    zt = teacher(x)
                loss = (1 - alpha) * loss + alpha * soft_cross_entropy(zt, out, T)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return predict(model, data.x_test)


@pytest.fixture(scope="module")
def setup():
    spec = resolve_spec(
        "digits-mlp",
        [
            "protocol.seeds=1",
            "train.epochs=3",
            "model.kwargs.hidden=[32]",
            "model.kwargs.dropout=0.1",
            "data.train_subset=400",
        ],
    )
    plan = build_plan(spec)
    data = load_data(spec)
    return spec, plan, data, init_weights(plan.init.params, data)


@pytest.mark.slow  # trains a teacher and a student twice
def test_fast_path_equals_reference_for_teacher_and_kd_student(setup):
    spec, plan, data, m0 = setup
    t_job = job_named(plan, "teacher")
    fast_t = train_model(t_job.params, data, m0, keep_train_logits=True)
    ref_t = reference_train(t_job.params, data, m0)
    assert np.abs(fast_t.test_logits - ref_t).max() <= 1e-5

    teacher = make_model(t_job.params, data)
    teacher.load_state_dict(fast_t.state)
    kd = job_named(plan, "kd-a0.9-s01")
    fast = train_model(kd.params, data, m0, target_logits=torch.from_numpy(fast_t.train_logits))
    ref = reference_train(kd.params, data, m0, teacher=teacher)
    assert np.abs(fast.test_logits - ref).max() <= 1e-5


def test_teacher_logits_are_computed_once_per_teacher_not_per_student(tmp_path):
    """Count the teacher's forward passes over the training set during a whole tiny audit."""
    from kdaudit.audit import run_audit

    calls = {"train_forwards": 0}
    real = predict

    def counting(model, x, batch_size=2048):
        if x.shape[0] > 0 and x.data_ptr() == load_data(spec).x_train.data_ptr():
            calls["train_forwards"] += 1
        return real(model, x, batch_size)

    spec = resolve_spec("digits-mlp", ["protocol.seeds=2", "train.epochs=1", "model.kwargs.hidden=[8]"])
    import kdaudit.execute.train as train_mod

    orig = train_mod.predict
    train_mod.predict = counting
    try:
        run_audit(spec, tmp_path / "a")
    finally:
        train_mod.predict = orig
    assert calls["train_forwards"] == 1  # the teacher's, once; 6 KD students reuse it


def test_bf16_and_channels_last_are_opt_in_and_change_the_job_key():
    base = build_plan(resolve_spec("digits-mlp"))
    bf16 = build_plan(resolve_spec("digits-mlp", ["train.precision=bf16"]))
    ckpt = build_plan(resolve_spec("digits-mlp", ["train.checkpoint_every=1"]))
    assert base.teacher.key != bf16.teacher.key and base.init.key == bf16.init.key
    assert [j.key for j in base.jobs] == [j.key for j in ckpt.jobs]
    assert resolve_spec("digits-mlp").train.path_label() == "fp32"
    assert (
        resolve_spec("digits-mlp", ["train.precision=bf16", "train.channels_last=true"]).train.path_label()
        == "bf16+channels_last"
    )


def test_bf16_channels_last_cnn_trains_and_stays_close_to_fp32():
    spec = resolve_spec(
        "digits-mlp",
        [
            "model.name=small-cnn",
            "model.kwargs={width: 4}",
            "data.options.flatten=false",
            "train.epochs=2",
            "data.train_subset=300",
        ],
    )
    plan = build_plan(spec)
    data = load_data(spec)
    m0 = init_weights(plan.init.params, data)
    fp32 = train_model(plan.teacher.params, data, m0)
    params = {
        **plan.teacher.params,
        "train": {**plan.teacher.params["train"], "precision": "bf16", "channels_last": True},
    }
    bf16 = train_model(params, data, m0)
    assert np.isfinite(bf16.test_logits).all()
    assert not np.array_equal(bf16.test_logits, fp32.test_logits)
    agree = (bf16.test_logits.argmax(1) == fp32.test_logits.argmax(1)).mean()
    assert agree > 0.8


@pytest.mark.parametrize(("optimizer", "precision"), [("sgd", "fp32"), ("adam", "fp32"), ("sgd", "fp16")])
def test_a_job_resumed_from_its_checkpoint_ends_bit_identical(setup, tmp_path, optimizer, precision):
    spec, plan, data, m0 = setup
    job = job_named(plan, "kd-a0.5-s01")
    train = {**job.params["train"], "epochs": 4, "optimizer": optimizer, "lr": 0.01, "precision": precision}
    params = {**job.params, "train": train}
    target = torch.randn(len(data.x_train), 10, generator=torch.Generator().manual_seed(1))
    ref = train_model(params, data, m0, target_logits=target)

    ck = Checkpointer(tmp_path / "ck.safetensors", every=1)

    class Crash(Exception):
        pass

    def crash_after_epoch_3(epoch, epochs, loss):
        if epoch == 3:
            raise Crash  # the checkpoint of epoch 2 exists; epoch 3's work is lost

    with pytest.raises(Crash):
        train_model(params, data, m0, target_logits=target, checkpoint=ck, on_epoch=crash_after_epoch_3)
    torch.manual_seed(12345)  # the global RNG is disturbed in between, as in a new process
    resumed = train_model(params, data, m0, target_logits=target, checkpoint=ck)
    assert resumed.resumed_from_epoch == 2
    assert np.array_equal(resumed.test_logits, ref.test_logits)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in ref.history]


def test_a_checkpoint_keeps_the_fp16_gradient_scale(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20)
    scaler.scale(model(torch.full((1, 3), float("inf"))).sum()).backward()
    scaler.step(opt)
    scaler.update()  # an overflow: the scale halves
    assert scaler.get_scale() == 2.0**19
    ck = Checkpointer(tmp_path / "ck.safetensors", every=1)
    ck.save(1, model, opt, [], scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**20)
    assert ck.load(torch.nn.Linear(3, 2), torch.optim.SGD(model.parameters(), lr=0.1), fresh) is not None
    assert fresh.get_scale() == 2.0**19
    assert fresh.state_dict() == scaler.state_dict()


def test_a_corrupt_checkpoint_is_ignored_and_the_job_starts_afresh(setup, tmp_path):
    spec, plan, data, m0 = setup
    job = job_named(plan, "siddo-s01")
    ck = Checkpointer(tmp_path / "ck.safetensors", every=1)
    ck.path.write_bytes(b"not a checkpoint")
    out = train_model(job.params, data, m0, checkpoint=ck)
    assert out.resumed_from_epoch == 0
    assert np.array_equal(out.test_logits, train_model(job.params, data, m0).test_logits)


@pytest.mark.slow  # a whole audit, killed and resumed
def test_killed_job_resumes_from_checkpoint_through_the_cli(tmp_path):
    args = [
        sys.executable,
        "-m",
        "kdaudit.cli",
        "run",
        "digits-mlp",
        "--set",
        "protocol.seeds=1",
        "--set",
        "protocol.conditions=[siddo]",
        "--set",
        "train.epochs=6",
        "--set",
        "model.kwargs.hidden=[16]",
        "--quiet",
    ]
    ref = subprocess.run(args + ["--out", str(tmp_path / "ref")], capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "ck"
    env = {**os.environ, "KDAUDIT_FAILPOINT": "train.epoch:10"}  # teacher: 6 epochs, then siddo epoch 4
    killed = subprocess.run(
        args + ["--set", "train.checkpoint_every=2", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9
    assert list((out / "jobs" / ".checkpoints").glob("*.safetensors"))
    again = subprocess.run(
        args + ["--set", "train.checkpoint_every=2", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    recs = {
        json.loads(p.read_text())["run_id"]: json.loads(p.read_text()) for p in (out / "jobs").glob("*/record.json")
    }
    assert recs["siddo-s01"]["resumed_from_epoch"] == 2
    assert recs["teacher"]["resumed_from_epoch"] == 0
    assert not list((out / "jobs" / ".checkpoints").glob("*"))
    assert (out / "runs.csv").read_text() == (tmp_path / "ref" / "runs.csv").read_text()
