"""Spec validation and the run/setups CLI error paths: one line on stderr, exit code 2."""

import pytest
import yaml

from helpers import kdaudit
from kdaudit.config.loader import apply_overrides, load_setup_raw, resolve_spec, setup_names, validate_spec
from kdaudit.errors import SpecError


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["train.epoch=3"], "train.epoch: unknown key; allowed: optimizer"),
        (["bogus=1"], "bogus: unknown key"),
        (["train.epochs=-1"], "train.epochs"),
        (["train.epochs=three"], "train.epochs"),
        (["train.lr=0"], "train.lr"),
        (["train.optimizer=rmsprop"], "train.optimizer"),
        (["protocol.alphas=[0.5, 1.5]"], "every α must lie in (0, 1]"),
        (["protocol.alphas=[]"], "at least one α"),
        (["protocol.conditions=[]"], "protocol.conditions: must name at least one"),
        (["protocol.conditions=[kd, distill]"], "protocol.conditions"),
        (["protocol.seeds=0"], "protocol.seeds"),
        (["protocol.temperature=-2"], "protocol.temperature"),
        (["analysis.level=1.5"], "analysis.level"),
        (["analysis.correction=bonferroni"], "analysis.correction"),
        (["model.name=mpl"], "did you mean 'mlp'"),
        (["data.name=fashion_mnist"], "did you mean 'fashion-mnist'"),
        (["train"], "expected key=value"),
    ],
)
def test_bad_specs_are_rejected_with_the_field_named(overrides, words):
    with pytest.raises(SpecError) as err:
        resolve_spec("digits-mlp", overrides)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_every_named_setup_is_valid_and_default_exists():
    names = setup_names()
    assert "fashion-mnist-mlp" in names and "digits-mlp" in names
    for n in names:
        assert validate_spec(load_setup_raw(n)).name == n
    assert resolve_spec(None).name == "fashion-mnist-mlp"
    assert resolve_spec(None).n_models() == 131


def test_overrides_parse_yaml_values_and_files_can_extend_a_setup(tmp_path):
    raw = apply_overrides({"train": {"epochs": 1}}, ["train.epochs=3", "protocol.alphas=[0.2,0.4]", "data.name=digits"])
    assert raw == {"train": {"epochs": 3}, "protocol": {"alphas": [0.2, 0.4]}, "data": {"name": "digits"}}
    p = tmp_path / "my.yaml"
    p.write_text(yaml.safe_dump({"setup": "digits-mlp", "name": "mine", "train": {"epochs": 2}}))
    s = resolve_spec(str(p), ["protocol.seeds=4"])
    assert (s.name, s.data.name, s.train.epochs, s.protocol.seeds, s.train.batch_size) == ("mine", "digits", 2, 4, 64)


@pytest.mark.slow  # six fresh `python -m kdaudit.cli` processes
def test_cli_bad_inputs_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    cases = [
        ["run", "digits-mlp", "--set", "train.epochs=0"],
        ["run", "digits-mlp", "--set", "protocol.alphas=[2]"],
        ["run", "no-such-setup"],
        ["run", str(tmp_path / "missing.yaml")],
        ["run", str(bad)],
        ["report", str(tmp_path)],
    ]
    for args in cases:
        r = kdaudit(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kdaudit: error:"), (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "kdaudit-out").exists()  # nothing written before validation


def test_cli_unwritable_output_dir(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    r = kdaudit("run", "digits-mlp", "--out", str(target / "sub"), "--quiet", cwd=tmp_path)
    assert r.returncode == 2 and "cannot create output directory" in r.stderr


def test_cli_setups_lists_every_setup():
    r = kdaudit("setups")
    assert r.returncode == 0
    for n in setup_names():
        assert n in r.stdout


def test_the_cli_exits_with_the_exit_code_of_the_error(monkeypatch, capsys):
    from kdaudit.cli import main as cli
    from kdaudit.errors import KdauditError

    class Unusual(KdauditError):
        exit_code = 3

    def boom(*args, **kwargs):
        raise Unusual("the problem\n  in two lines")

    cli._register_commands()
    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(SystemExit) as exc:
        cli.main(["setups"])
    assert exc.value.code == 3
    assert capsys.readouterr().err == "kdaudit: error: the problem in two lines\n"
    assert SpecError("x").exit_code == 2
