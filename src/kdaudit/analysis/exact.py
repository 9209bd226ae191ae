"""Exact and permutation p-values of rank tests for small samples (pure numpy / scipy).

kdaudit decides verdicts from 5–20 per-seed values per group, where normal approximations are
poor and ties are common. This module gives two-sided p-values of the Mann–Whitney /
Wilcoxon rank-sum test (:func:`rank_sum_pvalue`), the Wilcoxon signed-rank test
(:func:`signed_rank_pvalue`) and Spearman's rank correlation (:func:`spearman_test`), and the
smallest p-value a design can reach (:func:`min_pvalue_rank_sum`,
:func:`min_pvalue_signed_rank`).

Methods (the ``method`` argument; :data:`METHODS`)
--------------------------------------------------
``"exact"``
    The exact null distribution of the rank statistic, always by enumeration, never by
    Monte-Carlo. Without ties it equals scipy's exact p (``mannwhitneyu(..., method="exact")``,
    ``wilcoxon(..., method="exact")``). With ties it is the exact distribution *conditional on
    the tie pattern*, i.e. the same as enumerating every split of the pooled values into groups
    of sizes n_a and n_b (rank sum) or every one of the 2^n sign patterns (signed rank). Both
    are computed by dynamic programming over the doubled (hence integer) mid-ranks, divided by
    their greatest common divisor. A table larger than :data:`EXACT_MAX_CELLS` cells raises
    :class:`~kdaudit.errors.InputError` (use ``"permutation"`` or ``"asymptotic"``).
    Spearman: full enumeration of the n! permutations of y against x, for n ≤ 9 only
    (n! ≤ 362,880); a larger n raises :class:`~kdaudit.errors.InputError`.
``"permutation"``
    The permutation distribution of the rank statistic. When the dynamic programme's work
    (table cells × number of values) is at most :data:`ENUMERATION_CAP` (2·10⁸ cell updates,
    at most about 0.1 s), it is enumerated exactly as for ``"exact"`` and the result says
    ``method="permutation"``, ``se=0``. For the rank sum the cap allows balanced samples up to
    N = n_a + n_b ≈ 180 values without ties and ≥ 150 with any ties (the worst case being
    half-integer mid-ranks); for the signed rank n ≈ 740 differences without ties and ≥ 585
    with ties — far beyond kdaudit's 5–20 seeds per group. Otherwise it is a
    seeded Monte-Carlo (``numpy.random.default_rng(seed)``, ``n_resamples`` random
    permutations / sign patterns) reported as ``method="monte-carlo"``; see *Monte-Carlo*.
    Spearman: full enumeration for n ≤ 9, Monte-Carlo above.
``"asymptotic"``
    scipy's normal approximation with tie and continuity correction:
    ``mannwhitneyu(..., method="asymptotic", use_continuity=True)``,
    ``wilcoxon(..., method="asymptotic", correction=True)``; Spearman: the t-approximation of
    :func:`scipy.stats.spearmanr`. ``se`` is NaN.
``"auto"`` (the default)
    No ties → ``"exact"``; ties → ``"permutation"``. When the enumeration would exceed
    :data:`ENUMERATION_CAP` (only for samples far larger than kdaudit's), ``"auto"`` falls back
    to the Monte-Carlo of ``"permutation"`` even without ties. Spearman: enumeration for
    n ≤ 9 (reported ``"exact"`` without ties, ``"permutation"`` with ties), Monte-Carlo above.

Two-sided p-values
------------------
Rank sum and signed rank follow scipy's convention,
p = min(1, 2·min(P(S ≥ s_obs), P(S ≤ s_obs))) under the null distribution of S, with S the sum
of the doubled mid-ranks of sample a (rank sum) or of the |d| with d > 0 (R+, signed rank).
Statistics are compared in exact integer arithmetic (doubled mid-ranks are integers), never
with a float tolerance. Probabilities are float64 (counts such as C(60, 30) exceed 2^53; the
relative precision is ample) and are rescaled during the recursion, so they never overflow.

Spearman's two-sided p is P(|ρ| ≥ |ρ_obs|). ρ is the Pearson correlation of the average ranks;
since its denominator does not change under permutation, |ρ| is compared through the integer
statistic T = Σ (2r_x − (n+1))(2r_y − (n+1)) of doubled ranks, i.e. exactly — no float
tolerance is needed even with ties (the reference 1e-12 tolerance on |ρ| gives the same counts).
A constant x or y (or fewer than 2 pairs) gives ρ = p = NaN, without an exception.

Monte-Carlo
-----------
``n_resamples`` = R random permutations (sign patterns) from ``default_rng(seed)``; the same
seed gives the same p. Each tail is estimated as (k + 1)/(R + 1), k counting the resamples at
least as extreme as observed in that tail, so p is never 0. Rank tests: p = min(1, 2·t) with t
the smaller tail estimate and ``se`` = 2·sqrt(t(1 − t)/R). Spearman: p = (k + 1)/(R + 1) with k
counting |T| ≥ |T_obs|, and ``se`` = sqrt(p(1 − p)/R). ``se`` is 0.0 for exact results
(including full enumeration) and NaN for asymptotic ones.

Inputs are 1-D sequences of finite numbers; an unknown method, a non-finite value, a 2-D input,
an empty sample, or a zero difference in :func:`signed_rank_pvalue` raises
:class:`~kdaudit.errors.InputError` with one line.

Example
-------
>>> rank_sum_pvalue([1, 2, 3], [4, 5, 6])
PValue(p=0.1, method='exact', se=0.0)
>>> spearman_test([1, 2, 3], [2, 4, 9])[1].p  # 2 of the 3! orderings have |ρ| = 1
0.3333333333333333
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from ..errors import InputError

__all__ = [
    "ENUMERATION_CAP",
    "EXACT_MAX_CELLS",
    "METHODS",
    "PValue",
    "min_pvalue_rank_sum",
    "min_pvalue_signed_rank",
    "rank_sum_pvalue",
    "signed_rank_pvalue",
    "spearman_test",
]

METHODS = ("auto", "exact", "asymptotic", "permutation")
"""The methods every function here accepts (see the module docstring)."""

ENUMERATION_CAP = 200_000_000
"""Most dynamic-programme work (table cells × values, ≈ 0.1 s at the cap) that ``"permutation"``
and ``"auto"`` enumerate; above it they use Monte-Carlo. Read at call time, so tests may lower it."""

EXACT_MAX_CELLS = 50_000_000
"""Largest dynamic-programme table (≈ 400 MB of float64) that ``"exact"`` builds."""

SPEARMAN_MAX_ENUM = 9
"""Largest n for which Spearman's test enumerates all n! permutations (9! = 362,880)."""

