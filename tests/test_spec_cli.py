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


def _allowed(section) -> str:
    return ", ".join(section.model_fields)


def _did_you_mean_cases():
    from kdaudit.config.schema import CONDITIONS, ProtocolSpec, TrainSpec

    conditions = ", ".join(CONDITIONS)
    return [
        (
            "protocol.seed=3",
            f"spec: protocol.seed: unknown key; allowed: {_allowed(ProtocolSpec)}; did you mean 'protocol.seeds'?",
        ),
        (
            "train.epoch=2",
            f"spec: train.epoch: unknown key; allowed: {_allowed(TrainSpec)}; did you mean 'train.epochs'?",
        ),
        (
            "model.kwargs.hiden=64",
            "model.kwargs: unknown option(s) hiden for model 'mlp'; allowed: hidden, dropout, width; "
            "did you mean 'hidden'?",
        ),
        (
            "protocol.conditions=[siddo,rcd-unifrom]",
            f"spec: protocol.conditions: unknown value 'rcd-unifrom'; allowed: {conditions}; "
            "did you mean 'rcd-uniform'?",
        ),
        (
            "train.optimizer=adamm",
            "spec: train.optimizer: unknown value 'adamm'; allowed: sgd, adam, adamw; did you mean 'adam'?",
        ),
        ("protocol.kd_loss=kll", "spec: protocol.kd_loss: unknown value 'kll'; allowed: ce, kl; did you mean 'kl'?"),
    ]


@pytest.mark.parametrize("override, message", _did_you_mean_cases(), ids=lambda v: v if "=" in v else "")
def test_a_misspelt_key_or_value_gets_the_closest_allowed_one(override, message, tmp_path, capsys):
    from helpers import kdaudit_here

    out = tmp_path / "audit"
    assert kdaudit_here("run", "digits-mlp", "--quiet", "--out", str(out), "--set", override) == 2
    assert capsys.readouterr().err == f"kdaudit: error: {message}\n"
    assert not (out / "jobs").exists()  # nothing trained


def test_a_misspelt_key_in_a_yaml_spec_file_gets_the_closest_allowed_one(tmp_path, capsys):
    from helpers import kdaudit_here
    from kdaudit.config.schema import AuditSpec, HintSpec

    cases = {
        "trian: {epochs: 1}\n": f"spec: trian: unknown key; allowed: {_allowed(AuditSpec)}; did you mean 'train'?",
        "train: {schedule: cosin}\n": "spec: train.schedule: unknown value 'cosin'; allowed: constant, cosine, step; "
        "did you mean 'cosine'?",
        # the misspelt key is named, not the field it meant and so left out
        "protocol:\n  hint: {weight: 1.0, student_layr: features.2}\n": "spec: protocol.hint.student_layr: unknown "
        f"key; allowed: {_allowed(HintSpec)}; did you mean 'protocol.hint.student_layer'? (+1 more)",
    }
    for i, (body, message) in enumerate(cases.items()):
        spec = tmp_path / f"spec{i}.yaml"
        spec.write_text("setup: digits-mlp\n" + body)
        assert kdaudit_here("run", str(spec), "--quiet", "--out", str(tmp_path / "audit")) == 2, body
        assert capsys.readouterr().err == f"kdaudit: error: {message}\n", body
    assert not (tmp_path / "audit").exists()


def test_no_close_match_no_guess():
    with pytest.raises(SpecError) as err:
        resolve_spec("digits-mlp", ["protocol.conditions=[kd, distill]", "train.zzz=1"])
    assert "did you mean" not in str(err.value) and "train.zzz: unknown key" in str(err.value)
    with pytest.raises(SpecError) as err:
        resolve_spec("digits-mlp", ["protocol.conditions=[kd, distill]"])
    assert str(err.value).startswith("spec: protocol.conditions: unknown value 'distill'; allowed: siddo, kd")
    assert "did you mean" not in str(err.value)


