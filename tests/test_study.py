"""``kdaudit study``: several setups, one store, one study report; --set per setup; failures reported;
the time estimate and the ETA; the study's rows against each audit's own tables."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers import assert_one_line_error, run_cli
from kdaudit.errors import SpecError
from kdaudit.study import Study, StudyEntry, is_study_dir, measured_seconds, read_index, read_study_file, resolve_study

# Two setups of two modalities, tiny: 3 seeds (the command), one α, three conditions,
# one epoch, 60 words per language: 1 + 3 × 3 = 10 models each.
TINY_STUDY = [
    "--set",
    "protocol.seeds=3",
    "--set",
    "protocol.alphas=[0.5]",
    "--set",
    "protocol.conditions=[siddo,kd,rcd-uniform]",
    "--set",
    "train.epochs=1",
    "--set",
    "train.threads=1",
    "--set",
    "digits-mlp:model.kwargs.hidden=[16]",
    "--set",
    "word-language-lstm:data.options.per_class=60",
]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    from kdaudit.cli.main import main

    out = tmp_path_factory.mktemp("study") / "s"
    try:
        main(["study", "digits-mlp", "word-language-lstm", *TINY_STUDY, "--out", str(out), "--quiet"])
    except SystemExit as exc:
        assert not exc.code
    return out


def test_study_writes_every_file_with_both_setups(study_dir: Path) -> None:
    for name in ("study.html", "study.md", "study.csv", "pooled.csv", "study.json", "study_index.json"):
        assert (study_dir / name).is_file(), name
    assert (study_dir / "jobs").is_dir()  # one store for both setups
    assert not (study_dir / "digits-mlp" / "jobs").exists()
    rows = pd.read_csv(study_dir / "study.csv")
    assert sorted(rows["setup"]) == ["digits-mlp", "word-language-lstm"]
    assert set(rows["modality"]) == {"image", "text"}
    assert (rows["n_seeds"] == 3).all()
    figures = list(study_dir.glob("**/forest_delta.png"))
    assert figures and figures[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (study_dir / "study.md").read_text()
    assert "digits-mlp" in md and "word-language-lstm" in md and "forest_delta.png" in md
    index = read_index(study_dir)
    assert [s["status"] for s in index["setups"]] == ["done", "done"]
    assert index["wall_time_s"] > 0 and index["setups"][0]["wall_time_s"] > 0
    assert index["command"] is None  # run in-process: this argv is pytest's, not a kdaudit command line
    assert index["machine"].endswith(f"{os.cpu_count()} cores") and index["torch"]
    assert is_study_dir(study_dir)


def test_study_rows_equal_each_audits_own_tables(study_dir: Path) -> None:
    rows = pd.read_csv(study_dir / "study.csv").set_index("setup")
    for setup in ("digits-mlp", "word-language-lstm"):
        audit = study_dir / setup
        transfer = pd.read_csv(audit / "transfer.csv").set_index("condition").loc["kd"]
        r = rows.loc[setup]
        for q in ("delta_pos", "delta_neg", "h_pos", "h_neg"):
            assert r[q] == pytest.approx(transfer[q], abs=1e-12, nan_ok=True), (setup, q)
        # the standard error by hand: Welch's, from the students' per-seed agreements
        runs = pd.read_csv(audit / "runs.csv")
        kd = runs.loc[runs.condition == "kd", "agreement_teacher_wrong"].to_numpy(float)
        ctrl = runs.loc[runs.condition == "siddo", "agreement_teacher_wrong"].to_numpy(float)
        se = math.sqrt(np.var(kd, ddof=1) / len(kd) + np.var(ctrl, ddof=1) / len(ctrl))
        assert r["delta_neg_se"] == pytest.approx(se, rel=1e-12)
        # the 95 % interval: t on Welch's degrees of freedom (scipy's own), times the SE
        df = stats.ttest_ind(kd, ctrl, equal_var=False).df
        assert r["delta_neg_ci_high"] - r["delta_neg"] == pytest.approx(stats.t.ppf(0.975, df) * se, rel=1e-9)
        verdicts = json.loads((audit / "audit.json").read_text())["verdicts"]
        kd_v = next(v for v in verdicts if v["condition"] == "kd")
        assert r["knowledge_transfer"] == kd_v["knowledge_transfer"]
        meta = json.loads((audit / "audit.json").read_text())["meta"]
        assert r["n_teacher_wrong"] == meta["n_teacher_wrong"]


def test_study_resumes_from_its_store_and_report_rereads(study_dir: Path, capsys) -> None:
    code, out, err = run_cli(
        ["study", "digits-mlp", "word-language-lstm", *TINY_STUDY, "--out", str(study_dir), "--quiet"], capsys
    )
    assert code == 0, err
    index = read_index(study_dir)
    assert [s["trained_now"] for s in index["setups"]] == [0, 0]  # everything read from the store
    # `kdaudit report` rewrites the study report from the audits, keeping the run's wall time
    (study_dir / "study.md").unlink()
    code, out, err = run_cli(["report", str(study_dir)], capsys)
    assert code == 0, err
    assert (study_dir / "study.md").is_file()
    assert json.loads((study_dir / "study.json").read_text())["meta"]["wall_time_s"] == index["wall_time_s"]


def test_a_failing_setup_is_reported_and_the_others_go_on(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s"
    code, stdout, err = run_cli(
        [
            "study",
            "cifar10-fast",
            "digits-mlp",
            *TINY_STUDY[:10],
            "--set",
            "digits-mlp:model.kwargs.hidden=[8]",
            "--set",
            f"cifar10-fast:data.data_dir={tmp_path / 'no-cifar'}",
            "--out",
            str(out),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0, err
    index = read_index(out)
    status = {s["setup"]: s for s in index["setups"]}
    assert status["cifar10-fast"]["status"] == "failed" and "does not exist" in status["cifar10-fast"]["error"]
    assert status["digits-mlp"]["status"] == "done"
    assert "cifar10-fast" in stdout and "failed" in stdout
    report = json.loads((out / "study.json").read_text())
    assert [f["setup"] for f in report["failed"]] == ["cifar10-fast"]
    assert list(pd.read_csv(out / "study.csv")["setup"]) == ["digits-mlp"]
    assert "no-cifar does not exist" in (out / "study.html").read_text()


def test_set_applies_where_the_field_exists() -> None:
    study = resolve_study(["digits-mlp", "word-language-lstm"], None, ["model.kwargs.embed=16", "protocol.seeds=4"])
    by = {e.name: e for e in study.entries}
    assert by["word-language-lstm"].spec.model.kwargs["embed"] == 16
    assert "embed" not in by["digits-mlp"].spec.model.kwargs  # the MLP takes no embedding size
    assert by["digits-mlp"].not_applied == ["model.kwargs.embed=16"]
    assert by["word-language-lstm"].not_applied == []
    assert all(e.spec.protocol.seeds == 4 for e in study.entries)
    one = resolve_study(["digits-mlp", "word-language-lstm"], None, ["digits-mlp:train.epochs=2"])
    assert [e.spec.train.epochs for e in one.entries] == [2, 3]
    assert resolve_study(["all"]).entries[0].name == "cifar10-fast"  # every setup, sorted
    # a field of an optional section that is unset (protocol.hint is None) exists in every setup
    hinted = resolve_study(["digits-mlp"], None, ["protocol.hint.weight=0.5", "protocol.hint.student_layer=net.0"])
    assert hinted.entries[0].spec.protocol.hint.weight == 0.5


@pytest.mark.parametrize(
    ("setups", "sets", "needle"),
    [
        (["digits-mlp", "no-such-setup"], [], "unknown setup 'no-such-setup'"),
        (["digits-mlp"], ["protocol.seedz=3"], "seeds"),  # the closest key
        (["digits-mlp"], ["mnist-lenet5:train.epochs=2"], "not a setup of this study"),
        (["digits-mlp"], ["protocol.seeds=0"], "setup digits-mlp"),
        (["digits-mlp"], ["train.lr=[0.1,0.2]"], "sweeps"),
        (["digits-mlp"], ["train.epochs"], "expected key=value"),
    ],
)
def test_bad_study_inputs_fail_before_training(setups, sets, needle, capsys, tmp_path) -> None:
    with pytest.raises(SpecError) as info:
        resolve_study(setups, None, sets)
    assert needle in str(info.value)
    args = ["study", *setups, *[a for s in sets for a in ("--set", s)], "--out", str(tmp_path / "s")]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "s").exists()


def test_study_file(tmp_path: Path) -> None:
    f = tmp_path / "study.yaml"
    f.write_text("study:\n  setups: [digits-mlp]\n  set: ['protocol.seeds=3']\n  out: here\n")
    assert read_study_file(f) == {"setups": ["digits-mlp"], "preset": None, "set": ["protocol.seeds=3"], "out": "here"}
    f.write_text("study:\n  setup: [digits-mlp]\n")
    with pytest.raises(SpecError, match="study.setup: unknown field"):
        read_study_file(f)
    f.write_text("name: x\n")
    with pytest.raises(SpecError, match="expected a `study:` section"):
        read_study_file(f)


def test_measured_seconds_and_the_estimate() -> None:
    raw = {"measured": {"cpu": {"time": "6.7 min", "models": 101}}}
    assert measured_seconds(raw, "cpu", 101) == pytest.approx(402.0)
    assert measured_seconds(raw, None, 51) == pytest.approx(402.0 * 51 / 101)
    assert measured_seconds({"measured": {"cpu": {"time": "89 s"}}}, "cpu", 131) == pytest.approx(89.0)
    assert measured_seconds(raw, "paper", 101) is None
    assert measured_seconds({}, "cpu", 10) is None

    class Spec:
        def __init__(self, n: int) -> None:
            self.n = n

        def n_models(self) -> int:
            return self.n

    entries = [StudyEntry("a", Spec(10), [], 100.0), StudyEntry("b", Spec(30), [], 60.0), StudyEntry("c", Spec(20))]  # type: ignore[arg-type]
    # c has no measured time: the others' 160 s over 40 models, 4 s per model
    assert Study(entries).estimate_s == pytest.approx(100.0 + 60.0 + 20 * 4.0)
    assert Study([StudyEntry("c", Spec(20))]).estimate_s is None  # type: ignore[arg-type]


def test_study_clock_eta_by_hand() -> None:
    from kdaudit.cli.study_cmds import StudyClock

    clock = StudyClock([2.0, 10.0], [3, 2])  # 2 s per model in setup 0, 10 s in setup 1
    assert clock.eta() == pytest.approx(3 * 2.0 + 2 * 10.0)  # before anything: the estimate
    clock.t0 = 100.0
    clock.finished(0, 104.0)  # the first model took 4 s where 2 s were estimated: twice as slow
    assert clock.eta() == pytest.approx((2 * 2.0 + 2 * 10.0) * 2.0)
    clock.skip(1, 1)  # one model of setup 1 already in the store
    assert clock.eta() == pytest.approx((2 * 2.0 + 1 * 10.0) * 2.0)
    clock.drop(0)
    assert clock.eta() == pytest.approx(10.0 * 2.0)


def test_the_docs_results_section_is_regenerated_from_study_md(study_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "results_table.py"
    doc = tmp_path / "results.md"
    doc.write_text("# Measured audits\n\nHand-written text that stays.\n")

    def run(*extra: str) -> subprocess.CompletedProcess:
        args = [sys.executable, str(script), str(study_dir), "--doc", str(doc), *extra]
        return subprocess.run(args, capture_output=True, text=True, timeout=120)

    assert run("--check").returncode == 1  # no study section yet
    assert run().returncode == 0
    text = doc.read_text()
    md = (study_dir / "study.md").read_text()
    block = md.split("<!-- study-table:begin -->")[1].split("<!-- study-table:end -->")[0].strip()
    import re

    block = re.sub(r"\[([^\]]*)\]\([^)]*report\.html\)", r"\1", block)
    demoted = "\n".join("#" + x if x.startswith("#") else x for x in block.split("\n"))
    assert demoted in text and "Hand-written text that stays." in text
    assert "\n### Setups\n" in text and "\n## Setups\n" not in text
    assert "report.html" not in text and "| digits-mlp |" in text
    assert "(assets/study/forest_delta.png)" in text and (tmp_path / "assets" / "study" / "forest_delta.png").is_file()
    assert run("--check").returncode == 0  # up to date
    assert run().returncode == 0 and doc.read_text() == text  # idempotent: the section is replaced, not added


def test_an_unexpected_error_keeps_its_traceback_and_the_study_goes_on(tmp_path: Path, monkeypatch) -> None:
    import kdaudit.audit
    from kdaudit.study import run_study

    real = kdaudit.audit.run_audit

    def flaky(spec, out_dir, progress=None):
        if spec.name == "digits-mlp":
            raise RuntimeError("CUDA error: an illegal memory access")
        return real(spec, out_dir, progress)

    monkeypatch.setattr(kdaudit.audit, "run_audit", flaky)
    sets = ["protocol.seeds=2", "protocol.alphas=[0.5]", "protocol.conditions=[siddo,kd]", "train.epochs=1"]
    study = resolve_study(["digits-mlp", "fashion-mnist-mlp"], None, [*sets, "fashion-mnist-mlp:data.train_subset=500"])
    outcome = run_study(study, tmp_path / "s")
    rows = {r["setup"]: r for r in outcome.index["setups"]}
    assert rows["digits-mlp"]["status"] == "failed"
    assert rows["digits-mlp"]["error"] == "RuntimeError: CUDA error: an illegal memory access"
    trace = (tmp_path / "s" / rows["digits-mlp"]["traceback"]).read_text()
    assert "Traceback" in trace and "flaky" in trace
    assert rows["fashion-mnist-mlp"]["status"] == "done"
    assert list(outcome.tables.failed["setup"]) == ["digits-mlp"]
    assert list(outcome.tables.rows["setup"]) == ["fashion-mnist-mlp"]


def test_study_sentences_count_the_verdicts_by_modality() -> None:
    from kdaudit.analysis.study import STUDY_COLUMNS, pooled_table, study_sentences

    verdicts = [  # setup, modality, transfer, negative transfer, asymmetry, payoff
        ("a", "image", "yes", "yes", "yes", "yes"),
        ("b", "image", "yes", "yes", "no", "no"),
        ("c", "audio", "no", "yes", "no", "no"),
        ("d", "text", "not testable", "not testable", "not testable", "not testable"),
        ("e", "text", "yes", "no", "not testable", "not testable"),
    ]
    rows = pd.DataFrame(
        [
            {
                "setup": s,
                "modality": m,
                "condition": "kd",
                "alpha": 0.5,
                "knowledge_transfer": t,
                "negative_transfer": n,
                "asymmetry": a,
                "negative_asymmetric_payoff": p,
                **{
                    f"{q}{suffix}": 0.1 + 0.01 * i
                    for q in ("delta_pos", "delta_neg", "h_pos", "h_neg")
                    for suffix in ("",)
                },
                **{f"{q}_se": 0.02 for q in ("delta_pos", "delta_neg", "h_pos", "h_neg")},
            }
            for i, (s, m, t, n, a, p) in enumerate(verdicts)
        ],
        columns=STUDY_COLUMNS,
    )
    failed = pd.DataFrame([("z", "boom")], columns=["setup", "error"])
    text = "\n".join(study_sentences(rows, pooled_table(rows), failed))
    assert "significant in 3 of 5 setups (audio 0/1, image 2/2, text 1/2); not testable in 1." in text
    assert "is significant in 3 of 5 setups (not testable in 1); asymmetry (" in text
    assert "in 1 of 5 (not testable in 2)." in text
    assert "negative asymmetric payoff in 1 of the 3 setups where transfer is significant (not testable in 1)." in text
    assert "pooled over 5 setups" in text and "1 setup(s) did not finish and are not counted: z." in text
    assert study_sentences(rows.iloc[0:0], pooled_table(rows.iloc[0:0]), failed)[0].startswith("No setup finished")


def test_an_interrupted_study_propagates_and_resumes(tmp_path: Path, monkeypatch) -> None:
    import kdaudit.audit
    from kdaudit.study import analyse_study, run_study

    real = kdaudit.audit.run_audit
    calls: list[str] = []

    def interrupted(spec, out_dir, progress=None):
        calls.append(spec.name)
        if spec.name == "fashion-mnist-mlp":
            raise KeyboardInterrupt
        return real(spec, out_dir, progress)

    sets = ["protocol.seeds=2", "protocol.alphas=[0.5]", "protocol.conditions=[siddo,kd]", "train.epochs=1"]
    study = resolve_study(["digits-mlp", "fashion-mnist-mlp"], None, [*sets, "fashion-mnist-mlp:data.train_subset=500"])
    monkeypatch.setattr(kdaudit.audit, "run_audit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "s")
    assert [r["status"] for r in read_index(tmp_path / "s")["setups"]] == ["done", "pending"]
    half = analyse_study(tmp_path / "s")  # what finished is reported; the rest is "not run"
    assert list(half.tables.rows["setup"]) == ["digits-mlp"]
    assert list(half.tables.failed["error"]) == ["not run (pending)"]
    monkeypatch.setattr(kdaudit.audit, "run_audit", real)
    done = run_study(study, tmp_path / "s")
    assert [r["trained_now"] for r in done.index["setups"]] == [0, 5]  # digits read from the store
    assert sorted(done.tables.rows["setup"]) == ["digits-mlp", "fashion-mnist-mlp"]
    # a setup the last invocation did not reach still counts if its audit directory is complete
    index = read_index(tmp_path / "s")
    for row in index["setups"]:
        row["status"] = "pending"
    (tmp_path / "s" / "study_index.json").write_text(json.dumps(index))
    assert len(analyse_study(tmp_path / "s").tables.rows) == 2


def test_set_with_a_list_applies_where_the_field_takes_a_list() -> None:
    study = resolve_study(["digits-mlp", "word-language-lstm"], None, ["model.kwargs.hidden=[64]"])
    by = {e.name: e for e in study.entries}
    assert by["digits-mlp"].spec.model.kwargs["hidden"] == [64]  # the MLP's layer widths
    assert by["word-language-lstm"].spec.model.kwargs["hidden"] == 64  # the LSTM's size is one number
    assert by["word-language-lstm"].not_applied == ["model.kwargs.hidden=[64]"]
    single = resolve_study(["digits-mlp", "word-language-lstm"], None, ["model.kwargs.hidden=32"])
    assert {e.name: e.not_applied for e in single.entries} == {
        "digits-mlp": ["model.kwargs.hidden=32"],
        "word-language-lstm": [],
    }


def test_the_study_progress_shows_setups_and_their_outcome(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from kdaudit.cli.study_cmds import StudyRichProgress
    from kdaudit.study import run_study

    sets = ["protocol.seeds=2", "protocol.alphas=[0.5]", "protocol.conditions=[siddo,kd]", "train.epochs=1"]
    study = resolve_study(["digits-mlp", "cifar10-fast"], None, [*sets, f"cifar10-fast:data.data_dir={tmp_path}/none"])
    buffer = io.StringIO()
    with StudyRichProgress(Console(file=buffer, width=200), study) as progress:
        run_study(study, tmp_path / "s", progress)
    text = buffer.getvalue()
    assert "Setup 1/2 digits-mlp: done" in text
    assert "Setup 2/2 cifar10-fast: failed: CIFAR-10" in text
    assert progress.done_models == study.n_models  # the failed setup's models count as ended
