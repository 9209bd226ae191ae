"""Statistics on per-seed metric values (PROTOCOL §5).

The tests are the two-sided Mann–Whitney U test and the paired Wilcoxon signed-rank test. Their
p-values come from :mod:`kdaudit.analysis.exact`, chosen by ``method`` (:data:`METHODS`): by
default (``"auto"``) the exact null distribution when there are no ties (equal to scipy's
``method="exact"``) and the exact permutation distribution conditional on the ties when there
are (both by enumeration, so small samples of 5–20 seeds never rely on the normal
approximation); ``"asymptotic"`` gives scipy's normal approximation with tie and continuity
correction. ``TestResult.method`` records what was used and ``TestResult.p_se`` the
Monte-Carlo standard error (0 unless the samples are far too large to enumerate).
Benjamini–Hochberg is :func:`scipy.stats.false_discovery_control`. Degenerate inputs never
raise and never look significant: they give a NaN p-value and a ``reason``.

NaN values are treated as missing: they are dropped before any computation and the drop is
recorded in ``TestResult.reason`` (the reported ``n_a`` / ``n_b`` count the values kept).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from ..errors import InputError
from . import exact
from .exact import METHODS, as_1d

__all__ = [
    "CORRECTIONS",
    "METHODS",
    "TestResult",
    "adjust_pvalues",
    "compression_bar",
    "mann_whitney",
    "mean_sem",
    "wilcoxon_paired",
]

CORRECTIONS = ("none", "holm", "bh")
"""The multiple-comparison corrections :func:`adjust_pvalues` knows."""


def _drop_nan(x: ArrayLike, name: str) -> tuple[NDArray[np.float64], int]:
    arr = as_1d(x, name)
    keep = ~np.isnan(arr)
    return arr[keep], int(arr.size - keep.sum())


def mean_sem(x: ArrayLike) -> tuple[float, float]:
    """Mean and standard error (sample std with ddof=1, over √n) of the non-NaN values.

    NaN values are dropped. The mean is NaN for no values and the SEM is NaN for n < 2.
    """
    v, _ = _drop_nan(x, "values")
    n = v.size
    mean = float(v.mean()) if n else math.nan
    sem = float(v.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return mean, sem


@dataclass
class TestResult:
    """The outcome of one two-sample comparison (sample a against sample b).

    ``statistic`` is the test's statistic (Mann–Whitney: U of sample a; Wilcoxon: scipy's
    two-sided statistic, the smaller of the signed-rank sums). ``effect_size`` is a
    rank-biserial correlation in [−1, 1], positive when a tends to be larger than b.
    ``reason`` says why ``p_value`` is NaN (or notes dropped NaN values); None when all is well.
    ``method`` is how ``p_value`` was obtained (``"exact"``, ``"permutation"``,
    ``"monte-carlo"`` or ``"asymptotic"``; ``""`` when there is no p-value) and ``p_se`` its
    Monte-Carlo standard error (0.0 for exact / enumerated p-values, NaN for asymptotic ones).
    """

    __test__ = False  # not a pytest test class

    n_a: int
    n_b: int
    mean_a: float
    sem_a: float
    mean_b: float
    sem_b: float
    statistic: float
    p_value: float
    effect_size: float
    reason: str | None = None
    method: str = ""
    p_se: float = 0.0

    def significant(self, level: float = 0.05) -> bool:
        """True when the p-value is below ``level``; False when it is NaN."""
        return bool(math.isfinite(self.p_value) and self.p_value < level)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def _join(notes: list[str]) -> str | None:
    return "; ".join(notes) if notes else None


def _dropped_note(k_a: int, k_b: int) -> list[str]:
    k = k_a + k_b
    return [f"{k} NaN value{'s' if k != 1 else ''} dropped"] if k else []


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose one of {', '.join(METHODS)})")


def mann_whitney(
    a: ArrayLike, b: ArrayLike, method: str = "auto", *, seed: int = 0, n_resamples: int = 100_000
) -> TestResult:
    """Two-sided Mann–Whitney U test of sample ``a`` against sample ``b``.

    ``statistic`` is U of ``a`` (the number of pairs with a > b, ties counting ½) and
    ``effect_size`` the rank-biserial r = 2U/(n_a n_b) − 1. The p-value is
    :func:`kdaudit.analysis.exact.rank_sum_pvalue` with ``method``, ``seed`` and
    ``n_resamples`` (by default exact without ties, the exact permutation p with ties). NaNs
    are dropped. With fewer than 2 values in either sample, or when every value of both
    samples is the same, the p-value is NaN and ``reason`` says why.
    """
    _check_method(method)
    va, ka = _drop_nan(a, "a")
    vb, kb = _drop_nan(b, "b")
    notes = _dropped_note(ka, kb)
    ma, sa = mean_sem(va)
    mb, sb = mean_sem(vb)
    na, nb = int(va.size), int(vb.size)
    nan = math.nan
    if na < 2 or nb < 2:
        notes.append(f"n < 2 (n_a = {na}, n_b = {nb})")
        return TestResult(na, nb, ma, sa, mb, sb, nan, nan, nan, _join(notes))
    if np.all(np.concatenate([va, vb]) == va[0]):
        notes.append("all values equal")
        u = na * nb / 2.0
        return TestResult(na, nb, ma, sa, mb, sb, u, nan, 0.0, _join(notes))
    # the test only sees ranks; ranking first keeps ±inf values usable, as with scipy
    ranks = sps.rankdata(np.concatenate([va, vb]))
    ra, rb = ranks[:na], ranks[na:]
    u = float(ra.sum() - na * (na + 1) / 2.0)
    pv = exact.rank_sum_pvalue(ra, rb, method, seed=seed, n_resamples=n_resamples)
    return TestResult(na, nb, ma, sa, mb, sb, u, pv.p, 2.0 * u / (na * nb) - 1.0, _join(notes), pv.method, pv.se)


def wilcoxon_paired(
    a: ArrayLike, b: ArrayLike, method: str = "auto", *, seed: int = 0, n_resamples: int = 100_000
) -> TestResult:
    """Two-sided Wilcoxon signed-rank test of the paired differences a − b (paired by position).

    Pairs with a NaN on either side are dropped, and zero differences are discarded (the
    ``"wilcox"`` convention). The p-value is :func:`kdaudit.analysis.exact.signed_rank_pvalue`
    of the remaining differences with ``method``, ``seed`` and ``n_resamples``: by default
    exact (equal to scipy's ``method="exact"``) when the |differences| have no ties, and the
    exact distribution over all sign patterns conditional on the ties when they have some.
    ``statistic`` is scipy's two-sided statistic, min(R+, R−). ``effect_size`` is the
    matched-pairs rank-biserial correlation r = (R+ − R−)/(R+ + R−), with R± the sums of the
    ranks of |a − b| over the positive / negative differences (positive when a tends to exceed
    b). The p-value is NaN, with a reason, for fewer than 2 pairs or when every difference is 0.
    Samples of different lengths raise :class:`~kdaudit.errors.InputError`.
    """
    va = as_1d(a, "a")
    vb = as_1d(b, "b")
    if va.size != vb.size:
        raise InputError(f"paired test needs samples of equal length, got {va.size} and {vb.size}")
    keep = ~(np.isnan(va) | np.isnan(vb))
    dropped = int(va.size - keep.sum())
    notes = [f"{dropped} pair{'s' if dropped != 1 else ''} with NaN dropped"] if dropped else []
    va, vb = va[keep], vb[keep]
    ma, sa = mean_sem(va)
    mb, sb = mean_sem(vb)
    n = int(va.size)
    nan = math.nan
    _check_method(method)
    if n < 2:
        notes.append(f"n < 2 (pairs = {n})")
        return TestResult(n, n, ma, sa, mb, sb, nan, nan, nan, _join(notes))
    d = va - vb
    nonzero = d[d != 0]
    if nonzero.size == 0:
        notes.append("all differences zero")
        return TestResult(n, n, ma, sa, mb, sb, nan, nan, 0.0, _join(notes))
    ranks = sps.rankdata(np.abs(nonzero))
    r_plus = float(ranks[nonzero > 0].sum())
    r_minus = float(ranks[nonzero < 0].sum())
    effect = (r_plus - r_minus) / (r_plus + r_minus)
    # the test only sees signed ranks; ranking first keeps ±inf differences usable
    pv = exact.signed_rank_pvalue(np.sign(nonzero) * ranks, method, seed=seed, n_resamples=n_resamples)
    return TestResult(n, n, ma, sa, mb, sb, min(r_plus, r_minus), pv.p, effect, _join(notes), pv.method, pv.se)


def _holm(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Holm's step-down adjustment of a family of finite p-values."""
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m)
    out[order] = adjusted_sorted
    return out