@pytest.mark.parametrize("command", ["", "run", "report", "compare", "metrics", "setups"])
def test_every_help_names_values_in_words_not_types(command, capsys):
    from helpers import kdaudit_here

    assert kdaudit_here(*([command] if command else []), "--help") == 0
    text = capsys.readouterr().out
    assert "Usage: kdaudit" in text
    for typed in ("<bool>", "<str>", "<path>", "<int", "<float>", "<list"):
        assert typed not in text, (command, typed)
    words = {
        "run": ["[SETUP|FILE]", "--set              KEY=VALUE", "cpu|paper", "DIR", "ADDRESS", "local|dask", "[URI]"],
        "report": ["{DIR}"],
        "compare": ["NUMBER", "holm|bh|none"],
    }
    for word in words.get(command, []):
        assert word in text, (command, word)
    # a flag has no value: nothing between its name and its help
    assert any(line.split()[1:3] == ["--help", "Show"] for line in text.splitlines() if "--help" in line)


def test_setups_lists_modality_dataset_models_and_measured_time(capsys):
    from helpers import kdaudit_here
    from kdaudit.cli.run_cmds import measured_time, setup_row

    assert kdaudit_here("setups") == 0
    stdout = capsys.readouterr().out
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in stdout.splitlines()
        if line.startswith("│")
    }
    assert rows["fashion-mnist-mlp (default)"] == ["image", "fashion-mnist", "mlp", "131", "89 s", "cpu, paper"]
    assert rows["spoken-digits-m5"] == ["audio", "spoken-digits", "m5", "131", "11.1 min (101)", "cpu, paper"]
    assert set(rows) == {n + (" (default)" if n == "fashion-mnist-mlp" else "") for n in setup_names()}
    assert "Self-distillation on Fashion-MNIST" not in stdout  # the descriptions: --long
    assert max(len(line) for line in stdout.splitlines()) <= 120
    assert kdaudit_here("setups", "--long") == 0
    assert "Self-distillation on Fashion-MNIST" in " ".join(capsys.readouterr().out.split())
    # no measurement, no guess
    assert measured_time({}, "cpu", 131) == "—"
    assert measured_time({"measured": {"cpu": {"time": "2 min", "models": 131}}}, "paper", 131) == "—"
    assert measured_time({"measured": {"cpu": {"time": "2 min", "models": 131}}}, "cpu", 131) == "2 min"
    assert setup_row("digits-mlp")[:5] == ["digits-mlp", "image", "digits", "mlp", "131"]


def test_standard_distillation_names_teacher_and_students(monkeypatch):
    from kdaudit.cli import run_cmds
    from kdaudit.config import loader

    raw = loader.load_setup_raw("digits-mlp")
    monkeypatch.setattr(loader, "load_setup_raw", lambda name, preset=None: {**raw, "student": {"name": "small-cnn"}})
    assert run_cmds.setup_row("digits-mlp")[3] == "mlp → small-cnn"


@pytest.mark.parametrize(
    "conditions, words",
    [
        (
            "[kd,rcd-uniform]",
            "there are no SIDDO students, so knowledge transfer, negative transfer, asymmetry, the "
            "negative asymmetric payoff (and beyond regularisation, which needs transfer) are not testable.",
        ),
        ("[siddo,kd]", "there are no random-control (RCD) students, so beyond regularisation is not testable."),
    ],
    ids=["no-siddo", "no-rcd"],
)
def test_run_warns_before_training_which_verdicts_cannot_be_given(conditions, words, tmp_path):
    from helpers import cli_env, records

    # the process is killed in the first epoch of the first model it trains
    out = tmp_path / "audit"
    sets = [
        "protocol.seeds=2",
        "train.epochs=1",
        "model.kwargs.hidden=[16]",
        "protocol.alphas=[0.5]",
        "train.threads=1",
        f"protocol.conditions={conditions}",
    ]
    r = kdaudit(
        "run",
        "digits-mlp",
        "--quiet",
        "--workers",
        "1",
        "--out",
        str(out),
        *[a for s in sets for a in ("--set", s)],
        env=cli_env(KDAUDIT_FAILPOINT="train.epoch:1"),
    )
    assert r.returncode != 0
    assert f"Note: {words}" in " ".join(r.stdout.split())
    assert [rec["run_id"] for rec in records(out).values()] == ["m0"]  # the initial weights, no trained model
