"""Sweep analysis: power laws and trends against numpy/scipy and hand computations, the sweep
tables against plain loops, and the sweep report's files."""

from __future__ import annotations

import base64
import itertools
import math
import re
import statistics
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from kdaudit.analysis import catalogue
from kdaudit.analysis.audit import build_audit_tables
from kdaudit.analysis.exact import spearman_test
from kdaudit.analysis.sweep import (
    TREND_SEED,
    SweepPoint,
    build_sweep_tables,
    power_law_fit,
    sweep_axis,
    trend_test,
)
from kdaudit.errors import InputError
from kdaudit.report.figures import transfer_deltas
from kdaudit.report.sweep_report import write_sweep_report

GROUPS = [("siddo", 0.0), ("kd", 0.5), ("kd", 0.9), ("rcd-uniform", 0.5), ("rcd-uniform", 0.9)]
SEEDS = 3


# --- power_law_fit ----------------------------------------------------------------------------


def test_power_law_recovers_planted_exponent_and_matches_polyfit() -> None:
    rng = np.random.default_rng(1)
    x = np.geomspace(10, 1e4, 40)
    y = 3.0 * x**-0.4 * np.exp(rng.normal(0, 0.05, x.size))
    fit = power_law_fit(x, y)
    assert abs(fit.exponent + 0.4) < 3 * fit.exponent_se
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    assert fit.exponent == pytest.approx(slope, rel=1e-10)
    assert fit.prefactor == pytest.approx(math.exp(intercept), rel=1e-10)
    lx, ly = np.log(x), np.log(y)
    resid = ly - (intercept + slope * lx)
    se = math.sqrt((resid**2).sum() / (x.size - 2) / ((lx - lx.mean()) ** 2).sum())
    assert fit.exponent_se == pytest.approx(se, rel=1e-10)
    assert fit.r2 == pytest.approx(np.corrcoef(lx, ly)[0, 1] ** 2, rel=1e-10)
    assert fit.n == 40


def test_power_law_exact_on_noiseless_data_and_drops_bad_points() -> None:
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    y = 3.0 * x**-0.4
    fit = power_law_fit(x, y)
    assert fit.exponent == pytest.approx(-0.4, abs=1e-12)
    assert fit.prefactor == pytest.approx(3.0, rel=1e-12)
    assert fit.r2 == pytest.approx(1.0) and fit.exponent_se < 1e-7
    dirty = power_law_fit(np.r_[x, 0.0, -1.0, np.nan, 3.0, 5.0], np.r_[y, 1.0, 1.0, 1.0, -2.0, np.inf])
    assert dirty.n == 5 and dirty.exponent == pytest.approx(-0.4, abs=1e-12)


@pytest.mark.parametrize(
    "x, y",
    [
        ([1.0, 1.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0]),  # two distinct x
        ([1.0, 2.0, 3.0], [1.0, 0.0, 2.0]),  # a non-positive y leaves two points
        ([], []),
    ],
)
def test_power_law_degenerate_is_nan_without_warnings(x, y) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = power_law_fit(x, y)
    assert all(math.isnan(v) for v in (fit.exponent, fit.exponent_se, fit.prefactor, fit.r2))


def test_power_law_rejects_mismatched_lengths() -> None:
    with pytest.raises(InputError, match="equal length"):
        power_law_fit([1, 2, 3], [1, 2])


# --- trend_test -------------------------------------------------------------------------------


def enumerated_spearman_p(x, y) -> float:
    """Two-sided permutation p of Spearman's ρ by brute force: the share of all n! orderings of
    y whose |ρ| reaches the observed one (1e-12 tolerance: ρ is a float)."""
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    obs = abs(np.corrcoef(rx, ry)[0, 1])
    rhos = [abs(np.corrcoef(rx, ry[list(p)])[0, 1]) for p in itertools.permutations(range(len(ry)))]
    return sum(r >= obs - 1e-12 for r in rhos) / len(rhos)