_CHUNK = 8192  # Monte-Carlo resamples per vectorised batch


@dataclass(frozen=True)
class PValue:
    """A two-sided p-value and how it was obtained.

    ``method`` is what was actually used: ``"exact"``, ``"permutation"`` (full enumeration of
    the conditional permutation distribution), ``"monte-carlo"`` (seeded random permutations)
    or ``"asymptotic"``. ``se`` is the Monte-Carlo standard error of ``p``: 0.0 for exact
    results and full enumeration, NaN for asymptotic ones.
    """

    p: float
    method: str
    se: float


# --- validation --------------------------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose one of {', '.join(METHODS)})")


def _check_resampling(seed: object, n_resamples: object) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise InputError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")


def as_1d(x: ArrayLike, name: str) -> NDArray[np.float64]:
    """``x`` as a flat float64 array; :class:`~kdaudit.errors.InputError` for non-numbers or 2-D input."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: values must be numbers ({exc})") from None
    if arr.ndim > 1:
        raise InputError(f"{name}: expected a 1-D sequence of values, got shape {arr.shape}")
    return arr.reshape(-1)


def _sample(x: ArrayLike, name: str, *, allow_empty: bool = False) -> NDArray[np.float64]:
    arr = as_1d(x, name)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: values must be finite (found NaN or ±inf)")
    if arr.size == 0 and not allow_empty:
        raise InputError(f"{name}: need at least 1 value")
    return arr


def _doubled_ranks(x: NDArray[np.float64]) -> NDArray[np.int64]:
    """Twice the mid-ranks (average ranks for ties) of ``x``, as exact integers."""
    lo = sps.rankdata(x, method="min").astype(np.int64)
    hi = sps.rankdata(x, method="max").astype(np.int64)
    return lo + hi


def _two_sided(dist: NDArray[np.float64], s: int) -> float:
    """min(1, 2·min(P(S ≥ s), P(S ≤ s))) for a distribution over S = 0, 1, …"""
    total = dist.sum()
    le = dist[: s + 1].sum() / total
    ge = dist[s:].sum() / total
    return float(min(1.0, 2.0 * min(le, ge)))


# --- rank sum ----------------------------------------------------------------------------------


def _rank_sum_plan(r: NDArray[np.int64], n: int) -> tuple[NDArray[np.int64], int, int, int]:
    """Weights (doubled ranks over their gcd g), g, the table width and the work of the DP."""
    g = int(np.gcd.reduce(r))
    w = r // g
    width = int(np.sort(w)[::-1][:n].sum()) + 1
    return w, g, width, (n + 1) * width * int(r.size)


def _rank_sum_dist(w: NDArray[np.int64], n: int, width: int) -> NDArray[np.float64]:
    """Relative frequencies of the sum of ``n`` of the weights ``w`` over all C(N, n) subsets.

    ``dp[k, s]`` counts the subsets of the values seen so far with k members summing to s, up to
    a common factor: counts at most double per value, and every 512 values the table is divided
    by its maximum, so it never overflows.
    """
    dp = np.zeros((n + 1, width))
    dp[0, 0] = 1.0
    for i, wi in enumerate(w.tolist()):
        top = min(i + 1, n)  # rows above can't be reached yet
        dp[1 : top + 1, wi:] += dp[:top, : width - wi]  # numpy buffers the overlap
        if i % 512 == 511:
            dp /= dp.max()
    return dp[n]


def _rank_sum_mc(r: NDArray[np.int64], n: int, s_obs: int, seed: int, n_resamples: int) -> PValue:
    rng = np.random.default_rng(seed)
    k_le = k_ge = 0
    done = 0
    while done < n_resamples:
        m = min(_CHUNK, n_resamples - done)
        perm = rng.permuted(np.broadcast_to(r, (m, r.size)), axis=1)
        s = perm[:, :n].sum(axis=1)
        k_le += int(np.count_nonzero(s <= s_obs))
        k_ge += int(np.count_nonzero(s >= s_obs))
        done += m
    return _mc_two_tails(k_le, k_ge, n_resamples)


def _mc_two_tails(k_le: int, k_ge: int, n_resamples: int) -> PValue:
    t = (min(k_le, k_ge) + 1) / (n_resamples + 1)
    return PValue(min(1.0, 2.0 * t), "monte-carlo", 2.0 * math.sqrt(t * (1.0 - t) / n_resamples))


def rank_sum_pvalue(
    a: ArrayLike, b: ArrayLike, method: str = "auto", *, seed: int = 0, n_resamples: int = 100_000
) -> PValue:
    """Two-sided Mann–Whitney / Wilcoxon rank-sum p-value of samples ``a`` and ``b``.

    Parameters
    ----------
    a, b : 1-D sequences of finite numbers, each with at least 1 value.
    method : one of :data:`METHODS` (see the module docstring).
    seed, n_resamples : the Monte-Carlo's generator seed and number of random permutations.

    Examples
    --------
    >>> rank_sum_pvalue([1, 2, 3, 4], [5, 6, 7, 8]).p  # 2 / C(8, 4)
    0.02857142857142857
    >>> rank_sum_pvalue([1, 2, 2, 3], [2, 3, 4, 5])  # ties: enumeration of all 70 splits
    PValue(p=0.2, method='permutation', se=0.0)
    """
    _check_method(method)
    _check_resampling(seed, n_resamples)
    va, vb = _sample(a, "a"), _sample(b, "b")
    if method == "asymptotic":
        res = sps.mannwhitneyu(va, vb, alternative="two-sided", method="asymptotic", use_continuity=True)
        return PValue(float(res.pvalue), "asymptotic", math.nan)
    pooled = np.concatenate([va, vb])
    r = _doubled_ranks(pooled)
    # track the smaller group; the two-sided p is the same for either group
    if va.size <= vb.size:
        n, rs = int(va.size), r
    else:
        n, rs = int(vb.size), np.concatenate([r[va.size :], r[: va.size]])
    ties = np.unique(pooled).size < pooled.size
    w, g, width, work = _rank_sum_plan(rs, n)
    s_obs = int(rs[:n].sum()) // g
    if method == "exact":
        if (n + 1) * width > EXACT_MAX_CELLS:
            raise InputError(
                f"exact rank-sum p for n_a = {va.size}, n_b = {vb.size} needs a table of "
                f"{(n + 1) * width} cells (limit {EXACT_MAX_CELLS}); use method 'permutation' or 'asymptotic'"
            )
        return PValue(_two_sided(_rank_sum_dist(w, n, width), s_obs), "exact", 0.0)
    if work <= ENUMERATION_CAP:
        label = "exact" if (method == "auto" and not ties) else "permutation"
        return PValue(_two_sided(_rank_sum_dist(w, n, width), s_obs), label, 0.0)
    return _rank_sum_mc(w, n, s_obs, seed, n_resamples)


# --- signed rank -------------------------------------------------------------------------------


def _signed_rank_dist(w: NDArray[np.int64], width: int) -> NDArray[np.float64]:
    """Probabilities of R+ (in units of the weights) over the 2^n equally likely sign patterns."""
    dp = np.zeros(width)
    dp[0] = 1.0
    reach = 1  # sums 0 .. reach-1 may be non-zero
    for wi in w.tolist():
        new_reach = reach + wi
        dp[wi:new_reach] += dp[:reach]  # numpy buffers the overlap
        dp[:new_reach] *= 0.5
        reach = new_reach
    return dp


def signed_rank_pvalue(d: ArrayLike, method: str = "auto", *, seed: int = 0, n_resamples: int = 100_000) -> PValue:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences ``d``.

    The statistic is R+ = the sum of the mid-ranks of |d| over d > 0; under the null each of the
    2^n sign patterns is equally likely. Zero differences must already be removed (the
    ``"wilcox"`` convention): a zero, or an empty ``d``, raises :class:`~kdaudit.errors.InputError`.

    Examples
    --------
    >>> signed_rank_pvalue([0.5, 1.0, 1.5, 2.0, 2.5]).p  # all positive: 2 / 2^5
    0.0625
    """
    _check_method(method)
    _check_resampling(seed, n_resamples)
    v = _sample(d, "d")
    if np.any(v == 0):
        raise InputError("d: zero differences must be removed before the signed-rank test")
    if method == "asymptotic":
        res = sps.wilcoxon(v, alternative="two-sided", zero_method="wilcox", correction=True, method="asymptotic")
        return PValue(float(res.pvalue), "asymptotic", math.nan)
    absd = np.abs(v)
    r = _doubled_ranks(absd)
    g = int(np.gcd.reduce(r))
    w = r // g
    width = int(w.sum()) + 1
    s_obs = int(w[v > 0].sum())
    ties = np.unique(absd).size < absd.size
    if method == "exact":
        if width > EXACT_MAX_CELLS:
            raise InputError(
                f"exact signed-rank p for n = {v.size} needs a table of {width} cells "
                f"(limit {EXACT_MAX_CELLS}); use method 'permutation' or 'asymptotic'"
            )
        return PValue(_two_sided(_signed_rank_dist(w, width), s_obs), "exact", 0.0)
    if width * v.size <= ENUMERATION_CAP:
        label = "exact" if (method == "auto" and not ties) else "permutation"
        return PValue(_two_sided(_signed_rank_dist(w, width), s_obs), label, 0.0)
    rng = np.random.default_rng(seed)
    k_le = k_ge = 0
    done = 0
    while done < n_resamples:
        m = min(_CHUNK, n_resamples - done)
        signs = rng.integers(0, 2, size=(m, w.size), dtype=np.int64)
        s = signs @ w
        k_le += int(np.count_nonzero(s <= s_obs))
        k_ge += int(np.count_nonzero(s >= s_obs))
        done += m
    return _mc_two_tails(k_le, k_ge, n_resamples)


