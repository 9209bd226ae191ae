"""The regularisation controls: the label-smoothing virtual teacher (`ls`) and shared or per-seed
RCD noise tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import as_sets, kdaudit, records
from kdaudit.config.loader import resolve_spec
from kdaudit.config.schema import CONDITIONS
from kdaudit.errors import SpecError
from kdaudit.execute.runner import noise_seed
from kdaudit.execute.train import label_smoothing_table, noise_table, teacher_top_probability
from kdaudit.plan.jobs import build_plan

TINY = ["protocol.seeds=3", "train.epochs=2", "model.kwargs.hidden=[16]"]


def test_label_smoothing_targets_by_hand() -> None:
    z = label_smoothing_table([0, 2], num_classes=3, a=0.8, temperature=2.0)
    expected = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(z.numpy(), 2.0 * np.log(expected), rtol=1e-6)
    # through the KD loss's softmax at the same temperature: exactly the virtual teacher
    np.testing.assert_allclose(torch.softmax(z.double() / 2.0, dim=1).numpy(), expected, atol=1e-6)
    with pytest.raises(SpecError, match="1/C"):
        label_smoothing_table([0], num_classes=4, a=0.2)


def test_teacher_top_probability_by_hand() -> None:
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    p1 = np.exp(2) / (np.exp(2) + 2)
    p2 = np.e / (np.e + 2)
    assert teacher_top_probability(logits) == pytest.approx((p1 + p2) / 2)
    t = 2.0
    q1, q2 = np.exp(1) / (np.exp(1) + 2), np.exp(0.5) / (np.exp(0.5) + 2)
    assert teacher_top_probability(logits, t) == pytest.approx((q1 + q2) / 2)


def test_ls_and_shared_noise_are_the_defaults_and_per_seed_keeps_its_keys() -> None:
    spec = resolve_spec("digits-mlp", TINY)
    assert list(CONDITIONS) == ["siddo", "kd", "ls", "rcd-uniform", "rcd-gaussian"]
    assert spec.protocol.conditions == list(CONDITIONS) and spec.protocol.rcd_noise == "shared"
    assert spec.n_models() == 1 + 3 + 4 * 3 * 3
    shared = build_plan(spec)
    per_seed = build_plan(resolve_spec("digits-mlp", TINY + ["protocol.rcd_noise=per_seed"]))
    rs = {j.run_id: j for j in shared.students if j.condition.startswith("rcd")}
    rp = {j.run_id: j for j in per_seed.students if j.condition.startswith("rcd")}
    assert set(rs) == set(rp)
    assert all(rs[k].key != rp[k].key for k in rs)  # different tables, different jobs
    assert all("rcd_noise" not in j.params for j in rp.values())  # per_seed: the keys it always had
    # shared: every seed reads the same table; per seed: one table per seed
    seeds_shared = {noise_seed(j) for j in rs.values()}
    seeds_per = {noise_seed(j) for j in rp.values()}
    assert seeds_shared == {0} and seeds_per == {1, 2, 3}
    a, b = (
        noise_table("rcd-uniform", noise_seed(rs["rcd-uniform-a0.5-s01"]), 5, 3),
        noise_table("rcd-uniform", noise_seed(rs["rcd-uniform-a0.5-s02"]), 5, 3),
    )
    assert torch.equal(a, b)
    c, d = (
        noise_table("rcd-uniform", noise_seed(rp[k]), 5, 3) for k in ("rcd-uniform-a0.5-s01", "rcd-uniform-a0.5-s02")
    )
    assert not torch.equal(c, d)
    # the other students' keys do not depend on the RCD option
    ks = {j.run_id: j.key for j in shared.students if not j.condition.startswith("rcd")}
    kp = {j.run_id: j.key for j in per_seed.students if not j.condition.startswith("rcd")}
    assert ks == kp
    # ls depends on the teacher only when a comes from the teacher
    ls = next(j for j in shared.students if j.condition == "ls")
    assert shared.teacher.key in ls.deps
    fixed = build_plan(resolve_spec("digits-mlp", TINY + ["protocol.ls.a=0.9"]))
    ls_fixed = next(j for j in fixed.students if j.condition == "ls")
    assert fixed.teacher.key not in ls_fixed.deps and ls_fixed.params["ls"] == {"a": 0.9}


@pytest.fixture(scope="module")
def ls_audit(tmp_path_factory):
    out = tmp_path_factory.mktemp("ls") / "audit"
    r = kdaudit(
        "run",
        "digits-mlp",
        *as_sets(TINY),
        "--set",
        "protocol.alphas=[0.9]",
        "--out",
        str(out),
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow  # a whole audit (3 seeds, LS at one α)
def test_ls_audit_states_a_and_tests_kd_against_ls(ls_audit) -> None:
    out = ls_audit
    recs = records(out)
    ls = recs["ls-a0.9-s01"]
    # a = the teacher's mean top probability on the training set, at the distillation temperature
    job = next(
        p.parent for p in (out / "jobs").glob("*/record.json") if json.loads(p.read_text())["run_id"] == "teacher"
    )
    with np.load(job / "outputs.npz") as z:
        logits = z["train_logits"].astype(np.float64)
    top = np.mean([np.exp(row - row.max()).max() / np.exp(row - row.max()).sum() for row in logits])
    assert ls["ls_a"] == pytest.approx(top, rel=1e-9)
    assert all(recs[f"ls-a0.9-s0{s}"]["ls_a"] == ls["ls_a"] for s in (1, 2, 3))
    tests = pd.read_csv(out / "tests.csv")
    h2 = tests[(tests.hypothesis == "H2")]
    assert set(h2.comparison) == {"vs_ls", "vs_rcd-uniform", "vs_rcd-gaussian"}
    assert set(tests.loc[tests.condition == "ls", "comparison"]) == {"vs_siddo"}  # a control: not judged
    audit = json.loads((out / "audit.json").read_text())
    assert [v["condition"] for v in audit["verdicts"]] == ["kd"]
    transfer = pd.read_csv(out / "transfer.csv").set_index("condition")
    assert transfer.loc["ls", "negative_asymmetric_payoff"] == "control"
    assert "LS" in (out / "report.md").read_text()


@pytest.mark.slow  # two fresh `python -m kdaudit.cli` processes
def test_ls_a_at_or_below_one_over_c_is_refused(tmp_path) -> None:
    out = tmp_path / "bad"
    r = kdaudit("run", "digits-mlp", *as_sets(TINY), "--set", "protocol.ls.a=0.05", "--out", str(out))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "protocol.ls.a" in lines[0] and "1/C" in lines[0]
    r = kdaudit("run", "digits-mlp", "--set", "protocol.rcd_noise=global", "--out", str(out))
    assert r.returncode == 2 and "rcd_noise" in r.stderr
