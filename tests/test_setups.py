"""The named setups: coverage of modalities and architectures, presets, and a smoke run of every
setup's cpu preset cut to 1 seed and 1 epoch (the full protocol grid: teacher + 10 students).
A setup that reads CIFAR-10 runs on a small fixture in the official layout, written into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import kdaudit_here, records
from kdaudit.config.loader import resolve_spec, setup_file_raw, setup_names
from kdaudit.errors import SpecError
from kdaudit.models import MODELS, build_model
from test_data_image import write_cifar10

ARCHITECTURES = {"mlp", "lenet5", "resnet18", "vgg16-bn", "vit", "mobilenetv2", "airbench", "m5", "lstm", "gpt"}
SETUPS = setup_names()


def test_fifteen_setups_over_three_modalities_and_all_ten_architectures():
    specs = [resolve_spec(n) for n in SETUPS]
    by_modality = pd.Series([s.modality for s in specs]).value_counts().to_dict()
    assert len(specs) >= 15
    assert by_modality.get("image", 0) >= 8
    assert by_modality.get("audio", 0) >= 3
    assert by_modality.get("text", 0) >= 4
    assert set(MODELS.names()) >= ARCHITECTURES
    assert {s.model.name for s in specs} >= ARCHITECTURES
    for s in specs:
        assert s.n_models() == 131, s.name  # teacher + 10 seeds x (siddo + 3 alphas x 4 conditions)


@pytest.mark.parametrize("name", SETUPS)
def test_each_setup_has_a_cpu_and_a_paper_preset(name):
    raw = setup_file_raw(name)
    assert set(raw["presets"]) == {"cpu", "paper"}
    cpu, paper = resolve_spec(name), resolve_spec(name, preset="paper")
    assert cpu.preset == "cpu" and paper.preset == "paper"
    assert resolve_spec(name, preset="cpu") == cpu  # cpu is the default
    assert paper.train.epochs > cpu.train.epochs
    assert cpu.data.name == paper.data.name and cpu.model.name == paper.model.name


def _params(spec, input_shape, num_classes=10, data_args=None):
    torch.manual_seed(0)
    m = build_model(spec.model.name, input_shape, num_classes, data_args, **spec.model.kwargs)
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "name, shape, data_args",
    [
        ("fashion-mnist-resnet18", (1, 28, 28), None),
        ("fashion-mnist-vgg16", (1, 28, 28), None),
        ("fashion-mnist-mobilenetv2", (1, 28, 28), None),
        ("cifar10-fast", (3, 32, 32), None),
        ("mnist-vit", (1, 28, 28), None),
        ("fashion-mnist-mlp", (784,), None),
        ("spoken-digits-m5", (1, 8000), None),
        ("spoken-digits-lstm", (1, 32, 32), None),
        ("word-language-gpt", (16,), {"vocab_size": 60, "pad_id": 0}),
        ("wordnet-supersense-lstm", (24,), {"vocab_size": 7000, "pad_id": 0}),
    ],
)
def test_the_paper_preset_builds_the_larger_model(name, shape, data_args):
    cpu, paper = resolve_spec(name), resolve_spec(name, preset="paper")
    assert _params(paper, shape, data_args=data_args) > 2 * _params(cpu, shape, data_args=data_args)


def test_paper_recipes_follow_the_paper():
    r = resolve_spec("fashion-mnist-resnet18", preset="paper")
    assert (
        r.train.optimizer,
        r.train.lr,
        r.train.momentum,
        r.train.weight_decay,
        r.train.batch_size,
        r.train.epochs,
        r.train.schedule,
        r.train.step_epochs,
        r.train.step_gamma,
    ) == ("sgd", 0.1, 0.9, 5e-4, 128, 100, "step", [60], 0.2)
    assert r.model.kwargs == {"width": 1.0, "blocks": [2, 2, 2, 2]}
    v = resolve_spec("mnist-vit", preset="paper")
    assert (v.train.optimizer, v.train.lr, v.train.weight_decay, v.train.warmup_epochs, v.train.schedule) == (
        "adamw",
        5e-4,
        1e-3,
        10,
        "cosine",
    )
    assert v.model.kwargs["patch"] == 4


def test_preset_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SpecError, match="no preset 'gpu'; its presets: cpu, paper"):
        resolve_spec("mnist-lenet5", preset="gpu")
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: plain\ndata: {name: digits}\n")
    with pytest.raises(SpecError, match="has no presets"):
        resolve_spec(str(plain), preset="paper")
    # a spec file that starts from a setup takes the setup's preset, and its own fields on top
    derived = tmp_path / "derived.yaml"
    derived.write_text("setup: fashion-mnist-resnet18\npreset: paper\ntrain: {epochs: 7}\n")
    d = resolve_spec(str(derived))
    assert (d.preset, d.model.kwargs["width"], d.train.epochs, d.train.lr) == ("paper", 1.0, 7, 0.1)
    assert kdaudit_here("run", "mnist-lenet5", "--preset", "gpu") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no preset 'gpu'" in err[0]


def test_setups_command_lists_every_setup_with_modality_and_presets(capsys):
    assert kdaudit_here("setups") == 0
    out = capsys.readouterr().out
    for name in SETUPS:
        assert name in out
    for word in ("image", "audio", "text", "cpu, paper"):
        assert word in out


def test_paper_preset_gets_its_own_default_directory():
    from kdaudit.audit import default_out_dir

    assert default_out_dir(resolve_spec("mnist-lenet5")).name == "mnist-lenet5"
    assert default_out_dir(resolve_spec("mnist-lenet5", preset="paper")).name == "mnist-lenet5-paper"


def _data_dir(name: str, tmp_path) -> list[str]:
    """The override pointing a setup that reads CIFAR-10 at a small fixture (none for the others)."""
    if resolve_spec(name).data.name != "cifar10":
        return []
    batches = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar10(batches, per_batch=8, n_test=10)
    return [f"data.data_dir={batches}"]


def _smoke(name: str, tmp_path):
    from kdaudit.audit import run_audit

    torch.set_num_threads(2)
    spec = resolve_spec(name, ["protocol.seeds=1", "train.epochs=1", *_data_dir(name, tmp_path)])
    out = run_audit(spec, tmp_path / name)
    runs = pd.read_csv(out.out_dir / "runs.csv")
    assert len(runs) == 14  # teacher + siddo + 4 conditions x 3 alphas
    assert set(runs.condition) == {"teacher", "siddo", "kd", "ls", "rcd-uniform", "rcd-gaussian"}
    assert np.isfinite(runs.accuracy).all()
    data = json.loads((out.out_dir / "data.json").read_text())
    recs = records(out.out_dir)
    assert {r["data_fingerprint"] for r in recs.values()} == {data["fingerprint"]}
    assert data["modality"] == spec.modality
    # every model trained to finite losses, and the teacher's outputs depend on its input
    assert all(np.isfinite(r["metrics"]["final_train_loss"]) for r in recs.values() if r["run_id"] != "m0")
    from kdaudit.audit import store_for

    t_logits = store_for(spec, out.out_dir).load_outputs(out.plan.teacher.key)["test_logits"]
    assert np.isfinite(t_logits).all() and t_logits.std(axis=0).max() > 0
    for f in ("report.html", "report.md", "tests.csv", "transfer.csv", "summary.csv", "audit.json"):
        assert (out.out_dir / f).stat().st_size > 0
    return out, data


# digits-mlp reads scikit-learn's digits (no system package) and runs in seconds: the smoke run of
# the fast tier. Every other setup reads data from Debian or npm packages, or trains a larger model
# (cifar10-fast: on a written CIFAR-10 fixture, see _data_dir).
FAST = ["digits-mlp"]
SLOW = [n for n in SETUPS if n not in FAST]


@pytest.mark.parametrize("name", FAST)
def test_smoke_run_of_cpu_preset(name, tmp_path):
    _smoke(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_smoke_run_of_cpu_preset_slow(name, tmp_path):
    _smoke(name, tmp_path)


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").exists(), reason="wordnet-base not installed")
def test_text_audit_saves_its_tokenizer_and_it_reproduces_the_inputs(tmp_path):
    from kdaudit.audit import prepare_out_dir, write_data_info
    from kdaudit.data.base import load_dataset
    from kdaudit.data.text import tokenizer_from_dict, wordnet_supersense_texts

    spec = resolve_spec("wordnet-supersense-lstm")
    bundle = load_dataset(spec.data.name, **spec.data.options)
    path = write_data_info(bundle, prepare_out_dir(tmp_path / "d"))
    saved = json.loads(path.read_text())
    assert saved["vocab"][:2] == ["<pad>", "<unk>"]
    assert saved["model_args"]["vocab_size"] == len(saved["vocab"])
    assert saved["fingerprint"] == bundle.fingerprint() and saved["input_dtype"] == "int64"
    # the saved tokenizer alone turns the raw glosses back into exactly the trained inputs
    tok = tokenizer_from_dict({**saved["tokenizer"], "vocab": saved["vocab"]})
    splits = wordnet_supersense_texts(per_class=spec.data.options["per_class"])
    assert np.array_equal(tok.encode(splits.test), bundle.x_test.numpy())
    assert np.array_equal(tok.encode(splits.train), bundle.x_train.numpy())