def test_trend_matches_spearmanr_and_hand_computation() -> None:
    res = trend_test([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    # ranks differ by d = (1, -1, 1, -1, 0): ρ = 1 − 6·Σd² / (n(n² − 1)) = 1 − 24/120
    assert res.rho == pytest.approx(0.8, abs=1e-12) and res.n == 5
    # the p is the exact permutation p (all 5! orderings), not spearmanr's t-approximation
    assert res.p_value == pytest.approx(enumerated_spearman_p([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]), rel=1e-12)
    # 3 points in perfect order: 2 of the 3! orderings have |ρ| = 1 (spearmanr says p = 0)
    assert trend_test([0.3, 0.5, 0.7], [0.1, 0.2, 0.4]).p_value == pytest.approx(1 / 3, abs=1e-15)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=30), rng.normal(size=30)
    y[:5] = y[5]  # ties
    ref = sps.spearmanr(x, y)
    res = trend_test(x, y)
    assert res.rho == pytest.approx(ref.statistic, rel=1e-12)
    # 30 pairs: a Monte-Carlo permutation p seeded with TREND_SEED, close to the t-approximation
    rho, mc = spearman_test(x, y, seed=TREND_SEED)
    assert mc.method == "monte-carlo" and res.p_value == mc.p and trend_test(x, y).p_value == res.p_value
    assert res.p_value == pytest.approx(ref.pvalue, abs=0.03)
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    assert res.rho == pytest.approx(np.corrcoef(rx, ry)[0, 1], rel=1e-12)


@pytest.mark.parametrize(
    "x, y",
    [
        ([1.0, 2.0], [3.0, 1.0]),
        ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]),
        ([1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]),
        ([1.0, np.nan, 3.0, 4.0], [1.0, 2.0, np.inf, 3.0]),
    ],
)
def test_trend_degenerate_is_nan_without_warnings(x, y) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = trend_test(x, y)
    assert math.isnan(res.rho) and math.isnan(res.p_value)


# --- synthetic sweeps -------------------------------------------------------------------------


def make_point(
    i: int,
    value: object,
    params: int,
    teacher_loss: float,
    amp: float = 0.0,
    label: str | None = None,
    path: str = "protocol.temperature",
) -> SweepPoint:
    """One audit's runs (3 seeds per group); KD's agreement where the teacher is wrong rises by
    ``amp · α · teacher_loss``, every student's loss is 2·N^-0.3 up to noise."""
    rng = np.random.default_rng(100 + i)
    rows = [
        {
            "run_id": "teacher",
            "role": "teacher",
            "condition": "teacher",
            "alpha": np.nan,
            "seed": 0,
            "accuracy": 0.8,
            "loss": teacher_loss,
            **{m: np.nan for m in catalogue.tested_metrics()[2:]},
        }
    ]
    for cond, alpha in GROUPS:
        for seed in range(1, SEEDS + 1):
            m = {k: float(rng.uniform(0.2, 0.8)) for k in catalogue.tested_metrics()}
            m["loss"] = float(2.0 * params**-0.3 * math.exp(rng.normal(0, 0.02)))
            gain = amp * alpha * teacher_loss if cond == "kd" else 0.0
            m["agreement_teacher_wrong"] = 0.3 + gain + float(rng.normal(0, 0.01))
            rows.append(
                {
                    "run_id": f"{cond}-{alpha}-s{seed}",
                    "role": "student",
                    "condition": cond,
                    "alpha": alpha,
                    "seed": seed,
                    **m,
                }
            )
    runs = pd.DataFrame(rows)
    transfer = build_audit_tables(runs).transfer
    return SweepPoint(
        label or f"{path}={value}", {path: value}, runs, transfer, teacher_loss, 0.8, params, 10_000, f"point-{i}"
    )


def sweep(params=(100, 200, 400, 800), losses=(0.3, 0.5, 0.7, 0.9), amp=0.0) -> list[SweepPoint]:
    return [make_point(i, 2**i, p, t, amp) for i, (p, t) in enumerate(zip(params, losses, strict=True))]


def _sem(v: list[float]) -> float:
    return statistics.stdev(v) / math.sqrt(len(v))


def test_metrics_equal_a_plain_loop() -> None:
    points = sweep()
    tables = build_sweep_tables(points)
    m = tables.metrics
    assert len(m) == len(points) * (2 + len(GROUPS) * len(catalogue.tested_metrics()))
    assert list(m.columns) == ["point", "protocol.temperature", "condition", "alpha", "metric", "n", "mean", "sem"]
    for p in points:
        for cond, alpha in GROUPS:
            for metric in catalogue.tested_metrics():
                vals = [r[metric] for _, r in p.runs.iterrows() if r["condition"] == cond and r["alpha"] == alpha]
                row = m[
                    (m["point"] == p.label) & (m["condition"] == cond) & (m["alpha"] == alpha) & (m["metric"] == metric)
                ]
                assert len(row) == 1
                assert row["n"].item() == SEEDS
                assert row["mean"].item() == pytest.approx(sum(vals) / len(vals), rel=1e-12)
                assert row["sem"].item() == pytest.approx(_sem(vals), rel=1e-10)
        t = m[(m["point"] == p.label) & (m["condition"] == "teacher")].set_index("metric")
        assert t.loc["loss", "mean"] == p.teacher_loss and t.loc["accuracy", "mean"] == 0.8
        assert (t["n"] == 1).all() and t["sem"].isna().all()
        assert (m.loc[m["point"] == p.label, "protocol.temperature"] == p.values["protocol.temperature"]).all()


