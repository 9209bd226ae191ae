"""Devices: train.device, the device class in job keys, precision, GPU slots, and the CUDA checks.

The CUDA tests (marker ``cuda``) run where torch sees a GPU and are skipped elsewhere; everything
else runs on the CPU and checks the device-agnostic paths (the same code moves every tensor)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import assert_one_line_error, run_cli
from kdaudit.config.loader import resolve_spec
from kdaudit.errors import SpecError
from kdaudit.execute import device as device_mod
from kdaudit.execute.device import Batches, gpu_slots, job_device, resolve_device
from kdaudit.execute.runner import load_data
from kdaudit.execute.train import init_weights, noise_table, predict, train_model
from kdaudit.plan import build_plan
from kdaudit.plan.jobs import device_class

HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
TINY = ["protocol.seeds=1", "train.epochs=2", "model.kwargs.hidden=[16]", "data.train_subset=400"]


@pytest.fixture(scope="module")
def tiny():
    spec = resolve_spec("digits-mlp", TINY)
    plan = build_plan(spec)
    data = load_data(spec)
    return spec, plan, data, init_weights(plan.init.params, data)


def _keys(*overrides: str) -> list[str]:
    return [j.key for j in build_plan(resolve_spec("digits-mlp", [*TINY, *overrides])).jobs]


def test_auto_is_the_cpu_without_cuda_and_cuda_with_it():
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert device_class("auto") == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal where there is no CUDA device")
def test_cuda_without_a_gpu_is_refused_in_one_line():
    with pytest.raises(SpecError, match="torch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(SpecError, match="planned for cuda"):
        job_device("cpu", "cuda")


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal where there is no CUDA device")
def test_run_on_cuda_without_a_gpu_is_one_line_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "audit"
    code, _, err = run_cli(["run", "digits-mlp", "--device", "cuda", "--quiet", "--out", str(out), *_sets()], capsys)
    assert_one_line_error(code, err, "train.device", "no CUDA device")
    assert not (out / "runs.csv").exists()


def _sets() -> list[str]:
    return [a for o in TINY for a in ("--set", o)]


def test_bad_device_names_are_refused_by_the_spec(capsys):
    code, _, err = run_cli(["run", "digits-mlp", "--device", "gpu", "--quiet", *_sets()], capsys)
    assert_one_line_error(code, err, "train.device", "auto, cpu, cuda, cuda:N or mps")


def test_the_device_class_enters_the_key_but_not_its_index_nor_determinism():
    cpu = _keys("train.device=cpu")
    assert _keys() == cpu if not HAS_CUDA else _keys() != cpu  # auto: the class found here
    cuda0, cuda1 = _keys("train.device=cuda:0"), _keys("train.device=cuda:1")
    assert cuda0 == cuda1 == _keys("train.device=cuda")  # planning for a GPU needs none here
    assert cuda0[0] == cpu[0]  # M0 is drawn on the CPU either way
    assert all(a != b for a, b in zip(cuda0[1:], cpu[1:], strict=True))  # every trained job differs
    assert _keys("train.device=cpu", "train.deterministic=false") == cpu
    assert _keys("train.device=cpu", "train.tf32=true")[1:] != cpu[1:]


def test_gpu_slots_give_each_visible_gpu_jobs_per_gpu_workers(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert gpu_slots("cuda", 2) == ["3", "5", "3", "5"]  # interleaved: workers start as they are needed
    assert gpu_slots("auto", 1) == ["3", "5"]
    assert gpu_slots("cuda:1", 3) == ["5", "5", "5"]  # the index counts the visible GPUs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_slots("cuda", 2) == []


def test_a_pinned_gpu_worker_trains_its_cuda_jobs_on_its_one_gpu(monkeypatch):
    import os

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv(device_mod.GPU_WORKER_ENV, raising=False)  # restored as absent afterwards
    monkeypatch.setattr(device_mod, "resolve_device", lambda name: torch.device(name))  # no GPU needed
    assert job_device("cuda:1", "cuda") == torch.device("cuda:1")  # not pinned: the index counts
    device_mod.pin_gpu("1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert job_device("cuda:1", "cuda") == torch.device("cuda")  # pinned: its one GPU, whatever the index
    assert job_device("cpu", "cpu") == torch.device("cpu")


def test_the_cublas_workspace_is_set_before_any_cuda_call():
    import os

    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") in (device_mod.CUBLAS_WORKSPACE, ":16:8")


def test_batches_on_the_cpu_equal_index_select():
    x = torch.randn(50, 3, 4, 4)
    idx = torch.tensor([4, 1, 49, 0])
    b = Batches(x, torch.device("cpu"))
    assert b.resident and torch.equal(b.take(idx), x[idx])


def test_explicit_cpu_equals_the_default_bit_for_bit(tiny):
    spec, plan, data, m0 = tiny
    job = next(j for j in plan.trained if j.condition == "rcd-gaussian")
    table = noise_table("rcd-gaussian", 1, len(data.x_train), data.num_classes)
    a = train_model(job.params, data, m0, target_logits=table)
    b = train_model(job.params, data, m0, target_logits=table, device="cpu")
    assert np.array_equal(a.test_logits, b.test_logits)
    assert a.history == b.history


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_close_to_fp32(tiny, precision):
    spec, plan, data, m0 = tiny
    job = next(j for j in plan.trained if j.condition == "siddo")
    ref = train_model(job.params, data, m0)
    params = {**job.params, "train": {**job.params["train"], "precision": precision}}
    low = train_model(params, data, m0)
    assert np.isfinite(low.test_logits).all()
    assert not np.array_equal(low.test_logits, ref.test_logits)  # it did run in reduced precision
    agree = (low.test_logits.argmax(1) == ref.test_logits.argmax(1)).mean()
    assert agree > 0.9, agree


def test_fp16_gradient_scaler_skips_overflowing_steps():
    scaler = device_mod.grad_scaler(torch.device("cpu"), "fp16")
    assert scaler is not None and device_mod.grad_scaler(torch.device("cpu"), "bf16") is None
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler.scale(w.sum() * float("inf")).backward()
    scaler.step(opt)  # the inf gradient: the step is skipped, the weights unchanged
    scaler.update()
    assert torch.equal(w.detach(), torch.ones(3))
    assert scaler.get_scale() < 65536.0


def test_predict_returns_host_float64():
    model = torch.nn.Linear(4, 3)
    x = torch.randn(10, 4)
    out = predict(model, x, batch_size=3)  # four batches: 3 + 3 + 3 + 1
    assert out.dtype == np.float64 and out.shape == (10, 3)
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).double().numpy(), rtol=1e-6, atol=1e-7)


def test_records_state_the_device_and_its_name(tmp_path, capsys):
    import json

    code, _, err = run_cli(
        ["run", "digits-mlp", "--device", "cpu", "--quiet", "--out", str(tmp_path), *_sets()], capsys
    )
    assert code == 0, err
    meta = json.loads((tmp_path / "audit.json").read_text())["meta"]
    assert meta["device"].startswith("cpu (") and meta["device"].endswith(")")
    assert "Device" in (tmp_path / "report.md").read_text()


# -- on a CUDA GPU ------------------------------------------------------------------------------


@cuda
@pytest.mark.cuda
def test_cuda_training_is_deterministic_and_close_to_the_cpu(tiny):
    spec, plan, data, m0 = tiny
    job = next(j for j in plan.trained if j.condition == "kd")
    teacher = torch.randn(len(data.x_train), data.num_classes)
    runs = [train_model(job.params, data, m0, target_logits=teacher, device="cuda") for _ in range(2)]
    assert np.array_equal(runs[0].test_logits, runs[1].test_logits)  # same spec, same GPU: same numbers
    assert runs[0].history == runs[1].history
    assert all(v.device.type == "cpu" for v in runs[0].state.values())
    cpu = train_model(job.params, data, m0, target_logits=teacher)
    assert np.allclose(runs[0].test_logits, cpu.test_logits, atol=1e-3, rtol=1e-3)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_reduced_precision_and_tf32(tiny, precision):
    spec, plan, data, m0 = tiny
    job = next(j for j in plan.trained if j.condition == "siddo")
    params = {**job.params, "train": {**job.params["train"], "precision": precision, "tf32": True}}
    res = train_model(params, data, m0, device="cuda")
    assert np.isfinite(res.test_logits).all()
    assert (res.test_logits.argmax(1) == data.y_test.numpy()).mean() > 0.5


@cuda
@pytest.mark.cuda
def test_cuda_batches_from_pinned_memory_equal_resident_ones(tiny, monkeypatch):
    spec, plan, data, m0 = tiny
    job = next(j for j in plan.trained if j.condition == "siddo")
    resident = train_model(job.params, data, m0, device="cuda")
    monkeypatch.setattr(device_mod, "fits", lambda *a, **k: False)
    streamed = train_model(job.params, data, m0, device="cuda")
    assert np.array_equal(resident.test_logits, streamed.test_logits)


@cuda
@pytest.mark.cuda
def test_cuda_audit_end_to_end_with_a_worker_per_gpu_slot(tmp_path, capsys):
    import pandas as pd

    sets = [*_sets(), "--set", "execution.ensemble=off"]
    code, _, err = run_cli(
        ["run", "digits-mlp", "--device", "cuda", "--quiet", "--out", str(tmp_path / "a"), *sets], capsys
    )
    assert code == 0, err
    sets2 = [*sets, "--set", "execution.jobs_per_gpu=2"]
    code, _, err = run_cli(
        ["run", "digits-mlp", "--device", "cuda", "--quiet", "--out", str(tmp_path / "b"), *sets2], capsys
    )
    assert code == 0, err
    a = pd.read_csv(tmp_path / "a" / "runs.csv").sort_values("run_id").reset_index(drop=True)
    b = pd.read_csv(tmp_path / "b" / "runs.csv").sort_values("run_id").reset_index(drop=True)
    pd.testing.assert_series_equal(a["accuracy"], b["accuracy"])  # two workers on one GPU: the same numbers