# --- Spearman ----------------------------------------------------------------------------------


@lru_cache(maxsize=SPEARMAN_MAX_ENUM + 1)
def _permutations(n: int) -> NDArray[np.int8]:
    """All n! permutations of range(n), one per row (read-only, cached).

    Built by inserting k − 1 at every position of each permutation of range(k − 1).
    """
    perms = np.zeros((1, 0), dtype=np.int8)
    for k in range(1, n + 1):
        m = perms.shape[0]
        out = np.empty((m * k, k), dtype=np.int8)
        for j in range(k):
            block = out[j * m : (j + 1) * m]
            block[:, :j] = perms[:, :j]
            block[:, j] = k - 1
            block[:, j + 1 :] = perms[:, j:]
        perms = out
    perms.flags.writeable = False
    return perms


def spearman_test(
    x: ArrayLike, y: ArrayLike, method: str = "auto", *, seed: int = 0, n_resamples: int = 100_000
) -> tuple[float, PValue]:
    """Spearman's ρ (average ranks for ties) of paired samples and its two-sided p.

    ρ is the Pearson correlation of the ranks. A constant ``x`` or ``y``, or fewer than 2
    pairs, gives ρ = p = NaN (no exception; ``se`` NaN, ``method`` ``"asymptotic"`` when asked
    for, else ``"exact"``). See the module docstring for the methods.

    Examples
    --------
    >>> rho, p = spearman_test([1, 2, 3], [1, 2, 3])
    >>> rho, p.p, p.method  # scipy.stats.spearmanr says p = 0.0 here
    (1.0, 0.3333333333333333, 'exact')
    """
    _check_method(method)
    _check_resampling(seed, n_resamples)
    xa, ya = _sample(x, "x", allow_empty=True), _sample(y, "y", allow_empty=True)
    if xa.size != ya.size:
        raise InputError(f"x, y: need samples of equal length, got {xa.size} and {ya.size}")
    n = int(xa.size)
    if n < 2 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        nan_method = "asymptotic" if method == "asymptotic" else "exact"
        return math.nan, PValue(math.nan, nan_method, math.nan)
    cx = _doubled_ranks(xa) - (n + 1)  # centred doubled ranks: integers summing to 0
    cy = _doubled_ranks(ya) - (n + 1)
    t_obs = int(cx @ cy)
    rho = float(t_obs / math.sqrt(float(cx @ cx) * float(cy @ cy)))
    rho = max(-1.0, min(1.0, rho))
    if method == "asymptotic":
        with np.errstate(divide="ignore", invalid="ignore"):
            p = float(sps.spearmanr(xa, ya).pvalue)
        return rho, PValue(p, "asymptotic", math.nan)
    ties = np.unique(xa).size < n or np.unique(ya).size < n
    if n <= SPEARMAN_MAX_ENUM:
        t = cy[_permutations(n)] @ cx
        p = np.count_nonzero(np.abs(t) >= abs(t_obs)) / t.size
        label = "exact" if method == "exact" or (method == "auto" and not ties) else "permutation"
        return rho, PValue(float(p), label, 0.0)
    if method == "exact":
        raise InputError(
            f"exact Spearman p enumerates n! permutations and needs n ≤ {SPEARMAN_MAX_ENUM}, "
            f"got n = {n}; use method 'permutation' or 'asymptotic'"
        )
    rng = np.random.default_rng(seed)
    k = 0
    done = 0
    while done < n_resamples:
        m = min(_CHUNK, n_resamples - done)
        perm = rng.permuted(np.broadcast_to(cy, (m, n)), axis=1)
        k += int(np.count_nonzero(np.abs(perm @ cx) >= abs(t_obs)))
        done += m
    p = (k + 1) / (n_resamples + 1)
    return rho, PValue(p, "monte-carlo", math.sqrt(p * (1.0 - p) / n_resamples))