def test_transfer_deltas_and_their_sems() -> None:
    points = sweep()
    tr = build_sweep_tables(points).transfer
    assert len(tr) == len(points) * (len(GROUPS) - 1) and "siddo" not in set(tr["condition"])
    for p in points:
        ref = transfer_deltas(p.runs).set_index(["condition", "alpha"])
        runs = p.runs
        ctrl = runs[runs["condition"] == "siddo"]
        for _, r in tr[tr["point"] == p.label].iterrows():
            x = runs[(runs["condition"] == r["condition"]) & (runs["alpha"] == r["alpha"])]
            for key, metric in (("pos", "agreement_teacher_correct"), ("neg", "agreement_teacher_wrong")):
                hand = math.sqrt(_sem(list(x[metric])) ** 2 + _sem(list(ctrl[metric])) ** 2)
                assert r[f"sem_{key}"] == pytest.approx(hand, rel=1e-10)
                assert r[f"sem_{key}"] == pytest.approx(ref.loc[(r["condition"], r["alpha"]), f"sem_{key}"])
                assert r[f"delta_{key}"] == pytest.approx(x[metric].mean() - ctrl[metric].mean(), rel=1e-10)
            src = p.transfer[(p.transfer["condition"] == r["condition"]) & (p.transfer["alpha"] == r["alpha"])]
            assert r["h_neg"] == src["h_neg"].item() and r["p_pos"] == src["p_pos"].item()
            assert r["negative_asymmetric_payoff"] == src["negative_asymmetric_payoff"].item()
            assert r["teacher_loss"] == p.teacher_loss


def test_scaling_needs_three_student_sizes_and_recovers_the_exponent() -> None:
    two = build_sweep_tables(sweep(params=(100, 100, 200, 200)))
    assert two.scaling.empty and "exponent" in two.scaling.columns
    points = sweep()
    tables = build_sweep_tables(points)
    sc = tables.scaling.set_index(["condition", "alpha", "quantity"])
    assert len(sc) == len(GROUPS) * 2
    for cond, alpha in GROUPS:
        x, y = [], []
        for p in points:
            g = p.runs[(p.runs["condition"] == cond) & (p.runs["alpha"] == alpha)]
            x += [p.student_params] * len(g)
            y += list(g["loss"])
        ref = sps.linregress(np.log(x), np.log(y))
        row = sc.loc[(cond, alpha, "loss")]
        assert row["exponent"] == pytest.approx(ref.slope, rel=1e-10) and row["n"] == 4 * SEEDS
        assert abs(row["exponent"] + 0.3) < 3 * row["exponent_se"]
    found = [
        re.search(r"KD α=0\.9 student loss ∝ N\^(\S+) ± \S+ \(SIDDO (\S+) ± \S+\)\.$", s) for s in tables.sentences
    ]
    kd_exp, siddo_exp = next(f for f in found if f).groups()
    assert float(kd_exp) == pytest.approx(sc.loc[("kd", 0.9, "loss"), "exponent"], abs=0.005)
    assert float(siddo_exp) == pytest.approx(sc.loc[("siddo", 0.0, "loss"), "exponent"], abs=0.005)
    assert not any("RCD" in s for s in tables.sentences if s.startswith("Scaling"))


