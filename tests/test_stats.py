"""§5 statistics: scipy agreement, corrections against plain-loop references, degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from kdaudit.analysis.stats import (
    METHODS,
    TestResult,
    adjust_pvalues,
    compression_bar,
    mann_whitney,
    mean_sem,
    wilcoxon_paired,
)
from kdaudit.errors import InputError

A = np.array([0.871, 0.874, 0.869, 0.880, 0.877, 0.872, 0.879, 0.868])
B = np.array([0.850, 0.861, 0.855, 0.849, 0.870, 0.858, 0.852, 0.866])


# --- mean and SEM -----------------------------------------------------------------------------


def test_mean_sem_matches_numpy_and_scipy() -> None:
    m, s = mean_sem(A)
    assert m == pytest.approx(A.mean(), abs=1e-15)
    assert s == pytest.approx(sps.sem(A), abs=1e-15)
    assert s == pytest.approx(A.std(ddof=1) / math.sqrt(A.size), abs=1e-15)


def test_mean_sem_drops_nan_and_degenerates() -> None:
    m, s = mean_sem([1.0, np.nan, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)
    m, s = mean_sem([5.0])
    assert m == 5.0 and math.isnan(s)
    m, s = mean_sem([])
    assert math.isnan(m) and math.isnan(s)


# --- Mann–Whitney -----------------------------------------------------------------------------


def test_mann_whitney_matches_scipy() -> None:
    res = mann_whitney(A, B)
    ref = sps.mannwhitneyu(A, B, alternative="two-sided")
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.effect_size == pytest.approx(2 * ref.statistic / (A.size * B.size) - 1)
    assert (res.n_a, res.n_b) == (8, 8)
    assert res.mean_a == pytest.approx(A.mean()) and res.sem_b == pytest.approx(sps.sem(B))
    assert res.reason is None and res.significant(0.05)
    # 8 vs 8 without ties: scipy's default is already its exact method; the default here is exact
    assert res.method == "exact" and res.p_se == 0.0
    assert res.p_value == pytest.approx(sps.mannwhitneyu(A, B, method="exact").pvalue, rel=1e-12)


def test_mann_whitney_default_is_exact_beyond_scipys_exact_range() -> None:
    # 10 vs 10 without ties: scipy's default switches to the normal approximation above 8 per
    # group; the reference for the default here is scipy's exact method
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.5, 1, 10), rng.normal(0, 1, 10)
    res = mann_whitney(a, b)
    assert res.method == "exact"
    assert res.p_value == pytest.approx(sps.mannwhitneyu(a, b, method="exact").pvalue, rel=1e-12)
    asym = mann_whitney(a, b, method="asymptotic")
    assert asym.method == "asymptotic" and math.isnan(asym.p_se)
    assert asym.p_value == pytest.approx(sps.mannwhitneyu(a, b, method="asymptotic").pvalue, rel=1e-12)
    assert asym.statistic == res.statistic and asym.effect_size == res.effect_size
    # complete separation: 2 / C(20, 10)
    assert mann_whitney(a + 100, b).p_value == pytest.approx(2 / math.comb(20, 10), rel=1e-12)


def test_mann_whitney_effect_sign_and_ties() -> None:
    assert mann_whitney(A, B).effect_size > 0
    assert mann_whitney(B, A).effect_size < 0
    a, b = [1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 4]
    res = mann_whitney(a, b)
    # ties: the default is the exact permutation p, so the reference is scipy's permutation
    # method with full enumeration (C(11, 5) = 462 splits < n_resamples)
    ref = sps.mannwhitneyu(a, b, alternative="two-sided", method=sps.PermutationMethod(n_resamples=10**5))
    assert res.statistic == ref.statistic and res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.method == "permutation" and res.p_se == 0.0
    asym = mann_whitney(a, b, method="asymptotic")  # scipy's default with ties: the normal approximation
    assert asym.p_value == pytest.approx(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue, rel=1e-12)
    # U of a by counting pairs (ties count 1/2)
    u = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    assert res.statistic == u
    assert mann_whitney(A + 1, B).effect_size == 1.0  # entirely above B
    assert mann_whitney(B, A + 1).effect_size == -1.0


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ([0.5], [0.1, 0.2, 0.3], "n < 2"),
        ([], [0.1, 0.2], "n < 2"),
        ([0.4, 0.4, 0.4], [0.4, 0.4], "all values equal"),
        ([np.nan, 0.3], [0.1, 0.2], "n < 2"),
    ],
)
def test_mann_whitney_degenerate(a: list[float], b: list[float], reason: str) -> None:
    res = mann_whitney(a, b)
    assert math.isnan(res.p_value)
    assert reason in (res.reason or "")
    assert not res.significant(0.05) and not res.significant(1.0)


def test_mann_whitney_methods_and_bad_method() -> None:
    for method in METHODS:
        res = mann_whitney(A, B, method=method)
        assert 0 < res.p_value <= 1 and res.method in {"exact", "permutation", "asymptotic"}
    assert mann_whitney(A, B, method="permutation").p_value == pytest.approx(mann_whitney(A, B).p_value)
    with pytest.raises(InputError, match="unknown method"):
        mann_whitney(A, B, method="fisher")
    with pytest.raises(InputError, match="unknown method"):
        wilcoxon_paired(A, B, method="fisher")
    # infinite values are ranked, as scipy does, rather than rejected
    with np.errstate(invalid="ignore"):  # the SEM of a sample with inf
        res = mann_whitney(np.append(A, np.inf), B)
    assert res.p_value == pytest.approx(sps.mannwhitneyu(np.append(A, np.inf), B, method="exact").pvalue)


def test_mann_whitney_drops_nans_and_says_so() -> None:
    a = np.append(A, [np.nan, np.nan])
    res = mann_whitney(a, B)
    ref = sps.mannwhitneyu(A, B, alternative="two-sided")
    assert res.p_value == pytest.approx(ref.pvalue) and res.n_a == A.size
    assert "2 NaN values dropped" in (res.reason or "")


def test_test_result_fields() -> None:
    fields = list(TestResult.__dataclass_fields__)
    assert fields == [
        "n_a",
        "n_b",
        "mean_a",
        "sem_a",
        "mean_b",
        "sem_b",
        "statistic",
        "p_value",
        "effect_size",
        "reason",
        "method",
        "p_se",
    ]
    d = mann_whitney(A, B).to_dict()
    assert set(d) == set(fields)
    assert d["method"] == "exact" and d["p_se"] == 0.0
    # the new fields have defaults, so positional construction with 10 fields still works
    old = TestResult(2, 2, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5, 0.0, None)
    assert old.method == "" and old.p_se == 0.0


# --- Wilcoxon ---------------------------------------------------------------------------------


def test_wilcoxon_matches_scipy_and_effect_by_hand() -> None:
    a = np.array([1.0, 2.5, 3.0, 4.2, 5.0, 6.1])
    b = np.array([0.5, 2.0, 3.5, 3.0, 4.0, 5.0])
    res = wilcoxon_paired(a, b)
    # tied |d|: the default is the exact distribution over all 2^6 sign patterns given the ties,
    # so the reference is scipy's permutation method with full enumeration (64 < n_resamples)
    ref = sps.wilcoxon(a - b, method=sps.PermutationMethod(n_resamples=10**5))
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12) and res.method == "permutation"
    assert res.p_value == pytest.approx(2 * 4 / 64)  # R− ≤ 2: no negative, or one of the three 0.5s
    asym = wilcoxon_paired(a, b, method="asymptotic")  # normal approximation, continuity-corrected
    ref = sps.wilcoxon(a - b, method="asymptotic", correction=True)
    assert asym.p_value == pytest.approx(ref.pvalue, rel=1e-12) and asym.statistic == res.statistic
    # d = 0.5, 0.5, -0.5, 1.2, 1.0, 1.1 -> |d| ranks: 2, 2, 2, 6, 4, 5 ; R- = 2, R+ = 19
    assert res.effect_size == pytest.approx((19 - 2) / 21)
    assert wilcoxon_paired(b, a).effect_size == pytest.approx(-(19 - 2) / 21)


def test_wilcoxon_exact_without_ties() -> None:
    a = np.array([1.0, 2.5, 3.0, 4.2, 5.0, 6.1, 7.0])
    b = np.array([0.9, 2.2, 3.5, 3.6, 4.2, 5.2, 5.5])
    res = wilcoxon_paired(a, b)
    ref = sps.wilcoxon(a - b, method="exact")
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12) and res.statistic == ref.statistic
    assert res.method == "exact" and res.p_se == 0.0
    # 20 pairs without ties: still exact (scipy's own default too, below 50 pairs)
    rng = np.random.default_rng(11)
    a20, b20 = rng.normal(0.4, 1, 20), rng.normal(0, 1, 20)
    ref = sps.wilcoxon(a20 - b20, method="exact")
    assert wilcoxon_paired(a20, b20).p_value == pytest.approx(ref.pvalue, rel=1e-12)


def test_wilcoxon_zero_differences_discarded() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    b = np.array([1.0, 1.0, 1.5, 2.0, 2.0, 1.5])
    res = wilcoxon_paired(a, b)  # d = 0, 1, 1.5, 2, 3, 4.5: the zero is discarded, no ties
    assert res.p_value == pytest.approx(sps.wilcoxon((a - b)[1:], method="exact").pvalue)
    assert res.effect_size == 1.0


def test_wilcoxon_degenerate() -> None:
    res = wilcoxon_paired([0.3, 0.4, 0.5], [0.3, 0.4, 0.5])
    assert math.isnan(res.p_value) and "all differences zero" in (res.reason or "")
    assert not res.significant()
    res = wilcoxon_paired([0.3], [0.2])
    assert math.isnan(res.p_value) and "n < 2" in (res.reason or "")
    res = wilcoxon_paired([0.3, np.nan, 0.5, 0.6], [0.2, 0.1, np.nan, 0.1])
    assert res.n_a == 2 and "2 pairs with NaN dropped" in (res.reason or "")
    with pytest.raises(InputError, match="equal length"):
        wilcoxon_paired([1.0, 2.0], [1.0, 2.0, 3.0])


# --- corrections ------------------------------------------------------------------------------


def holm_loop(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


def bh_loop(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    running = 1.0
    for k in range(m - 1, -1, -1):
        i = order[k]
        running = min(running, m * p[i] / (k + 1))
        out[i] = min(1.0, running)
    return out


def test_holm_and_bh_hand_values() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02], atol=1e-15)
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.02, 0.04, 0.04, 0.02], atol=1e-15)
    np.testing.assert_array_equal(adjust_pvalues(p, "none"), p)
    np.testing.assert_allclose(adjust_pvalues([0.5, 0.9], "holm"), [1.0, 1.0])


@pytest.mark.parametrize("seed", range(5))
def test_corrections_match_loops(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, size=17)
    p[3] = p[7]  # a tie
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), holm_loop(list(p)), atol=1e-14)
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), bh_loop(list(p)), atol=1e-14)
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), sps.false_discovery_control(p), atol=1e-15)


def test_corrections_keep_nan_out_of_the_family() -> None:
    p = [np.nan, 0.01, 0.04, np.nan]
    holm = adjust_pvalues(p, "holm")
    assert math.isnan(holm[0]) and math.isnan(holm[3])
    np.testing.assert_allclose(holm[1:3], [0.02, 0.04])
    bh = adjust_pvalues(p, "bh")
    np.testing.assert_allclose(bh[1:3], [0.02, 0.04])
    assert np.isnan(adjust_pvalues([np.nan, np.nan], "holm")).all()
    assert adjust_pvalues([], "bh").size == 0


def test_correction_errors() -> None:
    with pytest.raises(InputError, match="unknown correction"):
        adjust_pvalues([0.1], "bonferroni")
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        adjust_pvalues([1.2], "holm")


# --- compression bar --------------------------------------------------------------------------


def test_compression_bar() -> None:
    bar = compression_bar([0.96, 0.98], [0.01, 0.03], [0.02, 0.04])
    assert bar["agreement_score"] == pytest.approx(0.97)
    assert bar["js_score"] == pytest.approx(1 - 0.02 / math.log(2))
    assert bar["ad_score"] == pytest.approx(1 - 0.03 / math.sqrt(2))
    assert bar["agreement_pass"] and bar["js_pass"] and bar["ad_pass"] and bar["compresses"]
    bar = compression_bar([0.90, 0.92], [0.01, 0.03], [0.02, 0.04])
    assert not bar["agreement_pass"] and bar["js_pass"] and not bar["compresses"]
    bar = compression_bar([0.99], [0.2], [0.01])
    assert not bar["js_pass"] and not bar["compresses"]
    bar = compression_bar([0.99], [0.001], [0.2])
    assert not bar["ad_pass"] and not bar["compresses"]
    bar = compression_bar([np.nan], [0.001], [0.01])
    assert not bar["testable"] and not bar["compresses"]
    assert compression_bar([0.9], [0.01], [0.01], threshold=0.85)["compresses"]
