"""The statistical design of an audit and what it can decide at all (PROTOCOL §4–5).

:class:`Design` holds every statistical option (the spec's ``analysis`` section). The power
functions answer before anything trains whether a primary family of a given size can reach the
level with a given number of seeds: the smallest adjusted p that perfectly separated samples
attain (:func:`smallest_adjusted_p`), the seeds that would make a test testable
(:func:`seeds_needed`) and the notes of a planned audit (:func:`design_notes`). The decision
itself is :func:`kdaudit.analysis.hypotheses.decide`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from .exact import min_pvalue_rank_sum, min_pvalue_signed_rank
from .stats import CORRECTIONS, METHODS

__all__ = [
    "STANDARDS",
    "Design",
    "correction_label",
    "design_notes",
    "family_bound",
    "family_size",
    "seeds_needed",
    "smallest_adjusted_p",
]

STANDARDS = ("kdaudit", "paper")
"""The rule sets of the verdicts: one corrected primary family (``kdaudit``) or the paper's."""


@dataclass(frozen=True)
class Design:
    """How the primary family is tested and corrected (the spec's ``analysis`` section)."""

    level: float = 0.05
    correction: str = "holm"
    secondary_correction: str = "bh"
    paired: bool = False
    method: str = "auto"
    standard: str = "kdaudit"
    bootstrap: int = 10_000
    seed: int = 0
    permutations: int = 100_000

    def __post_init__(self) -> None:
        if not (isinstance(self.level, (int, float)) and 0.0 < self.level < 1.0):
            raise InputError(f"significance level must lie in (0, 1), got {self.level}")
        for name in ("correction", "secondary_correction"):
            if getattr(self, name) not in CORRECTIONS:
                raise InputError(f"unknown {name} {getattr(self, name)!r} (choose one of {', '.join(CORRECTIONS)})")
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r} (choose one of {', '.join(METHODS)})")
        if self.standard not in STANDARDS:
            raise InputError(f"unknown standard {self.standard!r} (choose one of {', '.join(STANDARDS)})")

    @classmethod
    def from_spec(cls, analysis: Any) -> Design:
        """The design of a spec's ``analysis`` section (an :class:`AnalysisSpec` or a dict)."""
        get = analysis.get if isinstance(analysis, Mapping) else lambda k, d=None: getattr(analysis, k, d)
        kw: dict[str, Any] = {k: get(k) for k in cls.__dataclass_fields__ if get(k) is not None}
        return cls(**kw)

    @property
    def primary_correction(self) -> str:
        """The paper's standard corrects nothing."""
        return "none" if self.standard == "paper" else self.correction

    @property
    def primary_paired(self) -> bool:
        """The paper's standard always uses Mann–Whitney."""
        return self.paired and self.standard != "paper"


# ---------------------------------------------------------------------------------------------
# Power: what the design can decide at all
# ---------------------------------------------------------------------------------------------


def family_bound(p_min: float, m: int, correction: str) -> float:
    """The smallest adjusted p a test with raw p ≥ ``p_min`` can get in a family of ``m``.

    Holm's first step multiplies the smallest p by m, and every adjusted p is at least that;
    Benjamini–Hochberg can leave the smallest p as it is (when all m tests reach it).
    """
    if not math.isfinite(p_min):
        return math.nan
    return min(1.0, m * p_min) if correction == "holm" else p_min


def smallest_adjusted_p(n_a: int, n_b: int, m: int, design: Design, paired: bool | None = None) -> float:
    """The smallest adjusted p attainable with groups of n_a and n_b students in a primary family
    of ``m`` tests: that of perfectly separated samples (no ties). Paired: n = min(n_a, n_b)."""
    paired = design.primary_paired if paired is None else paired
    if min(n_a, n_b) < 2:
        return math.nan
    method = "asymptotic" if design.method == "asymptotic" else "exact"
    p = min_pvalue_signed_rank(min(n_a, n_b), method) if paired else min_pvalue_rank_sum(n_a, n_b, method)
    return family_bound(p, m, design.primary_correction)


def seeds_needed(m: int, design: Design, limit: int = 1000) -> int | None:
    """The fewest seeds per group with which a primary test in a family of ``m`` can reach the level."""
    for n in range(2, limit + 1):
        bound = smallest_adjusted_p(n, n, m, design)
        if math.isfinite(bound) and bound < design.level:
            return n
    return None


def family_size(n_units: int, with_regularisers: bool, with_control: bool = True) -> int:
    """The number of primary tests: H1, H3, H4 (with a SIDDO control) and H2 (with regularisation
    controls) per verdict unit."""
    return n_units * ((3 if with_control else 0) + (1 if with_regularisers else 0))


def design_notes(n_seeds: int, n_units: int, with_regularisers: bool, with_control: bool, design: Design) -> list[str]:
    """What a planned audit will not be able to decide, before anything trains."""
    notes: list[str] = []
    if n_units == 0:
        return ["no distillation condition (kd) to give verdicts for"]
    if not with_control:
        notes.append(
            "there are no SIDDO students, so knowledge transfer, negative transfer, asymmetry, the "
            "negative asymmetric payoff (and beyond regularisation, which needs transfer) are not testable"
        )
        return notes
    m = family_size(n_units, with_regularisers, with_control)
    bound = smallest_adjusted_p(n_seeds, n_seeds, m, design)
    if not (math.isfinite(bound) and bound < design.level):
        need = seeds_needed(m, design)
        kind = "paired Wilcoxon" if design.primary_paired else "Mann–Whitney"
        got = (
            "no p-value at all"
            if not math.isfinite(bound)
            else (f"a smallest attainable {correction_label(design)} p of {bound:.3g} ≥ {design.level:g}")
        )
        notes.append(
            f"with {n_seeds} seed(s) per group, a {kind} test in the primary family of {m} has {got}: every "
            f"verdict will be not testable" + (f"; {need} seeds per group would make them testable" if need else "")
        )
    return notes


def correction_label(design: Design) -> str:
    """How the primary family's p-values are called: ``unadjusted`` or ``<correction>-adjusted``."""
    c = design.primary_correction
    return "unadjusted" if c == "none" else f"{c}-adjusted"
