"""`kdaudit run` end to end on a tiny grid: outputs, reruns, interruption and `kdaudit report`."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from helpers import as_sets, kdaudit, records, tiny_grid
from kdaudit.analysis.audit import RUNS_COLUMNS, TESTS_COLUMNS, TRANSFER_COLUMNS

# Every test but one trains whole audits (27 models and more): the slow tier.
TINY = as_sets(tiny_grid())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "tiny"
    r = kdaudit("run", "digits-mlp", *TINY, "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    return out, r


@pytest.mark.slow
def test_tiny_run_writes_every_output_with_documented_columns(tiny_run):
    out, r = tiny_run
    for name in ("spec.yaml", "runs.csv", "tests.csv", "transfer.csv", "report.md", "report.html"):
        assert (out / name).is_file(), name
    assert list((out / "figures").glob("*.png"))
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns) == RUNS_COLUMNS
    assert len(runs) == 1 + 2 * (1 + 3 * 4)
    assert (runs.role == "teacher").sum() == 1
    assert set(runs.condition) == {"teacher", "siddo", "kd", "ls", "rcd-uniform", "rcd-gaussian"}
    students = runs[runs.role == "student"]
    assert students[["accuracy", "agreement", "js_divergence"]].notna().all().all()
    assert ((students.agreement >= 0) & (students.agreement <= 1)).all()
    assert (students.n_teacher_correct + students.n_teacher_wrong == 539).all()
    tests = pd.read_csv(out / "tests.csv")
    assert list(tests.columns) == TESTS_COLUMNS
    assert {"vs_siddo", "vs_rcd-uniform", "vs_rcd-gaussian"} <= set(tests.comparison)
    transfer = pd.read_csv(out / "transfer.csv")
    assert list(transfer.columns) == TRANSFER_COLUMNS
    assert len(transfer) == 3 * 4
    spec = (out / "spec.yaml").read_text()
    assert "versions:" in spec and "torch:" in spec and "seeds: 2" in spec
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    # stdout: summary table, verdicts per α and the report path
    assert "Verdicts" in r.stdout and "Report:" in r.stdout
    for alpha in ("0.1", "0.5", "0.9"):
        assert f"kd α={alpha}" in r.stdout
    # records carry seeds, checksums and versions
    rec = records(out)["kd-a0.5-s02"]
    assert rec["seed"] == 2 and rec["alpha"] == 0.5 and set(rec["checksums"]) == {"weights.safetensors", "outputs.npz"}
    assert rec["versions"]["torch"]


@pytest.mark.slow
def test_two_seeds_are_not_testable_everywhere_and_said_before_training(tiny_run):
    """2 seeds per group cannot give a "yes": the terminal says so before training, and the
    terminal, audit.json, the report and transfer.csv all say "not testable" with the seeds needed."""
    import json

    out, r = tiny_run
    note = r.stdout.index("Note: with 2 seed(s) per group")
    assert note < r.stdout.index("Verdicts")
    assert "6 seeds per group would make them testable" in r.stdout  # 2/C(12,6) × 12 = 0.026
    audit = json.loads((out / "audit.json").read_text())
    st = audit["statistics"]
    assert st["primary_family_size"] == 12 and st["correction"] == "holm" and st["standard"] == "kdaudit"
    keys = (
        "knowledge_transfer",
        "beyond_regularisation",
        "negative_transfer",
        "asymmetry",
        "negative_asymmetric_payoff",
    )
    for v in audit["verdicts"]:
        assert all(v[k] == "not testable" for k in keys)
        assert "6 seeds per group would make it testable" in v["reasons"]["knowledge_transfer"]
        line = next(x for x in r.stdout.splitlines() if f"kd α={v['alpha']:g}:" in x)
        assert "knowledge transfer not testable" in line.replace("  ", " ") or "not testable" in line
    md = (out / "report.md").read_text()
    assert "Note: with 2 seed(s) per group" in md and "Decided by kdaudit's standard: 12 primary tests" in md
    transfer = pd.read_csv(out / "transfer.csv")
    assert set(transfer.loc[transfer.condition == "kd", "negative_asymmetric_payoff"]) == {"not testable"}
    tests = pd.read_csv(out / "tests.csv")
    assert sorted(set(tests.family)) == ["primary", "secondary"]
    assert (tests.family == "primary").sum() == 3 * 6  # H1, H3, H4 and H2 against LS and both RCDs, per α


def test_teacher_seed_among_student_seeds_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "twin"
    r = kdaudit("run", "digits-mlp", *TINY, "--set", "protocol.teacher_seed=2", "--out", str(out))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "teacher_seed" in lines[0] and "twin" in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_rerun_trains_nothing_and_gives_the_same_tables(tiny_run):
    out, _ = tiny_run
    before = {k: v["created"] for k, v in records(out).items()}
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "jobs").glob("*/weights.safetensors")}
    runs_before = (out / "runs.csv").read_text()
    r = kdaudit("run", "digits-mlp", *TINY, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "27 of 27 models already finished; training 0" in r.stdout
    assert {k: v["created"] for k, v in records(out).items()} == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert (out / "runs.csv").read_text() == runs_before


@pytest.mark.slow
def test_report_reanalyses_without_training(tiny_run):
    out, _ = tiny_run
    runs_before = (out / "runs.csv").read_text()
    tests_before = (out / "tests.csv").read_text()
    (out / "report.html").unlink()
    r = kdaudit("report", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "report.html").exists()
    assert (out / "runs.csv").read_text() == runs_before
    assert (out / "tests.csv").read_text() == tests_before


@pytest.mark.slow
def test_a_killed_audit_resumes_and_ends_with_the_same_runs_csv(tmp_path):
    args = ["run", "digits-mlp", *as_sets(tiny_grid(25)), "--quiet"]
    ref = kdaudit(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdaudit.cli", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(records(out)) < 6:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = records(out)
    assert 6 <= len(done_before) < 28, "the kill must land mid-way"
    assert not (out / "runs.csv").exists()

    again = kdaudit(*args, "--out", str(out))
    assert again.returncode == 0, again.stderr
    after = records(out)
    assert len(after) == 28  # m0 + 27 models
    # finished jobs were not retrained
    assert all(after[k]["created"] == v["created"] for k, v in done_before.items())
    assert (out / "runs.csv").read_text() == (tmp_path / "ref" / "runs.csv").read_text()
    assert not list((out / "jobs").glob(".tmp-*"))


@pytest.mark.slow
@pytest.mark.browser
def test_real_report_opens_in_browser_with_verdicts_and_figures(tiny_run, tmp_path):
    from browser_check import check_in_browser, chromium_available

    if not chromium_available():
        pytest.skip("/usr/bin/chromium is not installed")
    out, _ = tiny_run
    html = (out / "report.html").read_text()
    assert html.index('id="verdicts"') < html.index("<table")
    assert "kd · α = 0.5" in html or "α = 0.5" in html
    check = check_in_browser(out / "report.html", tmp_path)
    assert check["verdicts_visible"] is True
    ids = {img_id for img_id, _, _ in check["images"]}
    figures = {f"fig-{p.stem.replace('.', '-')}" for p in (out / "figures").glob("*.png")}
    assert len(figures) >= 5 and figures <= ids, figures - ids  # every figure file is shown
    examples = list((out / "figures" / "examples").glob("*.png"))  # one file per copied sample
    assert examples and sum(i.startswith("ex-") for i in ids) >= len(examples)
    for img_id, complete, width in check["images"]:
        assert complete is True and width > 0, f"figure {img_id} did not load"


@pytest.mark.slow
def test_terminal_audit_json_report_and_compare_agree_on_every_verdict(tmp_path):
    """One small audit (1 α, 6 seeds): the verdicts printed, written to audit.json, transfer.csv and
    the report, and those `kdaudit compare` gives from the students' saved test logits are the same."""
    import json

    import numpy as np

    out = tmp_path / "agree"
    sets = ["protocol.seeds=6", "protocol.alphas=[0.9]", "train.epochs=2", "model.kwargs.hidden=[16]"]
    r = kdaudit("run", "digits-mlp", *as_sets(sets), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    (v,) = json.loads((out / "audit.json").read_text())["verdicts"]
    keys = (
        "knowledge_transfer",
        "beyond_regularisation",
        "negative_transfer",
        "asymmetry",
        "negative_asymmetric_payoff",
    )
    line = " ".join(x.strip() for x in r.stdout.splitlines() if "kd α=0.9:" in x or "payoff" in x)
    printed = {k: line.split(k.replace("_", " ") + " ", 1)[1].split(",")[0].strip() for k in keys}
    assert printed == {k: v[k] for k in keys}
    md = (out / "report.md").read_text()
    row = md.split("### kd · α = 0.9", 1)[1].split("\n")[4]
    assert [c.strip().strip("*") for c in row.strip("|").split("|")][:5] == [v[k] for k in keys]
    transfer = pd.read_csv(out / "transfer.csv").set_index("condition")
    assert transfer.loc["kd", "negative_asymmetric_payoff"] == v["negative_asymmetric_payoff"]
    assert transfer.loc["kd", "negative_transfer"] == v["negative_transfer"]
    # kdaudit compare on the same students' test logits: the same family of 4, the same tests
    recs = records(out)
    for name in ("teacher", "siddo", "kd", "ls", "rcd-uniform", "rcd-gaussian"):
        (tmp_path / name).mkdir()
    for run_id, rec in recs.items():
        job = next(
            p.parent for p in (out / "jobs").glob("*/record.json") if json.loads(p.read_text())["run_id"] == run_id
        )
        if not (job / "outputs.npz").exists():  # M0: weights only
            continue
        with np.load(job / "outputs.npz") as z:
            logits, labels = z["test_logits"], z["test_labels"]
        cond = rec.get("condition", run_id)
        if run_id == "teacher":
            np.save(tmp_path / "teacher" / "t.npy", logits)
            np.save(tmp_path / "labels.npy", labels)
        elif cond in ("siddo", "kd", "ls", "rcd-uniform", "rcd-gaussian"):
            np.save(tmp_path / cond / f"{run_id}.npy", logits)
    c = kdaudit(
        "compare",
        "--teacher",
        str(tmp_path / "teacher" / "t.npy"),
        "--labels",
        str(tmp_path / "labels.npy"),
        "--control",
        str(tmp_path / "siddo" / "*.npy"),
        "--group",
        f"kd={tmp_path / 'kd' / '*.npy'}",
        "--rcd",
        f"ls={tmp_path / 'ls' / '*.npy'}",
        "--rcd",
        f"rcd-uniform={tmp_path / 'rcd-uniform' / '*.npy'}",
        "--rcd",
        f"rcd-gaussian={tmp_path / 'rcd-gaussian' / '*.npy'}",
        "--json",
    )
    assert c.returncode == 0, c.stderr
    g = json.loads(c.stdout)["groups"]["kd"]
    assert g["verdicts"] == {k: v[k] for k in keys}
    assert g["asymmetry"]["p_value"] == pytest.approx(v["tests"]["H4"]["p_value"])
    assert g["metrics"]["agreement"]["p_adjusted"] == pytest.approx(v["tests"]["H1"]["p_adjusted"])