def test_trend_needs_three_teacher_losses_and_equals_spearman() -> None:
    flat = build_sweep_tables(sweep(losses=(0.5, 0.5, 0.7, 0.7), amp=0.5))
    assert flat.trend.empty and not any(s.startswith("Teacher loss") for s in flat.sentences)
    points = sweep(amp=0.5)
    tables = build_sweep_tables(points)
    tt = tables.trend.set_index(["condition", "alpha", "quantity"])
    base = tables.trend[tables.trend["quantity"].isin(["delta_pos", "delta_neg", "h_gap"])]
    assert len(base) == (len(GROUPS) - 1) * 3
    tr = tables.transfer
    kd = tr[(tr["condition"] == "kd") & (tr["alpha"] == 0.9)]
    ref = sps.spearmanr(kd["teacher_loss"], kd["delta_neg"])
    row = tt.loc[("kd", 0.9, "delta_neg")]
    assert row["rho"] == pytest.approx(ref.statistic)
    # over 4 points the p is the exact permutation p (4! orderings), not spearmanr's
    assert row["p_value"] == pytest.approx(enumerated_spearman_p(kd["teacher_loss"], kd["delta_neg"]), rel=1e-12)
    assert row["n_points"] == 4
    gap = sps.spearmanr(kd["teacher_loss"], kd["h_neg"] - kd["h_pos"])
    assert tt.loc[("kd", 0.9, "h_gap"), "rho"] == pytest.approx(gap.statistic)
    assert tt.loc[("kd", 0.9, "h_gap"), "n_seeds"] == 0
    xs, ys = [], []
    for p in points:
        r = p.runs
        ctrl = r.loc[r["condition"] == "siddo", "agreement_teacher_wrong"].mean()
        vals = r.loc[(r["condition"] == "kd") & (r["alpha"] == 0.9), "agreement_teacher_wrong"]
        xs += [p.teacher_loss] * len(vals)
        ys += list(vals - ctrl)
    ref = sps.spearmanr(xs, ys)
    assert row["rho_seeds"] == pytest.approx(ref.statistic)
    # over the seeds: the seeded Monte-Carlo permutation p
    assert row["p_seeds"] == spearman_test(xs, ys, seed=TREND_SEED)[1].p
    assert row["n_seeds"] == 4 * SEEDS
    assert bool(row["significant"]) == (row["p_seeds"] < 0.05) and row["significant"]
    text = [s for s in tables.sentences if "KD α=0.9's Δ−" in s and s.startswith("Teacher loss")]
    assert len(text) == 1 and "significant amplification" in text[0] and "from 0.30 to 0.90" in text[0]
    assert f"over {4 * SEEDS} students" in text[0]
    assert not any("RCD" in s for s in tables.sentences if s.startswith("Teacher loss"))


def test_trend_beyond_the_random_control() -> None:
    """KD's Δ− minus the RCD's: per seed, a KD student's value minus the RCD mean at its point."""
    points = sweep(amp=0.5)
    tables = build_sweep_tables(points)
    tt = tables.trend.set_index(["condition", "alpha", "quantity"])
    rcds = sorted({c for c, _ in GROUPS if c.startswith("rcd")})
    assert rcds
    for rcd in rcds:
        row = tt.loc[("kd", 0.9, f"delta_neg-{rcd}")]
        xs, ys = [], []
        for p in points:
            r = p.runs
            ref = r.loc[(r["condition"] == rcd) & (r["alpha"] == 0.9), "agreement_teacher_wrong"].mean()
            vals = r.loc[(r["condition"] == "kd") & (r["alpha"] == 0.9), "agreement_teacher_wrong"]
            xs += [p.teacher_loss] * len(vals)
            ys += list(vals - ref)
        want = sps.spearmanr(xs, ys)
        assert row["rho_seeds"] == pytest.approx(want.statistic)
        assert row["p_seeds"] == spearman_test(xs, ys, seed=TREND_SEED)[1].p  # seeded Monte-Carlo
        tr = tables.transfer
        kd = tr[(tr["condition"] == "kd") & (tr["alpha"] == 0.9)].set_index("point")
        rc = tr[(tr["condition"] == rcd) & (tr["alpha"] == 0.9)].set_index("point")
        pt = sps.spearmanr(kd["teacher_loss"], kd["delta_neg"] - rc.loc[kd.index, "delta_neg"])
        assert row["rho"] == pytest.approx(pt.statistic)
        assert row["significant"]  # the planted gain is KD's alone
    assert any(
        s.startswith("Beyond the random control: KD α=0.9's Δ− minus RCD") and "rises significantly" in s
        for s in tables.sentences
    )
    flat = build_sweep_tables(sweep(amp=0.0))
    kd_flat = flat.trend.set_index(["condition", "alpha", "quantity"]).loc[("kd", 0.9, f"delta_neg-{rcds[0]}")]
    assert not kd_flat["significant"]  # no planted gain (seeded noise only)


