"""§4 transfer/payoff and the audit tables, on synthetic logits with a planted effect."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from kdaudit.analysis.audit import (
    RUNS_COLUMNS,
    SUMMARY_COLUMNS,
    TESTS_COLUMNS,
    TRANSFER_COLUMNS,
    AuditTables,
    Verdict,
    build_audit_tables,
)
from kdaudit.analysis.metrics import functional_metrics_many
from kdaudit.analysis.stats import adjust_pvalues, mann_whitney, wilcoxon_paired
from kdaudit.analysis.transfer import TRANSFER_KEYS, payoff_label, transfer_payoff
from kdaudit.errors import InputError

# --- synthetic students -----------------------------------------------------------------------


class World:
    """A teacher with noisy logits and students that share part of the teacher's noise.

    ``copy_fraction`` plants negative knowledge: the student predicts the teacher's wrong label
    on that fraction of the teacher-wrong samples (drawn per student).
    """

    def __init__(self, n: int, c: int, seed: int, margin: float = 2.5) -> None:
        self.rng = np.random.default_rng(seed)
        self.n, self.c, self.margin = n, c, margin
        self.labels = self.rng.integers(0, c, size=n)
        self.noise = self.rng.standard_normal((n, c))
        self.teacher = margin * np.eye(c)[self.labels] + self.noise
        self.pred = self.teacher.argmax(axis=1)

    def students(self, k: int, copy_fraction: float = 0.0, shared: float = 0.5) -> np.ndarray:
        out = np.empty((k, self.n, self.c))
        wrong = np.flatnonzero(self.pred != self.labels)
        for i in range(k):
            own = self.rng.standard_normal((self.n, self.c))
            z = self.margin * np.eye(self.c)[self.labels] + shared * self.noise + math.sqrt(1 - shared**2) * own
            if copy_fraction:
                chosen = wrong[self.rng.random(wrong.size) < copy_fraction]
                z[chosen, self.pred[chosen]] = z[chosen].max(axis=1) + 1.0
            out[i] = z
        return out

    def metrics(self, stack: np.ndarray) -> dict[str, np.ndarray]:
        return functional_metrics_many(self.teacher, stack, self.labels)


def make_runs(
    n_seeds: int = 10,
    n: int = 600,
    seed: int = 3,
    planted: dict[float, float] | None = None,
    rcd: bool = True,
) -> pd.DataFrame:
    """runs.csv-like table: teacher, siddo, kd at α 0.1 / 0.5 (planted copy fractions), RCDs."""
    planted = {0.1: 0.0, 0.5: 0.3} if planted is None else planted
    w = World(n, 10, seed)
    rows = [{
        "run_id": "teacher", "role": "teacher", "condition": "teacher", "alpha": np.nan,
        "temperature": np.nan, "seed": 0,
    }]

    def add(condition: str, alpha: float, stack: np.ndarray) -> None:
        m = w.metrics(stack)
        for i in range(stack.shape[0]):
            row = {
                "run_id": f"{condition}-a{alpha}-s{i + 1}", "role": "student", "condition": condition,
                "alpha": alpha, "temperature": 1.0, "seed": i + 1,
                "accuracy": m["student_accuracy"][i], "loss": m["student_loss"][i],
            }
            row.update({k: m[k][i] for k in RUNS_COLUMNS[8:]})
            rows.append(row)

    add("siddo", 0.0, w.students(n_seeds))
    for alpha, frac in planted.items():
        add("kd", alpha, w.students(n_seeds, copy_fraction=frac))
        if rcd:
            add("rcd-uniform", alpha, w.students(n_seeds, shared=0.45))
            add("rcd-gaussian", alpha, w.students(n_seeds, shared=0.5))
    df = pd.DataFrame(rows)
    return df[RUNS_COLUMNS]


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return make_runs()


@pytest.fixture(scope="module")
def tables(runs: pd.DataFrame) -> AuditTables:
    return build_audit_tables(runs)


# --- transfer_payoff --------------------------------------------------------------------------


def test_transfer_payoff_hand_values() -> None:
    xc = [0.96, 0.97, 0.965, 0.968, 0.962]
    cc = [0.95, 0.955, 0.96, 0.958, 0.952]
    xw = [0.40, 0.42, 0.41, 0.43, 0.39]
    cw = [0.20, 0.22, 0.21, 0.19, 0.23]
    r = transfer_payoff(xc, xw, cc, cw)
    assert list(r) == TRANSFER_KEYS
    assert r["delta_pos"] == pytest.approx(np.mean(xc) - np.mean(cc))
    assert r["delta_neg"] == pytest.approx(np.mean(xw) - np.mean(cw))
    assert r["h_pos"] == pytest.approx(r["delta_pos"] / (1 - np.mean(cc)))
    assert r["h_neg"] == pytest.approx(r["delta_neg"] / (1 - np.mean(cw)))
    assert r["p_neg"] == pytest.approx(sps.mannwhitneyu(xw, cw).pvalue)
    assert r["p_pos"] == pytest.approx(sps.mannwhitneyu(xc, cc).pvalue)
    assert r["h_neg"] > r["h_pos"] and r["negative_asymmetric_payoff"] is True


def test_transfer_payoff_no_and_not_testable() -> None:
    xc, cc = [0.99, 0.995, 0.992], [0.95, 0.951, 0.953]
    xw, cw = [0.30, 0.31, 0.32], [0.20, 0.21, 0.22]
    # Δ− significant at 0.1 but h− < h+: no payoff
    r = transfer_payoff(xc, xw, cc, cw, level=0.11)
    assert r["p_neg"] < 0.11 and r["h_neg"] < r["h_pos"] and r["negative_asymmetric_payoff"] is False
    # Δ− not significant: no
    r = transfer_payoff(xc, [0.2, 0.21, 0.22], cc, cw)
    assert r["negative_asymmetric_payoff"] is False
    # empty teacher-wrong set (NaN agreements): not testable
    nan3 = [np.nan] * 3
    r = transfer_payoff(xc, nan3, cc, nan3)
    assert r["negative_asymmetric_payoff"] is None and math.isnan(r["p_neg"])
    # one seed: not testable
    assert transfer_payoff([0.9], [0.3], [0.8], [0.2])["negative_asymmetric_payoff"] is None
    # control with no headroom on 𝒞: h+ NaN; Δ− significant -> not testable
    r = transfer_payoff([1.0, 1.0, 1.0], xw, [1.0, 1.0, 1.0], cw, level=0.11)
    assert math.isnan(r["h_pos"]) and r["negative_asymmetric_payoff"] is None
    assert [payoff_label(v) for v in (True, False, None)] == ["yes", "no", "not testable"]


def test_planted_negative_knowledge_is_found() -> None:
    w = World(1500, 10, seed=11)
    ctrl = w.metrics(w.students(8))
    kd = w.metrics(w.students(8, copy_fraction=0.3))
    r = transfer_payoff(
        kd["agreement_teacher_correct"], kd["agreement_teacher_wrong"],
        ctrl["agreement_teacher_correct"], ctrl["agreement_teacher_wrong"],
    )
    assert r["delta_neg"] > 0.1 and r["p_neg"] < 0.01
    assert r["h_neg"] > r["h_pos"]
    assert r["negative_asymmetric_payoff"] is True
    assert abs(r["delta_pos"]) < 0.02


def test_null_students_rarely_look_significant() -> None:
    """Independent students (same distribution as the control): ≥ 90 % of audits clean."""
    w = World(200, 5, seed=21)
    n_audits, k = 200, 5
    flagged_transfer = flagged_payoff = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n_audits):
            m = w.metrics(w.students(2 * k))
            ctrl = {key: v[:k] for key, v in m.items()}
            grp = {key: v[k:] for key, v in m.items()}
            if mann_whitney(grp["agreement"], ctrl["agreement"]).significant(0.05):
                flagged_transfer += 1
            r = transfer_payoff(
                grp["agreement_teacher_correct"], grp["agreement_teacher_wrong"],
                ctrl["agreement_teacher_correct"], ctrl["agreement_teacher_wrong"],
            )
            flagged_payoff += r["negative_asymmetric_payoff"] is True
    assert flagged_transfer <= 0.1 * n_audits
    assert flagged_payoff <= 0.1 * n_audits


# --- build_audit_tables -----------------------------------------------------------------------


def test_table_columns_and_sizes(tables: AuditTables, runs: pd.DataFrame) -> None:
    assert list(tables.tests.columns) == TESTS_COLUMNS
    assert list(tables.transfer.columns) == TRANSFER_COLUMNS
    assert list(tables.summary.columns) == SUMMARY_COLUMNS
    assert SUMMARY_COLUMNS[:3] == ["condition", "alpha", "n"]
    assert "agreement_teacher_wrong_sem" in SUMMARY_COLUMNS
    # 6 non-siddo groups × 10 metrics vs siddo + kd at 2 α × 2 RCDs × 10 metrics
    assert len(tables.tests) == 60 + 40
    counts = tables.tests["comparison"].value_counts().to_dict()
    assert counts == {"vs_siddo": 60, "vs_rcd-gaussian": 20, "vs_rcd-uniform": 20}
    assert set(tables.tests.loc[tables.tests["comparison"] != "vs_siddo", "condition"]) == {"kd"}
    assert len(tables.transfer) == 6
    pd.testing.assert_frame_equal(tables.runs, runs)
    assert tables.tests["significant"].dtype == bool
    assert tables.tests["n_a"].dtype == np.int64


def test_tests_rows_are_scipy_mann_whitney(tables: AuditTables, runs: pd.DataFrame) -> None:
    row = tables.tests.query("comparison == 'vs_siddo' and condition == 'kd' and alpha == 0.5 and metric == 'agreement'").iloc[0]
    a = runs.query("condition == 'kd' and alpha == 0.5")["agreement"].to_numpy()
    b = runs.query("condition == 'siddo'")["agreement"].to_numpy()
    ref = sps.mannwhitneyu(a, b, alternative="two-sided")
    assert row["statistic"] == ref.statistic and row["p_value"] == pytest.approx(ref.pvalue)
    assert row["effect_size"] == pytest.approx(2 * ref.statistic / (a.size * b.size) - 1)
    assert (row["n_a"], row["n_b"]) == (10, 10)
    assert row["mean_a"] == pytest.approx(a.mean()) and row["sem_b"] == pytest.approx(sps.sem(b))


def test_family_is_all_rows(tables: AuditTables) -> None:
    t = tables.tests
    np.testing.assert_allclose(t["p_adjusted"], adjust_pvalues(t["p_value"], "holm"), equal_nan=True)
    assert (t["significant"] == (t["p_adjusted"] < 0.05)).all()


@pytest.mark.parametrize("correction", ["none", "bh"])
def test_other_corrections(runs: pd.DataFrame, correction: str) -> None:
    t = build_audit_tables(runs, correction=correction).tests
    ok = t["p_value"].notna()
    if correction == "none":
        np.testing.assert_array_equal(t["p_adjusted"], t["p_value"])
    else:
        np.testing.assert_allclose(t.loc[ok, "p_adjusted"], sps.false_discovery_control(t.loc[ok, "p_value"]))
    assert (t["significant"] == (t["p_adjusted"] < 0.05)).all()


def test_paired_rows(runs: pd.DataFrame) -> None:
    t = build_audit_tables(runs, paired=True).tests
    assert len(t) == 200
    paired = t[t["comparison"].str.endswith("_paired")]
    assert set(paired["comparison"]) == {"vs_siddo_paired", "vs_rcd-uniform_paired", "vs_rcd-gaussian_paired"}
    row = paired.query("comparison == 'vs_siddo_paired' and condition == 'kd' and alpha == 0.5 and metric == 'agreement'").iloc[0]
    a = runs.query("condition == 'kd' and alpha == 0.5").sort_values("seed")["agreement"].to_numpy()
    b = runs.query("condition == 'siddo'").sort_values("seed")["agreement"].to_numpy()
    ref = wilcoxon_paired(a, b)
    assert row["p_value"] == pytest.approx(ref.p_value) and row["statistic"] == ref.statistic
    np.testing.assert_allclose(t["p_adjusted"], adjust_pvalues(t["p_value"], "holm"), equal_nan=True)


def test_transfer_table(tables: AuditTables) -> None:
    tr = tables.transfer.set_index(["condition", "alpha"])
    kd5 = tr.loc[("kd", 0.5)]
    assert kd5["delta_neg"] > 0.1 and kd5["p_neg"] < 0.05 and kd5["h_neg"] > kd5["h_pos"]
    assert kd5["negative_asymmetric_payoff"] == "yes"
    assert tr.loc[("kd", 0.1)]["negative_asymmetric_payoff"] == "no"
    assert set(tables.transfer["negative_asymmetric_payoff"]) <= {"yes", "no", "not testable"}
    assert "α = 0.5" in kd5["verdict"] and "Δ−" in kd5["verdict"]


def test_summary_table(tables: AuditTables, runs: pd.DataFrame) -> None:
    s = tables.summary
    assert s.iloc[0]["condition"] == "siddo"
    rest = list(zip(s["condition"][1:], s["alpha"][1:]))
    assert rest == sorted(rest)
    assert (s["n"] == 10).all()
    kd = s.query("condition == 'kd' and alpha == 0.5").iloc[0]
    vals = runs.query("condition == 'kd' and alpha == 0.5")["agreement"]
    assert kd["agreement_mean"] == pytest.approx(vals.mean())
    assert kd["agreement_sem"] == pytest.approx(sps.sem(vals))


def test_verdicts(tables: AuditTables) -> None:
    v = {x.alpha: x for x in tables.verdicts}
    assert set(v) == {0.1, 0.5} and all(isinstance(x, Verdict) and x.condition == "kd" for x in v.values())
    assert v[0.5].knowledge_transfer == "yes"
    assert v[0.5].beyond_regularisation == "yes"
    assert v[0.5].negative_asymmetric_payoff == "yes"
    assert v[0.5].compression == "no"
    assert v[0.1].knowledge_transfer == "no"
    assert v[0.1].negative_asymmetric_payoff == "no"
    text = " ".join(v[0.5].sentences)
    assert "At α = 0.5, KD students agree with the teacher on" in text
    assert "holm-adjusted" in text and "SIDDO" in text and "significant knowledge transfer" in text
    assert "Δ+" in text and "h−" in text
    for x in tables.verdicts:
        for field in ("knowledge_transfer", "beyond_regularisation", "negative_asymmetric_payoff", "compression"):
            assert getattr(x, field) in ("yes", "no", "not testable")


# --- degenerate inputs ------------------------------------------------------------------------


def test_one_seed_is_not_testable() -> None:
    runs = make_runs(n_seeds=1, n=300)
    t = build_audit_tables(runs, paired=True)
    assert t.tests["p_value"].isna().all() and not t.tests["significant"].any()
    for v in t.verdicts:
        assert v.knowledge_transfer == v.beyond_regularisation == "not testable"
        assert v.negative_asymmetric_payoff == "not testable"
    assert (t.transfer["negative_asymmetric_payoff"] == "not testable").all()


def test_missing_siddo_and_rcd(runs: pd.DataFrame) -> None:
    no_siddo = runs[runs["condition"] != "siddo"]
    t = build_audit_tables(no_siddo)
    vs = t.tests[t.tests["comparison"] == "vs_siddo"]
    assert (vs["n_b"] == 0).all() and vs["p_value"].isna().all()
    assert all(v.knowledge_transfer == "not testable" for v in t.verdicts)
    assert all(v.negative_asymmetric_payoff == "not testable" for v in t.verdicts)
    assert all(v.beyond_regularisation != "not testable" for v in t.verdicts)
    no_rcd = runs[~runs["condition"].str.startswith("rcd")]
    t = build_audit_tables(no_rcd)
    assert all(v.beyond_regularisation == "not testable" for v in t.verdicts)
    assert set(t.tests["comparison"]) == {"vs_siddo"}


def test_nan_metrics_do_not_crash(runs: pd.DataFrame) -> None:
    r = runs.copy()
    r.loc[r["role"] == "student", "agreement_teacher_wrong"] = np.nan
    r.loc[r.index[3], "agreement"] = np.nan
    t = build_audit_tables(r)
    assert (t.transfer["negative_asymmetric_payoff"] == "not testable").all()
    assert t.tests.query("metric == 'agreement_teacher_wrong'")["p_value"].isna().all()
    assert all(v.negative_asymmetric_payoff == "not testable" for v in t.verdicts)


def test_teacher_only_and_csv_round_trip(runs: pd.DataFrame) -> None:
    t = build_audit_tables(runs[runs["role"] == "teacher"])
    assert t.tests.empty and t.transfer.empty and t.summary.empty and t.verdicts == []
    assert list(t.tests.columns) == TESTS_COLUMNS
    buf = io.StringIO()
    runs.to_csv(buf, index=False)
    again = build_audit_tables(pd.read_csv(io.StringIO(buf.getvalue())))
    pd.testing.assert_frame_equal(again.tests, build_audit_tables(runs).tests)


def test_bad_runs_tables(runs: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="missing required column.*agreement"):
        build_audit_tables(runs.drop(columns=["agreement", "seed"]))
    bad = runs.copy()
    bad["loss"] = bad["loss"].astype(object)
    bad.loc[bad.index[2], "loss"] = "oops"
    with pytest.raises(InputError, match="'loss'"):
        build_audit_tables(bad)
    with pytest.raises(InputError, match="correction"):
        build_audit_tables(runs, correction="bonferroni")
    with pytest.raises(InputError, match="level"):
        build_audit_tables(runs, level=1.5)