# --- smallest attainable p ---------------------------------------------------------------------


def _check_size(n: object, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def min_pvalue_rank_sum(n_a: int, n_b: int, method: str = "auto") -> float:
    """The smallest two-sided rank-sum p attainable with n_a and n_b values.

    That is the p of perfectly separated samples without ties: 2 / C(n_a + n_b, n_a), capped
    at 1, for ``"exact"``, ``"permutation"`` and ``"auto"``; scipy's asymptotic p of such
    samples for ``"asymptotic"``.

    >>> min_pvalue_rank_sum(3, 3)
    0.1
    """
    _check_method(method)
    n_a, n_b = _check_size(n_a, "n_a"), _check_size(n_b, "n_b")
    if method == "asymptotic":
        a = np.arange(n_a, dtype=np.float64)
        return float(
            sps.mannwhitneyu(
                a,
                a.size + np.arange(n_b, dtype=np.float64),
                alternative="two-sided",
                method="asymptotic",
                use_continuity=True,
            ).pvalue
        )
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def min_pvalue_signed_rank(n: int, method: str = "auto") -> float:
    """The smallest two-sided signed-rank p attainable with n non-zero differences.

    That is the p of n differences of one sign without ties: 2 / 2^n, capped at 1, for
    ``"exact"``, ``"permutation"`` and ``"auto"``; scipy's asymptotic p of such differences for
    ``"asymptotic"``.

    >>> min_pvalue_signed_rank(5)
    0.0625
    """
    _check_method(method)
    n = _check_size(n, "n")
    if method == "asymptotic":
        return signed_rank_pvalue(np.arange(1.0, n + 1.0), "asymptotic").p
    return min(1.0, 2.0 / 2.0**n)