def test_bad_inputs_raise_one_line_errors() -> None:
    with pytest.raises(InputError, match="no points"):
        build_sweep_tables([])
    pts = sweep()
    with pytest.raises(InputError, match="unique"):
        build_sweep_tables([pts[0], pts[0]])
    with pytest.raises(InputError, match="level"):
        build_sweep_tables(pts, level=1.5)
    broken = make_point(9, 1, 100, 0.5)
    broken.runs = broken.runs.drop(columns=["agreement"])
    with pytest.raises(InputError, match=r"sweep point 'protocol.temperature=1'.*agreement"):
        build_sweep_tables([broken])
    broken = make_point(9, 1, 100, 0.5)
    broken.transfer = broken.transfer.drop(columns=["h_neg"])
    with pytest.raises(InputError, match="h_neg"):
        build_sweep_tables([broken])


def test_sweep_axis_is_the_first_numeric_path() -> None:
    pts = [make_point(i, v, 100, 0.5) for i, v in enumerate([4, 1, 2])]
    for p, name in zip(pts, ["a", "b", "c"], strict=True):
        p.values = {"data.name": name, "flag": True, **p.values}
    assert sweep_axis(pts) == ("protocol.temperature", [4.0, 1.0, 2.0])
    for p in pts:
        p.values = {"data.name": "x", "flag": False}
    assert sweep_axis(pts) == (None, [0.0, 1.0, 2.0])


# --- the report -------------------------------------------------------------------------------


def _check_html(doc: str, n_figures: int) -> None:
    srcs = re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', doc)
    assert len(srcs) == n_figures
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(b"\x89PNG\r\n\x1a\n")
    for attr in re.findall(r'\b(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', doc, flags=re.I):
        assert not attr.lower().startswith(("http://", "https://", "//", "javascript:", "/"))
    assert "<script" not in doc.lower() and "<link" not in doc.lower() and "url(" not in doc.lower()


def test_write_sweep_report_writes_everything(tmp_path: Path) -> None:
    points = sweep(amp=0.5)
    points[1].label = "<script>alert(1)</script>"
    points[2].path = "/etc/abs"
    tables = build_sweep_tables(points)
    paths = write_sweep_report(tmp_path, tables, points, {"title": "Temperature <b>sweep</b>"})
    figures = ["sweep_metrics", "sweep_transfer", "scaling", "teacher_loss"]
    assert set(paths) == {
        "sweep_metrics.csv",
        "sweep_transfer.csv",
        "scaling.csv",
        "trend.csv",
        "sweep.md",
        "sweep.html",
        *(f"figures/{f}.png" for f in figures),
    }
    assert all(p.is_file() for p in paths.values())
    assert not [p for p in tmp_path.rglob(".*tmp-*")]
    for name, df in (
        ("sweep_metrics.csv", tables.metrics),
        ("scaling.csv", tables.scaling),
        ("trend.csv", tables.trend),
        ("sweep_transfer.csv", tables.transfer),
    ):
        back = pd.read_csv(paths[name])
        assert list(back.columns) == list(df.columns) and len(back) == len(df)
    doc = paths["sweep.html"].read_text(encoding="utf-8")
    _check_html(doc, len(figures))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in doc and "<script>alert" not in doc
    assert "Temperature &lt;b&gt;sweep&lt;/b&gt;" in doc
    assert 'href="point-0/report.html"' in doc and 'href="/etc/abs' not in doc
    assert "significant amplification" in doc and "protocol.temperature" in doc
    md = paths["sweep.md"].read_text(encoding="utf-8")
    assert "<script>" not in md and "data:image" not in md
    assert "[report](point-0/report.html)" in md
    assert all(f"](figures/{f}.png)" in md for f in figures)


def test_report_without_scaling_or_trend_and_with_a_text_axis(tmp_path: Path) -> None:
    points = [make_point(i, name, 100, 0.5, path="data.name") for i, name in enumerate(["a", "b", "c"])]
    tables = build_sweep_tables(points)
    assert tables.scaling.empty and tables.trend.empty
    paths = write_sweep_report(tmp_path, tables, points, {})
    assert {"figures/sweep_metrics.png", "figures/sweep_transfer.png"} <= set(paths)
    assert "figures/scaling.png" not in paths and "figures/teacher_loss.png" not in paths
    assert pd.read_csv(paths["scaling.csv"]).empty and pd.read_csv(paths["trend.csv"]).empty
    _check_html(paths["sweep.html"].read_text(encoding="utf-8"), 2)
