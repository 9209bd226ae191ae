"""The airbench-style model and the ``cifar10-fast`` setup: shapes and parameter counts, one-line
option errors, both presets, and an offline end-to-end run on a small CIFAR-10 fixture written in
the official python-batch layout (nothing is downloaded)."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from helpers import assert_one_line_error, n_params, run_cli
from kdaudit.config.loader import resolve_spec
from kdaudit.errors import SpecError
from kdaudit.models import build_model, feature_layers
from test_data_image import write_cifar10

N = 4


def airbench_count(c_in: int, widths: list[int], k: int) -> int:
    """Stem 2×2 conv with bias to 8·C channels; per block two bias-free 3×3 convs, each with a BN
    (weight and bias); a bias-free head."""
    stem = 8 * c_in
    total = c_in * stem * 4 + stem
    cin = stem
    for c in widths:
        total += cin * c * 9 + 2 * c + c * c * 9 + 2 * c
        cin = c
    return total + cin * k


def build(shape=(3, 32, 32), classes=10, seed=0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("airbench", shape, classes, **kw)


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """A private HOME, no KDAUDIT_DATA, and any download fails the test."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KDAUDIT_DATA", raising=False)

    def forbidden(*args, **kwargs):
        raise AssertionError(f"unexpected fetch {args}")

    monkeypatch.setattr(urllib.request, "urlretrieve", forbidden)
    monkeypatch.setattr(urllib.request, "urlopen", forbidden)


# --------------------------------------------------------------------------- the model


def test_output_shape_and_param_count_scale_with_width():
    full = build()
    assert n_params(full) == airbench_count(3, [64, 256, 256], 10) == 1_972_792
    counts = []
    for width in (0.25, 0.5, 1.0):
        model = build(width=width)
        with torch.no_grad():
            assert model(torch.randn(N, 3, 32, 32)).shape == (N, 10)
        channels = [round(c * width) for c in (64, 256, 256)]
        assert n_params(model) == airbench_count(3, channels, 10), width
        counts.append(n_params(model))
    assert counts[0] < counts[1] < counts[2]
    assert counts[2] / counts[1] > 3  # the 3×3 convs dominate: about 4× per doubling
    custom = build((1, 28, 28), 7, widths=[8, 16], width=2.0)
    assert n_params(custom) == airbench_count(1, [16, 32], 7)
    with torch.no_grad():
        assert custom(torch.randn(N, 1, 28, 28)).shape == (N, 7)
    assert not any(isinstance(m, nn.Dropout) for m in full.modules())


def test_forward_backward_and_eval_is_per_sample():
    model = build((3, 32, 32), 5, width=0.25)
    x = torch.randn(N, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 4, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x[:2]), model(x)[:2], rtol=1e-4, atol=1e-5)
    a, b = build(seed=3, width=0.25).state_dict(), build(seed=3, width=0.25).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # weights from the global RNG only


def test_feature_layers_end_in_the_feature_of_the_scaled_head():
    model = build(width=0.25).eval()
    assert feature_layers(model) == ("stem", "block1", "block2", "block3", "pool")
    seen: dict[str, torch.Tensor] = {}
    for layer in feature_layers(model):
        model.get_submodule(layer).register_forward_hook(lambda _m, _i, o, layer=layer: seen.setdefault(layer, o))
    with torch.no_grad():
        logits = model(torch.randn(N, 3, 32, 32))
    shapes = [tuple(seen[layer].shape) for layer in feature_layers(model)]
    assert shapes == [(N, 24, 31, 31), (N, 16, 15, 15), (N, 64, 7, 7), (N, 64, 3, 3), (N, 64)]
    torch.testing.assert_close(model.head(seen["pool"]), logits)
    torch.testing.assert_close(logits, nn.functional.linear(seen["pool"], model.head.weight) / 9)


@pytest.mark.parametrize("shape", [(1, 2, 2), (2, 8, 13), (3, 5, 5)])
def test_small_and_odd_inputs(shape):
    model = build(shape, 3, width=0.25)
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 3)