def adjust_pvalues(p: ArrayLike, method: str = "holm") -> NDArray[np.float64]:
    """Adjust a family of p-values for multiple comparisons.

    ``method`` is ``"none"`` (returned as is), ``"holm"`` (Holm's step-down:
    the k-th smallest p becomes max_{j≤k} min(1, (m − j + 1) p_(j))) or ``"bh"``
    (Benjamini–Hochberg, :func:`scipy.stats.false_discovery_control`). NaN p-values stay NaN
    and are left out of the family (m counts the finite ones).
    """
    if method not in CORRECTIONS:
        raise InputError(f"unknown correction {method!r} (choose one of {', '.join(CORRECTIONS)})")
    arr = as_1d(p, "p-values")
    finite = ~np.isnan(arr)
    values = arr[finite]
    if np.any((values < 0) | (values > 1)):
        raise InputError("p-values must lie in [0, 1]")
    out = np.full(arr.shape, np.nan)
    if values.size == 0:
        return out
    if method == "none":
        out[finite] = values
    elif method == "holm":
        out[finite] = _holm(values)
    else:
        out[finite] = sps.false_discovery_control(values, method="bh")
    return out


def compression_bar(
    agreement: ArrayLike, js: ArrayLike, ad: ArrayLike, threshold: float = 0.95
) -> dict[str, float | bool]:
    """The predecessor paper's compression bar on per-seed values (PROTOCOL §5).

    Scores are computed from the means over seeds (NaNs dropped): ``agreement_score`` = mean
    agreement, ``js_score`` = 1 − mean JS / ln 2, ``ad_score`` = 1 − mean AD / √2. Each passes
    when ≥ ``threshold``; ``compresses`` is True when all three pass. ``testable`` is False when
    a score is NaN (no values), in which case every pass flag is False.
    """
    agreement_score = mean_sem(agreement)[0]
    js_score = 1.0 - mean_sem(js)[0] / math.log(2.0)
    ad_score = 1.0 - mean_sem(ad)[0] / math.sqrt(2.0)
    scores = {"agreement": agreement_score, "js": js_score, "ad": ad_score}
    passes = {k: bool(math.isfinite(v) and v >= threshold) for k, v in scores.items()}
    return {
        "agreement_score": agreement_score,
        "js_score": js_score,
        "ad_score": ad_score,
        "agreement_pass": passes["agreement"],
        "js_pass": passes["js"],
        "ad_pass": passes["ad"],
        "compresses": all(passes.values()),
        "testable": all(math.isfinite(v) for v in scores.values()),
        "threshold": float(threshold),
    }
