"""Calibration and power of the primary family, measured on simulated per-seed values.

No model is trained: every group's per-seed values are drawn from a distribution and fed to
:func:`kdaudit.analysis.hypotheses.decide`. Under the null every group (SIDDO, KD and both RCDs
at every α) comes from one distribution, so every "yes" is a false claim; its rate must stay at
or below the level. The power checks plant an effect that a working test must find.

``pytest -s tests/test_calibration.py`` prints the measured rates.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from kdaudit.analysis.hypotheses import VERDICT_KEYS, Design, Group, Unit, asymmetry_scores, decide
from kdaudit.analysis.simulate import ALPHAS, RCDS, draw_group, simulated_audit

LEVEL = 0.05


def null_rates(n_sims: int, n: int, n_alpha: int, paired: bool, seed: int) -> dict[str, float]:
    """The "yes" rate of every verdict over all units of ``n_sims`` null audits, and the
    family-wise rates (any "yes" in an audit) of knowledge transfer and of any verdict."""
    rng = np.random.default_rng(seed)
    design = Design(paired=paired, bootstrap=0)
    yes = dict.fromkeys(VERDICT_KEYS, 0)
    fw_transfer = fw_any = 0
    for _ in range(n_sims):
        ctrl, units = simulated_audit(rng, n, n_alpha)
        decisions = decide(units, ctrl, design)
        for d in decisions:
            for k in VERDICT_KEYS:
                yes[k] += d.verdicts[k] == "yes"
        fw_transfer += any(d.verdicts["knowledge_transfer"] == "yes" for d in decisions)
        fw_any += any(v == "yes" for d in decisions for v in d.verdicts.values())
    rates = {k: v / (n_sims * n_alpha) for k, v in yes.items()}
    rates["family_wise_knowledge_transfer"] = fw_transfer / n_sims
    rates["family_wise_any_verdict"] = fw_any / n_sims
    return rates


def _check_null(n_sims: int, n: int, n_alpha: int, paired: bool, seed: int) -> None:
    start = time.perf_counter()
    rates = null_rates(n_sims, n, n_alpha, paired, seed)
    took = time.perf_counter() - start
    label = f"{'paired' if paired else 'unpaired'}, {n_alpha} α, {n} seeds, Holm, {n_sims} audits"
    print(f"\nnull yes-rates ({label}; {took:.1f} s):")
    for k, v in rates.items():
        print(f"  {k:<32} {v:.4f}")
    for k, v in rates.items():
        assert v <= LEVEL, f"{k}: null yes-rate {v:.4f} > {LEVEL} ({label})"


# --- calibration under the null ---------------------------------------------------------------


@pytest.mark.slow  # 2000 simulated audits
def test_null_rates_default_design() -> None:
    """Default design: 3 α, both RCDs (a family of 12), 10 seeds, unpaired, Holm."""
    _check_null(2000, 10, 3, paired=False, seed=20240601)


@pytest.mark.parametrize(
    ("n_alpha", "paired", "seed"),
    [
        pytest.param(3, True, 20240602, id="paired-3alpha", marks=pytest.mark.slow),
        pytest.param(1, False, 20240603, id="unpaired-1alpha"),
        pytest.param(1, True, 20240604, id="paired-1alpha", marks=pytest.mark.slow),
    ],
)
def test_null_rates_other_designs(n_alpha: int, paired: bool, seed: int) -> None:
    """Paired (Wilcoxon signed-rank by seed) and 1 α (a family of 4), 10 seeds, Holm."""
    _check_null(2000, 10, n_alpha, paired=paired, seed=seed)


# --- power: a planted effect must be found ----------------------------------------------------


def test_power_planted_agreement_shift() -> None:
    """KD's agreement 3 SIDDO standard deviations higher (one α of three, 10 seeds, default
    design): knowledge transfer is "yes" in at least 90 % of the audits."""
    rng = np.random.default_rng(7)
    design = Design(bootstrap=0)
    n_sims = 500
    hits = 0
    for _ in range(n_sims):
        ctrl, units = simulated_audit(rng, 10, 3, kd_shift={"agreement": 3.0}, shifted_units=1)
        hits += decide(units, ctrl, design)[0].verdicts["knowledge_transfer"] == "yes"
    power = hits / n_sims
    print(f"\npower, KD agreement +3 SD, 10 seeds, 3 α, unpaired: {power:.3f}")
    assert power >= 0.90


def separated(rng: np.random.Generator, n: int, n_alpha: int) -> tuple[Group, list[Unit]]:
    """Every KD value above every SIDDO value in agreement, agreement on the teacher-wrong
    samples and the asymmetry score d; KD's agreement on the teacher-correct samples stays at
    SIDDO's mean. RCDs are null."""
    ctrl = draw_group(rng, n)
    seeds = np.arange(1, n + 1)
    m_c = float(ctrl["agreement_teacher_correct"].mean())
    units = []
    for alpha in ALPHAS[:n_alpha]:
        kd = Group.of(
            seeds,
            agreement=ctrl["agreement"].max() + 0.01 + 0.001 * rng.permutation(n),
            agreement_teacher_correct=m_c + 1e-6 * rng.permutation(n),
            agreement_teacher_wrong=ctrl["agreement_teacher_wrong"].max() + 0.4 + 0.001 * rng.permutation(n),
        )
        dx, dc = asymmetry_scores(kd, ctrl)
        for metric in ("agreement", "agreement_teacher_wrong"):
            assert kd[metric].min() > ctrl[metric].max()
        assert dx.min() > dc.max()
        units.append(Unit("kd", alpha, kd, {r: draw_group(rng, n) for r in RCDS}))
    return ctrl, units


