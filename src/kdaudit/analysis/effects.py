"""Effect sizes with intervals: the difference of means and its seeded bootstrap interval.

Pure numpy. The interval is the percentile bootstrap: unpaired, each group is resampled with
replacement on its own; paired, the per-seed differences are resampled. The generator is
``numpy.random.default_rng(seed)``, so the same inputs and seed give the same interval.

>>> diff, lo, hi = bootstrap_mean_diff([0.9, 0.8, 0.85, 0.95], [0.7, 0.75, 0.72, 0.71], seed=0)
>>> round(diff, 4), lo < diff < hi
(0.155, True)
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["bootstrap_mean_diff"]


def bootstrap_mean_diff(
    a: ArrayLike,
    b: ArrayLike,
    *,
    paired: bool = False,
    n_boot: int = 10_000,
    seed: int | list[int] = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """mean(a) − mean(b) and its ``confidence`` percentile bootstrap interval.

    NaN values are dropped (paired: the pairs with a NaN on either side). The interval is
    (NaN, NaN) when ``n_boot`` is 0 or either group keeps fewer than 2 values; the difference
    is NaN when either group is empty. ``paired`` needs equal lengths (position = seed).
    """
    va = np.asarray(a, dtype=np.float64).reshape(-1)
    vb = np.asarray(b, dtype=np.float64).reshape(-1)
    if paired:
        if va.size != vb.size:
            raise ValueError(f"paired samples need equal lengths, got {va.size} and {vb.size}")
        keep = np.isfinite(va) & np.isfinite(vb)
        va, vb = va[keep], vb[keep]
    else:
        va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
    if va.size == 0 or vb.size == 0:
        return math.nan, math.nan, math.nan
    diff = float(va.mean() - vb.mean())
    if n_boot <= 0 or va.size < 2 or vb.size < 2:
        return diff, math.nan, math.nan
    rng = np.random.default_rng(seed)
    if paired:
        d = va - vb
        boots = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    else:
        boots = va[rng.integers(0, va.size, size=(n_boot, va.size))].mean(axis=1) - vb[
            rng.integers(0, vb.size, size=(n_boot, vb.size))
        ].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boots, [tail, 1.0 - tail])
    return diff, float(lo), float(hi)
