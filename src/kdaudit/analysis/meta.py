"""Random-effects pooling of per-setup effects across setups (a meta-analysis of "studies").

Each setup (study) i gives an estimate y_i with a standard error s_i: Δ± from
:func:`mean_difference` (Welch SE) or h± from :func:`headroom_share` (delta-method SE).
:func:`random_effects` pools them.

DerSimonian–Laird. With fixed-effect weights w_i = 1/s_i²,

    ȳ_FE = Σ w_i y_i / Σ w_i,   Q = Σ w_i (y_i − ȳ_FE)²   (Cochran's Q, df = k − 1),
    τ² = max(0, (Q − (k − 1)) / (Σ w_i − Σ w_i² / Σ w_i)),
    w*_i = 1 / (s_i² + τ²),      μ = Σ w*_i y_i / Σ w*_i.

I² = max(0, (Q − (k − 1)) / Q) (0 when Q = 0): the share of the spread of the estimates that is
between-study heterogeneity rather than sampling error. Q's p is from χ² on k − 1 df.

Interval and test of μ = 0:

- ``method="dl"``: SE = √(1 / Σ w*_i), normal interval μ ± z·SE and a z-test.
- ``method="hksj"`` (default), Hartung–Knapp–Sidik–Jonkman with the modification of Röver,
  Knapp and Friede (2015): q* = max(1, Σ w*_i (y_i − μ)² / (k − 1)), SE = √(q* / Σ w*_i),
  interval μ ± t_{k−1}·SE and a t-test on k − 1 df. Flooring q* at 1 keeps the interval at least
  as wide as the DL one: the untruncated interval is too narrow when the setups agree more than
  their SEs say (τ² estimated as 0 and q* < 1), which a simulation of 8 setups showed in about
  30 % of meta-analyses, with 0.928 coverage overall (docs/statistics.md, "Pooling across setups").
- ``method="hksj-untruncated"``: the same without the floor (metafor's ``test="knha"``).

One study (k = 1): its own estimate and SE with a normal interval, τ² = 0, Q = 0, I² and Q's p
NaN (``method="single"``). No study: everything NaN (``method="none"``). Studies whose estimate
is not finite, or whose SE is not finite or not positive, are dropped before anything is computed
(``k`` counts those kept): they carry no usable weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from ..errors import InputError
from .exact import as_1d
from .stats import mean_sem

__all__ = ["Pooled", "headroom_share", "mean_difference", "random_effects", "satterthwaite_df"]

METHODS = ("hksj", "hksj-untruncated", "dl")
"""The interval methods of :func:`random_effects`."""


@dataclass(frozen=True)
class Pooled:
    """A random-effects pooled estimate across studies; see the module docstring."""

    k: int  # number of studies (setups) with a finite estimate and finite SE > 0
    estimate: float  # random-effects pooled estimate μ
    se: float  # its standard error (the Hartung–Knapp SE for the hksj methods)
    ci_low: float
    ci_high: float
    p_value: float  # two-sided test of estimate = 0
    tau2: float  # DerSimonian–Laird between-study variance
    i2: float  # Higgins I² in [0, 1] (NaN when k < 2)
    q: float  # Cochran's Q
    q_p: float  # p of Q on k − 1 df (NaN when k < 2)
    method: str  # "hksj" | "hksj-untruncated" | "dl" | "single" (k == 1) | "none" (k == 0)


def random_effects(
    estimates: ArrayLike,
    ses: ArrayLike,
    *,
    level: float = 0.95,
    method: Literal["hksj", "hksj-untruncated", "dl"] = "hksj",
) -> Pooled:
    """Pool per-study ``estimates`` with standard errors ``ses`` (DerSimonian–Laird τ²).

    ``level`` is the interval's coverage; ``method`` is ``"hksj"`` (Hartung–Knapp with q* floored
    at 1, t on k − 1 df), ``"hksj-untruncated"`` or ``"dl"`` (normal). Entries with a non-finite
    estimate or a non-finite or non-positive SE are dropped. :class:`~kdaudit.errors.InputError`
    for lengths that differ, a level outside (0, 1) or an unknown method.

    >>> r = random_effects([0.10, 0.30, 0.20, 0.50], [0.05, 0.10, 0.08, 0.20])
    >>> r.k, r.method, round(r.estimate, 4), round(r.se, 4), round(r.tau2, 5)
    (4, 'hksj', 0.2117, 0.0688, 0.00888)
    >>> round(r.ci_low, 4), round(r.ci_high, 4), round(r.q, 4), round(r.i2, 4)
    (-0.0072, 0.4306, 6.5069, 0.5389)
    >>> round(random_effects([0.10, 0.30, 0.20, 0.50], [0.05, 0.10, 0.08, 0.20], method="dl").se, 4)
    0.0664
    >>> random_effects([0.2, float("nan")], [0.1, 0.1]).method
    'single'
    """
    if not 0.0 < level < 1.0:  # also rejects NaN
        raise InputError(f"level must be in (0, 1), got {level}")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    y = as_1d(estimates, "estimates")
    s = as_1d(ses, "ses")
    if y.size != s.size:
        raise InputError(f"estimates and ses differ in length ({y.size} and {s.size})")
    keep = np.isfinite(y) & np.isfinite(s) & (s > 0)  # a NaN SE compares False, without a warning
    y, s = y[keep], s[keep]
    k = int(y.size)
    upper = (1.0 + level) / 2.0
    if k == 0:
        nan = math.nan
        return Pooled(0, nan, nan, nan, nan, nan, nan, nan, nan, nan, "none")
    if k == 1:
        est, se = float(y[0]), float(s[0])
        z = float(sps.norm.ppf(upper))
        p = float(2.0 * sps.norm.sf(abs(est) / se))
        return Pooled(1, est, se, est - z * se, est + z * se, p, 0.0, math.nan, 0.0, math.nan, "single")

    df = k - 1
    w = 1.0 / s**2
    sw = float(w.sum())
    y_fe = float((w * y).sum()) / sw
    q = float((w * (y - y_fe) ** 2).sum())
    c = sw - float((w**2).sum()) / sw
    tau2 = max(0.0, (q - df) / c)
    ws = 1.0 / (s**2 + tau2)
    sws = float(ws.sum())
    mu = float((ws * y).sum()) / sws
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    q_p = float(sps.chi2.sf(q, df))

    if method == "dl":
        se = math.sqrt(1.0 / sws)
        crit = float(sps.norm.ppf(upper))
        tail = float(sps.norm.sf(abs(mu) / se))
    else:
        q_star = float((ws * (y - mu) ** 2).sum()) / df
        if method == "hksj":
            q_star = max(1.0, q_star)
        se = math.sqrt(q_star / sws)
        crit = float(sps.t.ppf(upper, df))
        # untruncated, identical estimates give q* = 0: a zero-width interval, p = 0 unless μ = 0
        tail = float(sps.t.sf(abs(mu) / se, df)) if se > 0 else (math.nan if mu == 0 else 0.0)
    p = 2.0 * tail
    return Pooled(k, mu, se, mu - crit * se, mu + crit * se, p, tau2, i2, q, q_p, method)


def mean_difference(x: ArrayLike, control: ArrayLike) -> tuple[float, float]:
    """mean(x) − mean(control) and its Welch SE √(s_x²/n_x + s_c²/n_c) (ddof = 1).

    NaN values are dropped. The difference is NaN if either sample is empty; the SE is NaN if
    either has fewer than 2 values.

    >>> d, se = mean_difference([0.60, 0.62, 0.64], [0.50, 0.55])
    >>> round(d, 4), round(se, 4)
    (0.095, 0.0275)
    """
    mx, sx = mean_sem(x)
    mc, sc = mean_sem(control)
    return float(mx - mc), float(math.hypot(sx, sc))


def headroom_share(x: ArrayLike, control: ArrayLike) -> tuple[float, float]:
    """h = (x̄ − c̄) / (1 − c̄), the share of the control's headroom closed, and its delta-method SE.

    The SE includes the uncertainty of the control's mean, which is also in the denominator:

        var(h) = (s_x²/n_x) / (1 − c̄)² + (x̄ − 1)² / (1 − c̄)⁴ · (s_c²/n_c)

    (∂h/∂x̄ = 1/(1 − c̄), ∂h/∂c̄ = (x̄ − 1)/(1 − c̄)²; the two means are independent). NaN values are
    dropped. Both are NaN when 1 − c̄ <= 0 (no headroom) or a sample is empty; the SE is NaN when
    either sample has fewer than 2 values.

    >>> h, se = headroom_share([0.60, 0.62, 0.64], [0.50, 0.55])
    >>> round(h, 4), round(se, 4)
    (0.2, 0.0486)
    """
    mx, sx = mean_sem(x)
    mc, sc = mean_sem(control)
    room = 1.0 - mc
    if not (math.isfinite(mx) and math.isfinite(room)) or room <= 0.0:
        return math.nan, math.nan
    h = (mx - mc) / room
    var = sx**2 / room**2 + (mx - 1.0) ** 2 / room**4 * sc**2
    return float(h), float(math.sqrt(var)) if math.isfinite(var) else math.nan


def satterthwaite_df(parts: list[tuple[float, int]]) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of independent variance terms.

    Each part is (v, n): a term v of the estimate's variance, estimated from a sample of n
    (v = c·s²/n for a constant c). df = (Σ v)² / Σ (v² / (n − 1)); NaN when a sample has fewer
    than 2 values or the variance is 0. For a difference of two means this is Welch's df.

    >>> round(satterthwaite_df([(0.0004 / 3, 3), (0.00125 / 2, 2)]), 3)
    1.439
    """
    if any(n < 2 or not math.isfinite(v) for v, n in parts):
        return math.nan
    total = sum(v for v, _ in parts)
    denom = sum(v * v / (n - 1) for v, n in parts)
    return total * total / denom if denom > 0 else math.nan