SHOWN = ("knowledge_transfer", "negative_transfer", "asymmetry", "negative_asymmetric_payoff")


@pytest.mark.parametrize(
    ("n", "paired", "n_alpha"),
    [(6, False, 3), (9, False, 3), (10, False, 3), (9, True, 1), (10, True, 1)],
)
def test_separated_kd_is_yes(n: int, paired: bool, n_alpha: int) -> None:
    ctrl, units = separated(np.random.default_rng(n), n, n_alpha)
    for d in decide(units, ctrl, Design(paired=paired, bootstrap=0)):
        for k in SHOWN:
            assert d.verdicts[k] == "yes", (k, d.reasons[k])


@pytest.mark.parametrize(("paired", "needed"), [(False, 6), (True, 9)])
def test_two_seeds_not_testable(paired: bool, needed: int) -> None:
    """3 α, 2 seeds: nothing is testable, and the reason names the seeds that would be."""
    ctrl, units = separated(np.random.default_rng(2), 2, 3)
    for d in decide(units, ctrl, Design(paired=paired, bootstrap=0)):
        assert set(d.verdicts.values()) == {"not testable"}, d.verdicts
        for k in SHOWN:
            assert f"{needed} seeds per group would make it testable" in d.reasons[k], d.reasons[k]
        # beyond regularisation is gated on transfer; its H2 row names the seeds
        assert f"{needed} seeds per group" in d.tests["H2"]["why"]


def test_paired_six_seeds_one_alpha_not_testable() -> None:
    """Paired, 6 seeds, 1 α: the smallest two-sided signed-rank p is 2/2^6, times 4 in the Holm
    family = 0.125 ≥ 0.05, even for perfectly separated students; 8 seeds would do."""
    ctrl, units = separated(np.random.default_rng(6), 6, 1)
    (d,) = decide(units, ctrl, Design(paired=True, bootstrap=0))
    assert set(d.verdicts.values()) == {"not testable"}, d.verdicts
    for k in SHOWN:
        assert "0.125" in d.reasons[k] and "8 seeds per group would make it testable" in d.reasons[k]
