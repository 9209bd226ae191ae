"""Simulated audits: per-seed values drawn from a distribution, for calibration and power.

Nothing is trained. Every group (SIDDO, and KD with both RCD controls at each α) draws its
per-seed values from one distribution, :data:`NULL`: agreement ~ N(0.90, 0.01), agreement on the
teacher-correct samples ~ N(0.95, 0.006), on the teacher-wrong samples ~ N(0.35, 0.03), clipped
to [0, 1], seeds 1..n. A shift moves the mean of chosen values of chosen KD groups by a number of
SIDDO standard deviations. The result feeds :func:`kdaudit.analysis.hypotheses.decide`; the
test suite measures the null rate of every verdict with it and ``scripts/power_table.py`` the
power table of ``docs/statistics.md``.

>>> import numpy as np
>>> ctrl, units = simulated_audit(np.random.default_rng(0), n=10, n_alpha=3)
>>> len(ctrl), [u.alpha for u in units], sorted(units[0].regularisers)
(10, [0.1, 0.5, 0.9], ['rcd-gaussian', 'rcd-uniform'])
"""

from __future__ import annotations

import numpy as np

from .hypotheses import Group, Unit

__all__ = ["ALPHAS", "NULL", "RCDS", "draw_group", "simulated_audit"]

ALPHAS = (0.1, 0.5, 0.9)
RCDS = ("rcd-uniform", "rcd-gaussian")
NULL: dict[str, tuple[float, float]] = {
    "agreement": (0.90, 0.01),
    "agreement_teacher_correct": (0.95, 0.006),
    "agreement_teacher_wrong": (0.35, 0.03),
}
"""The one null distribution: (mean, standard deviation) of each per-seed value."""


def draw_group(rng: np.random.Generator, n: int, shift: dict[str, float] | None = None) -> Group:
    """A group of n students (seeds 1..n) from :data:`NULL`, each value shifted by
    ``shift[value]`` standard deviations."""
    shift = shift or {}
    values = {k: np.clip(rng.normal(mu + shift.get(k, 0.0) * sd, sd, n), 0.0, 1.0) for k, (mu, sd) in NULL.items()}
    return Group.of(np.arange(1, n + 1), **values)


def simulated_audit(
    rng: np.random.Generator,
    n: int,
    n_alpha: int = 3,
    *,
    kd_shift: dict[str, float] | None = None,
    shifted_units: int = 0,
) -> tuple[Group, list[Unit]]:
    """SIDDO and one KD unit per α (the first ``n_alpha`` of :data:`ALPHAS`) with both RCDs; the
    first ``shifted_units`` KD groups get ``kd_shift``, every other group is null."""
    ctrl = draw_group(rng, n)
    units = []
    for i, alpha in enumerate(ALPHAS[:n_alpha]):
        kd = draw_group(rng, n, kd_shift if i < shifted_units else None)
        units.append(Unit("kd", alpha, kd, {r: draw_group(rng, n) for r in RCDS}))
    return ctrl, units
