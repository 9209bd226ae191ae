"""``kdaudit compare --out DIR`` writes an audit's outputs; ``kdaudit report DIR`` keeps the run's facts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from helpers import TINY_ONE_ALPHA, kdaudit_here, run_cli
from helpers import assert_one_line_error as one_line_error
from kdaudit.analysis.catalogue import runs_columns

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "logits"
VERDICT_KEYS = ("knowledge_transfer", "beyond_regularisation", "negative_transfer", "asymmetry")


def compare_args(*extra: str) -> list[str]:
    if not (EXAMPLE / "teacher.npy").exists():
        pytest.skip("examples/logits not generated")
    return [
        "compare",
        "--teacher",
        str(EXAMPLE / "teacher.npy"),
        "--labels",
        str(EXAMPLE / "labels.npy"),
        "--control",
        str(EXAMPLE / "siddo" / "*.npy"),
        "--group",
        f"kd={EXAMPLE / 'kd' / '*.npy'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def rcd_glob() -> str:
    """Three of the control students again, as a random control named without the rcd prefix."""
    return f"noise={EXAMPLE / 'siddo' / 's[1-3].npy'}"


def test_compare_out_writes_an_audit_with_the_verdicts_of_compare_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rcd_glob: str
) -> None:
    code, out, err = run_cli(compare_args("--rcd", rcd_glob, "--json"), capsys)
    assert code == 0, err
    printed = json.loads(out)
    code, out, err = run_cli(compare_args("--rcd", rcd_glob, "--out", str(tmp_path / "cmp")), capsys)
    assert code == 0, err
    d = tmp_path / "cmp"
    assert f"Report: {d / 'report.html'}" in out
    for name in ("report.html", "report.md", "tests.csv", "transfer.csv", "summary.csv", "runs.csv", "audit.json"):
        assert (d / name).is_file(), name
    assert (d / "copied.csv").is_file()
    assert list((d / "figures").glob("*.png"))
    audit = json.loads((d / "audit.json").read_text())
    assert audit["kind"] == "compare" and audit["meta"]["n_teacher_wrong"] > 0
    assert audit["inputs"]["students"]["rcd-noise"] == sorted(str(p) for p in (EXAMPLE / "siddo").glob("s[1-3].npy"))
    (v,) = audit["verdicts"]
    g = printed["groups"][v["condition"]]
    assert g["verdicts"] == {k: v[k] for k in g["verdicts"]}
    assert g["reasons"] == {k: v["reasons"][k] for k in g["reasons"]}
    assert v["alpha"] is None and all(s.startswith("At α = n/a,") for s in v["sentences"])
    assert v["tests"]["H2"]["comparison"] == "vs_rcd-noise"
    assert g["beyond_regularisation"]["hardest_control"] == "noise"
    assert audit["statistics"]["primary_family_size"] == printed["statistics"]["primary_family_size"] == 4

    runs = pd.read_csv(d / "runs.csv")
    assert list(runs.columns) == runs_columns()
    assert runs["condition"].value_counts().to_dict() == {"siddo": 6, "kd": 6, "rcd-noise": 3, "teacher": 1}
    assert runs.loc[runs.condition == "kd", "run_id"].tolist() == sorted(str(p) for p in (EXAMPLE / "kd").glob("*.npy"))
    assert runs.loc[runs.condition == "kd", "alpha"].isna().all()
    tests = pd.read_csv(d / "tests.csv")
    primary = tests.loc[tests.family == "primary"].set_index("hypothesis")
    assert sorted(primary.index) == ["H1", "H2", "H3", "H4"]
    assert primary.loc["H2", "comparison"] == "vs_rcd-noise"
    assert primary.loc["H1", "p_value"] == pytest.approx(g["metrics"]["agreement"]["p_value"])
    assert set(tests.comparison) == {"vs_siddo", "vs_rcd-noise"}
    transfer = pd.read_csv(d / "transfer.csv").set_index("condition")
    assert transfer.loc["rcd-noise", "negative_transfer"] == "control"
    assert transfer.loc["kd", "delta_neg"] == pytest.approx(g["transfer"]["delta_neg"])
    summary = pd.read_csv(d / "summary.csv")
    assert summary["condition"].tolist() == ["siddo", "kd", "rcd-noise"]
    html = (d / "report.html").read_text()
    assert "Verdicts" in html and "rcd-noise" in html

    # a second run into the same directory rewrites it
    code, _, err = run_cli(compare_args("--out", str(d), "--json"), capsys)
    assert code == 0, err
    assert json.loads((d / "audit.json").read_text())["statistics"]["primary_family_size"] == 3


def test_compare_out_refuses_a_file_or_a_foreign_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    code, out, err = run_cli(compare_args("--out", str(a_file)), capsys)
    assert out == ""
    one_line_error(code, err, "--out", "is a file")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, out, err = run_cli(compare_args("--out", str(foreign)), capsys)
    assert out == ""
    one_line_error(code, err, "--out", "non-empty", "kdaudit compare")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    (foreign / "notes.txt").unlink()
    (foreign / "audit.json").write_text(json.dumps({"meta": {}, "verdicts": []}))  # an audit's, not a compare's
    code, _, err = run_cli(compare_args("--out", str(foreign)), capsys)
    one_line_error(code, err, "non-empty")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(compare_args("--out", str(empty), "--json"), capsys)
    assert code == 0, err
    assert (empty / "report.html").is_file()


def test_compare_out_refuses_a_group_named_like_a_control(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = compare_args("--group", f"rcd-x={EXAMPLE / 'kd' / '*.npy'}", "--out", str(tmp_path / "o"))
    code, out, err = run_cli(args, capsys)
    assert out == ""
    one_line_error(code, err, "'rcd-x'", "--rcd")
    assert not (tmp_path / "o").exists()


def test_random_controls_that_would_share_a_condition_are_refused(
    capsys: pytest.CaptureFixture[str], rcd_glob: str
) -> None:
    code, out, err = run_cli(compare_args("--rcd", rcd_glob, "--rcd", f"rcd-noise={EXAMPLE}/kd/s[12].npy"), capsys)
    one_line_error(code, err, "'noise'", "'rcd-noise'")


@pytest.mark.slow
def test_report_keeps_the_facts_of_the_run(tmp_path: Path) -> None:
    import torch

    from kdaudit.audit import run_audit
    from kdaudit.config.loader import resolve_spec

    out = tmp_path / "tiny"
    threads = torch.get_num_threads()
    try:
        run_audit(resolve_spec("digits-mlp", TINY_ONE_ALPHA), out)
    finally:
        torch.set_num_threads(threads)
    before = json.loads((out / "audit.json").read_text())
    facts = {k: before["meta"][k] for k in ("created", "wall_time_s", "trained_now", "reused", "kdaudit_version")}
    assert facts["trained_now"] > 0 and facts["reused"] == 0 and math.isfinite(facts["wall_time_s"])
    assert "execution" in before["meta"]
    (out / "report.html").unlink()
    assert kdaudit_here("report", str(out)) == 0
    after = json.loads((out / "audit.json").read_text())
    assert {k: after["meta"].get(k) for k in facts} == facts
    assert after["meta"]["execution"] == before["meta"]["execution"]
    assert after["meta"]["reanalysed"]
    for key in ("teacher_accuracy", "n_teacher_wrong", "n_models", "train_seconds_total"):
        assert after["meta"][key] == before["meta"][key], key
    assert after["statistics"] == before["statistics"]
    assert [v["condition"] for v in after["verdicts"]] == [v["condition"] for v in before["verdicts"]]
    assert [v["knowledge_transfer"] for v in after["verdicts"]] == [v["knowledge_transfer"] for v in before["verdicts"]]
    report = (out / "report.md").read_text()
    assert "Wall time" in report and "Re-analysed" in report