@pytest.mark.parametrize(
    "shape, kw, match",
    [
        ((3, 32, 32), {"width": 0}, "model.kwargs.width: must be a positive number"),
        ((3, 32, 32), {"width": "wide"}, "model.kwargs.width"),
        ((3, 32, 32), {"width": True}, "model.kwargs.width"),
        ((3, 32, 32), {"widths": []}, "model.kwargs.widths: must be a non-empty list of positive integers"),
        ((3, 32, 32), {"widths": [64, 0, 256]}, "model.kwargs.widths"),
        ((3, 32, 32), {"widths": [64, 2.5]}, "model.kwargs.widths"),
        ((3, 32, 32), {"widths": 64}, "model.kwargs.widths"),
        ((3072,), {}, "needs image inputs C×H×W"),
        ((3, 1, 32), {}, "H, W >= 2"),
        ((3, 32, 32), {"depth": 3}, "allowed: widths, width"),
        ((3, 32, 32), {"dropout": 0.1}, "unknown option(s) dropout"),
    ],
)
def test_bad_options_are_one_line(shape, kw, match):
    with pytest.raises(SpecError) as err:
        build_model("airbench", shape, 10, **kw)
    assert match in str(err.value)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- the setup


def test_setup_resolves_with_both_presets():
    cpu, paper = resolve_spec("cifar10-fast"), resolve_spec("cifar10-fast", preset="paper")
    assert resolve_spec("cifar10-fast", preset="cpu") == cpu
    for s in (cpu, paper):
        assert (s.modality, s.data.name, s.model.name, s.data.data_dir) == ("image", "cifar10", "airbench", None)
        assert (s.train.optimizer, s.train.momentum, s.train.weight_decay, s.train.schedule) == (
            "sgd",
            0.9,
            5e-4,
            "cosine",
        )
        assert s.protocol.seeds == 10 and s.n_models() == 131
    assert (paper.train.lr, paper.train.batch_size, paper.train.epochs, paper.train.warmup_epochs) == (0.4, 1024, 10, 2)
    assert paper.model.kwargs == {"widths": [64, 256, 256], "width": 1.0}
    assert (paper.data.train_subset, paper.data.test_subset) == (None, None)
    assert (cpu.data.train_subset, cpu.model.kwargs["width"], cpu.train.epochs) == (5000, 0.25, 2)
    small = build(**cpu.model.kwargs)
    large = build(**paper.model.kwargs)
    assert n_params(large) > 10 * n_params(small)


# random fixture images: a teacher trained for one step may get no test image right
@pytest.mark.filterwarnings("ignore::kdaudit.analysis.metrics.EmptySubsetWarning")
def test_setup_runs_end_to_end_offline_on_a_cifar10_fixture(tmp_path, capsys):
    batches = tmp_path / "c10" / "cifar-10-batches-py"
    ref = write_cifar10(batches, per_batch=8, n_test=10)  # 40 training and 10 test images
    out = tmp_path / "audit"
    args = ["run", "cifar10-fast", "--preset", "cpu", "--out", str(out), "--quiet", "--workers", "1"]
    sets = [f"data.data_dir={batches.parent}", "protocol.seeds=2", "train.epochs=1", "train.threads=1"]
    code, _, err = run_cli(args + [a for s in sets for a in ("--set", s)], capsys)
    assert code == 0, err
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 1 + 2 * (1 + 3 * 4)  # teacher + 2 seeds × (siddo + 3 α × 4 conditions)
    assert set(runs.condition) == {"teacher", "siddo", "kd", "ls", "rcd-uniform", "rcd-gaussian"}
    assert np.isfinite(runs.accuracy).all()
    students = runs[runs.role == "student"]
    assert (students.n_teacher_correct + students.n_teacher_wrong).eq(len(ref["y_test"])).all()
    data = json.loads((out / "data.json").read_text())
    assert (data["name"], data["input_shape"], data["n_train"], data["n_test"]) == ("cifar10", [3, 32, 32], 40, 10)
    assert str(batches) in data["source"]
    assert (out / "report.html").stat().st_size > 0


def test_missing_or_wrong_data_dir_is_a_one_line_error_naming_it(tmp_path, capsys):
    base = ["run", "cifar10-fast", "--quiet", "--workers", "1", "--set", "protocol.seeds=1"]
    code, _, err = run_cli([*base, "--out", str(tmp_path / "a")], capsys)
    assert_one_line_error(code, err, "CIFAR-10 not found", "set data.data_dir", "cifar-10-python.tar.gz")
    (tmp_path / "empty").mkdir()
    for where, why in ((tmp_path / "empty", "holds neither"), (tmp_path / "nowhere", "does not exist")):
        code, _, err = run_cli([*base, "--out", str(tmp_path / "b"), "--set", f"data.data_dir={where}"], capsys)
        assert_one_line_error(
            code, err, f"data.data_dir {where} {why}", "point it at the CIFAR-10 python batches", "cifar-10-batches-py"
        )
