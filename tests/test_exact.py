"""Exact / permutation p-values of rank tests against independent references: scipy's exact
methods (no ties), brute-force enumeration with itertools and scipy.stats.rankdata, and
scipy.stats.permutation_test with full enumeration (ties)."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from kdaudit.analysis import exact
from kdaudit.analysis.exact import (
    METHODS,
    PValue,
    min_pvalue_rank_sum,
    min_pvalue_signed_rank,
    rank_sum_pvalue,
    signed_rank_pvalue,
    spearman_test,
)
from kdaudit.errors import InputError

# --- brute-force references -------------------------------------------------------------------


def two_sided(null: np.ndarray, obs: float) -> float:
    """scipy's convention: min(1, 2·min(P(S ≥ s), P(S ≤ s))). The statistics here are sums of
    half-integers, exactly representable, so exact comparisons are safe."""
    return min(1.0, 2.0 * min(np.mean(null >= obs), np.mean(null <= obs)))


def brute_rank_sum_p(a, b) -> float:
    """Every one of the C(N, n_a) splits of the pooled values, rank sum of the first group."""
    pooled = np.concatenate([a, b]).astype(float)
    ranks = sps.rankdata(pooled)
    n_a = len(a)
    null = np.array([ranks[list(c)].sum() for c in itertools.combinations(range(pooled.size), n_a)])
    return two_sided(null, ranks[:n_a].sum())


def brute_signed_rank_p(d) -> float:
    """Every one of the 2^n sign patterns of |d|, R+ = sum of the ranks of the positive ones."""
    d = np.asarray(d, dtype=float)
    ranks = sps.rankdata(np.abs(d))
    null = np.array([ranks[np.array(s, dtype=bool)].sum() for s in itertools.product([0, 1], repeat=d.size)])
    return two_sided(null, ranks[d > 0].sum())


def brute_spearman_p(x, y) -> float:
    """Every ordering of y against x; |ρ| compared with a 1e-12 tolerance (ρ is a float)."""
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    obs = abs(np.corrcoef(rx, ry)[0, 1])
    null = np.array([abs(np.corrcoef(rx, ry[list(p)])[0, 1]) for p in itertools.permutations(range(len(y)))])
    return float(np.mean(null >= obs - 1e-12))


def tied(rng: np.random.Generator, n: int, shift: float = 0.0, step: float = 0.5) -> np.ndarray:
    """n values on a coarse grid, so that ties are certain for n ≥ 6."""
    return np.round((rng.normal(shift, 1.0, n)) / step) * step


# --- no ties: scipy's exact methods -----------------------------------------------------------


def test_rank_sum_without_ties_equals_scipy_exact() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        n_a, n_b = rng.integers(2, 13, size=2)
        a, b = rng.normal(0.6, 1, n_a), rng.normal(0, 1, n_b)
        ref = sps.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue
        for method in ("auto", "exact", "permutation"):
            res = rank_sum_pvalue(a, b, method)
            assert res.p == pytest.approx(ref, rel=1e-10, abs=1e-15), (n_a, n_b, method)
            assert res.se == 0.0
        assert rank_sum_pvalue(a, b).method == "exact"
        assert rank_sum_pvalue(a, b, "permutation").method == "permutation"
        assert rank_sum_pvalue(b, a).p == pytest.approx(rank_sum_pvalue(a, b).p, rel=1e-12)


def test_rank_sum_complete_separation_and_large_counts() -> None:
    res = rank_sum_pvalue(np.arange(10.0) + 10, np.arange(10.0))
    assert res.p == pytest.approx(2 / math.comb(20, 10), rel=1e-12)
    assert res.p == pytest.approx(1.0825e-5, rel=1e-4)
    # C(60, 30) > 2^53: float64 probabilities keep the relative precision
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.5, 1, 30), rng.normal(0, 1, 30)
    assert rank_sum_pvalue(a, b).p == pytest.approx(sps.mannwhitneyu(a, b, method="exact").pvalue, rel=1e-9)
    assert rank_sum_pvalue(np.arange(30.0) + 30, np.arange(30.0)).p == pytest.approx(2 / math.comb(60, 30), rel=1e-9)


def test_signed_rank_without_ties_equals_scipy_exact() -> None:
    rng = np.random.default_rng(2)
    for n in list(range(1, 26)) + [40]:
        for _ in range(3):
            d = rng.normal(0.3, 1, n)
            ref = sps.wilcoxon(d, alternative="two-sided", method="exact").pvalue
            res = signed_rank_pvalue(d)
            assert res.p == pytest.approx(ref, rel=1e-10, abs=1e-15), n
            assert res.method == "exact" and res.se == 0.0
            assert signed_rank_pvalue(d, "permutation").p == pytest.approx(ref, rel=1e-10, abs=1e-15)


# --- ties: brute force and scipy.stats.permutation_test ---------------------------------------


def test_rank_sum_with_ties_equals_brute_force() -> None:
    rng = np.random.default_rng(3)
    cases = [([1, 2, 2, 3, 3], [1, 1, 2, 2, 3, 4]), ([0, 0, 0, 1], [0, 1, 1, 1, 1]), ([5, 5], [5, 6, 6])]
    cases += [(tied(rng, rng.integers(2, 8), 0.7), tied(rng, rng.integers(2, 8))) for _ in range(25)]
    for a, b in cases:
        pooled = np.concatenate([a, b])
        if np.unique(pooled).size == 1:
            continue
        ref = brute_rank_sum_p(a, b)
        auto, ex = rank_sum_pvalue(a, b), rank_sum_pvalue(a, b, "exact")
        assert auto.p == pytest.approx(ref, rel=1e-12) and ex.p == pytest.approx(ref, rel=1e-12), (a, b)
        ties = np.unique(pooled).size < pooled.size
        assert auto.method == ("permutation" if ties else "exact") and ex.method == "exact"
        assert auto.se == 0.0


def test_rank_sum_with_ties_equals_scipy_permutation_test() -> None:
    rng = np.random.default_rng(4)

    def rank_sum(x, y):
        return sps.rankdata(np.concatenate([x, y]))[: len(x)].sum()

    for n_a, n_b in [(4, 5), (6, 6), (5, 8), (3, 9)]:
        a, b = tied(rng, n_a, 0.8), tied(rng, n_b)
        ref = sps.permutation_test(
            (a, b),
            rank_sum,
            permutation_type="independent",
            vectorized=False,
            n_resamples=np.inf,
            alternative="two-sided",
        ).pvalue
        assert rank_sum_pvalue(a, b).p == pytest.approx(ref, rel=1e-12)


def test_signed_rank_with_ties_equals_brute_force_and_permutation_test() -> None:
    rng = np.random.default_rng(5)
    cases = [[0.5, 0.5, -0.5, 1.2, 1.0, 1.1], [1, -1, 1, 1, 2, -2, 2, 2], [3, 3, 3], [-1, -1]]
    cases += [tied(rng, rng.integers(2, 11), 0.4) for _ in range(20)]

    def r_plus(d):
        return sps.rankdata(np.abs(d))[d > 0].sum()

    for k, d in enumerate(cases):
        d = np.asarray(d, dtype=float)
        d = d[d != 0]
        if d.size == 0:
            continue
        ref = brute_signed_rank_p(d)
        assert signed_rank_pvalue(d).p == pytest.approx(ref, rel=1e-12), d
        assert signed_rank_pvalue(d, "exact").p == pytest.approx(ref, rel=1e-12)
        if k < 6:
            perm = sps.permutation_test(
                (d,), r_plus, permutation_type="samples", vectorized=False, n_resamples=np.inf, alternative="two-sided"
            ).pvalue
            assert signed_rank_pvalue(d).p == pytest.approx(perm, rel=1e-12)
    assert signed_rank_pvalue([0.5, 0.5, -0.5, 1.2, 1.0, 1.1]) == PValue(0.125, "permutation", 0.0)


# --- Monte-Carlo ------------------------------------------------------------------------------


def test_monte_carlo_beyond_the_cap_is_seeded_and_close_to_exact() -> None:
    rng = np.random.default_rng(6)
    a, b = tied(rng, 80, 0.25), tied(rng, 80)  # ties: enumeration work > ENUMERATION_CAP
    mc = rank_sum_pvalue(a, b, "permutation", seed=3, n_resamples=20_000)
    assert mc.method == "monte-carlo" and mc.se > 0
    assert mc == rank_sum_pvalue(a, b, seed=3, n_resamples=20_000)  # auto: same path, same seed
    assert rank_sum_pvalue(a, b, seed=4, n_resamples=20_000).p != mc.p
    ex = rank_sum_pvalue(a, b, "exact")  # "exact" always enumerates
    assert ex.method == "exact" and abs(mc.p - ex.p) <= 4 * mc.se
    assert 0.001 < ex.p < 0.9  # a case where the Monte-Carlo has something to estimate


def test_monte_carlo_with_a_lowered_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    a, b = tied(rng, 7, 0.8), tied(rng, 8)
    d = tied(rng, 12, 0.5)
    d = d[d != 0]
    ref_rs, ref_sr = rank_sum_pvalue(a, b).p, signed_rank_pvalue(d).p
    monkeypatch.setattr(exact, "ENUMERATION_CAP", 10)
    for res, ref in [
        (rank_sum_pvalue(a, b, seed=1, n_resamples=20_000), ref_rs),
        (signed_rank_pvalue(d, seed=1, n_resamples=20_000), ref_sr),
    ]:
        assert res.method == "monte-carlo" and res.se > 0
        assert abs(res.p - ref) <= 4 * res.se, (res, ref)
    assert signed_rank_pvalue(d, seed=1, n_resamples=20_000) == signed_rank_pvalue(d, seed=1, n_resamples=20_000)
    assert rank_sum_pvalue(a, b, "exact").p == ref_rs  # "exact" ignores the cap
    # the p is (k + 1) / (R + 1) per tail: never 0, even for complete separation
    sep = rank_sum_pvalue(np.arange(10.0) + 10, np.arange(10.0), "permutation", n_resamples=999)
    assert sep.p == pytest.approx(2 / 1000) and sep.se > 0


# --- Spearman ---------------------------------------------------------------------------------


def test_spearman_three_points_in_order() -> None:
    rho, p = spearman_test([1.0, 2.0, 3.0], [10.0, 20.0, 35.0])
    assert rho == 1.0 and p.p == 1 / 3 and p.method == "exact" and p.se == 0.0
    assert sps.spearmanr([1.0, 2.0, 3.0], [10.0, 20.0, 35.0]).pvalue == pytest.approx(0.0, abs=1e-12)
    rho, p = spearman_test([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert rho == -1.0 and p.p == 1 / 3


@pytest.mark.parametrize("n", [5, 6, 7])
def test_spearman_equals_enumeration(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = x + rng.normal(0, 0.8, n)
    xt, yt = np.round(x * 2) / 2, np.round(y)  # ties in both
    xt[0] = xt[1]
    for xs, ys, label in [(x, y, "exact"), (x, yt, "permutation"), (xt, yt, "permutation")]:
        rho, p = spearman_test(xs, ys)
        assert rho == pytest.approx(sps.spearmanr(xs, ys).statistic, rel=1e-12, abs=1e-15)
        assert p.p == pytest.approx(brute_spearman_p(xs, ys), rel=1e-12)
        assert p.method == label and p.se == 0.0
        assert spearman_test(xs, ys, "exact")[1].p == p.p


def test_spearman_monte_carlo_and_asymptotic(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=7), rng.normal(size=7)
    y[:2] = y[2]
    ref = brute_spearman_p(x, y)
    monkeypatch.setattr(exact, "SPEARMAN_MAX_ENUM", 5)
    rho, mc = spearman_test(x, y, seed=2, n_resamples=20_000)
    assert mc.method == "monte-carlo" and mc.se > 0 and abs(mc.p - ref) <= 4 * mc.se
    assert spearman_test(x, y, seed=2, n_resamples=20_000) == (rho, mc)
    monkeypatch.undo()
    x, y = rng.normal(size=25), rng.normal(size=25)
    y = y + 0.5 * x
    rho, mc = spearman_test(x, y)
    assert mc.method == "monte-carlo" and mc.p == spearman_test(x, y)[1].p
    ref = sps.spearmanr(x, y)
    rho_a, asym = spearman_test(x, y, "asymptotic")
    assert asym.p == pytest.approx(ref.pvalue, rel=1e-12) and asym.method == "asymptotic"
    assert math.isnan(asym.se) and rho == rho_a == pytest.approx(ref.statistic, rel=1e-12)
    assert abs(mc.p - ref.pvalue) < 0.02  # 25 pairs: the t-approximation is close
    with pytest.raises(InputError, match="n ≤ 9"):
        spearman_test(x, y, "exact")


def test_spearman_constant_is_nan() -> None:
    for method in METHODS:
        for x, y in [([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), ([1.0, 2.0, 3.0, 4.0], [2.0] * 4), ([1.0], [2.0]), ([], [])]:
            rho, p = spearman_test(x, y, method)
            assert math.isnan(rho) and math.isnan(p.p)
    with pytest.raises(InputError, match="equal length"):
        spearman_test([1.0, 2.0], [1.0, 2.0, 3.0])


# --- smallest p -------------------------------------------------------------------------------


def test_min_pvalues_match_closed_forms_and_separated_samples() -> None:
    for n_a, n_b in [(1, 1), (2, 3), (5, 5), (10, 10), (8, 12), (20, 20)]:
        closed = min(1.0, 2 / math.comb(n_a + n_b, n_a))
        a, b = np.arange(n_a) + 100.0, np.arange(float(n_b))
        for method in ("auto", "exact", "permutation"):
            assert min_pvalue_rank_sum(n_a, n_b, method) == pytest.approx(closed, rel=1e-12)
        assert rank_sum_pvalue(a, b).p == pytest.approx(closed, rel=1e-9)
        asym = sps.mannwhitneyu(a, b, method="asymptotic").pvalue
        assert min_pvalue_rank_sum(n_a, n_b, "asymptotic") == pytest.approx(asym, rel=1e-12)
        assert min_pvalue_rank_sum(n_a, n_b, "asymptotic") == pytest.approx(rank_sum_pvalue(a, b, "asymptotic").p)
    assert min_pvalue_rank_sum(10, 10) == pytest.approx(1.0825e-5, rel=1e-4)
    for n in [1, 2, 5, 10, 20]:
        closed = min(1.0, 2 / 2**n)
        d = -np.arange(1.0, n + 1)
        assert min_pvalue_signed_rank(n) == closed == min_pvalue_signed_rank(n, "exact")
        assert signed_rank_pvalue(d).p == pytest.approx(closed, rel=1e-12)
        asym = sps.wilcoxon(d, method="asymptotic", correction=True).pvalue
        assert min_pvalue_signed_rank(n, "asymptotic") == pytest.approx(asym, rel=1e-12)
    with pytest.raises(InputError):
        min_pvalue_rank_sum(0, 3)
    with pytest.raises(InputError, match="unknown method"):
        min_pvalue_signed_rank(5, "bootstrap")


# --- asymptotic -------------------------------------------------------------------------------


def test_asymptotic_equals_scipy() -> None:
    rng = np.random.default_rng(9)
    for a, b in [(rng.normal(0.5, 1, 12), rng.normal(0, 1, 9)), (tied(rng, 10, 0.5), tied(rng, 11))]:
        res = rank_sum_pvalue(a, b, "asymptotic")
        ref = sps.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
        assert res.p == pytest.approx(ref.pvalue, rel=1e-12) and res.method == "asymptotic" and math.isnan(res.se)
    for d in [rng.normal(0.3, 1, 15), tied(rng, 15, 0.5)]:
        d = d[d != 0]
        ref = sps.wilcoxon(d, alternative="two-sided", method="asymptotic", correction=True)
        assert signed_rank_pvalue(d, "asymptotic").p == pytest.approx(ref.pvalue, rel=1e-12)


# --- bad inputs -------------------------------------------------------------------------------


def test_bad_inputs_raise_input_error() -> None:
    cases = [
        (lambda: rank_sum_pvalue([1.0, 2.0], [3.0], "bootstrap"), "unknown method"),
        (lambda: signed_rank_pvalue([1.0, 2.0], "Exact"), "unknown method"),
        (lambda: spearman_test([1.0, 2.0], [1.0, 2.0], "kendall"), "unknown method"),
        (lambda: rank_sum_pvalue([1.0, np.nan], [3.0]), "finite"),
        (lambda: rank_sum_pvalue([1.0, 2.0], [np.inf]), "finite"),
        (lambda: signed_rank_pvalue([1.0, np.nan]), "finite"),
        (lambda: spearman_test([1.0, 2.0, np.nan], [1.0, 2.0, 3.0]), "finite"),
        (lambda: rank_sum_pvalue([[1.0, 2.0], [3.0, 4.0]], [1.0]), "1-D"),
        (lambda: signed_rank_pvalue(np.ones((2, 2))), "1-D"),
        (lambda: spearman_test(np.ones((2, 2)), np.ones((2, 2))), "1-D"),
        (lambda: signed_rank_pvalue([1.0, 0.0, -2.0]), "zero"),
        (lambda: signed_rank_pvalue([]), "at least 1"),
        (lambda: rank_sum_pvalue([], [1.0]), "at least 1"),
        (lambda: rank_sum_pvalue(["x"], [1.0]), "numbers"),
        (lambda: rank_sum_pvalue([1.0], [2.0], n_resamples=0), "n_resamples"),
    ]
    for call, match in cases:
        with pytest.raises(InputError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_docstring_examples() -> None:
    res = doctest.testmod(exact, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted >= 8
