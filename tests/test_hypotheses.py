"""The primary family's building blocks: asymmetry scores, power up front, intervals, the design."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdaudit.analysis.design import Design, design_notes, family_bound, seeds_needed, smallest_adjusted_p
from kdaudit.analysis.effects import bootstrap_mean_diff
from kdaudit.analysis.hypotheses import Group, Unit, asymmetry_scores, decide
from kdaudit.audit import planned_notes
from kdaudit.config.loader import resolve_spec
from kdaudit.errors import InputError


def test_asymmetry_scores_by_hand() -> None:
    ctrl = Group.of(
        [1, 2], agreement=[0.8, 0.8], agreement_teacher_correct=[0.90, 0.94], agreement_teacher_wrong=[0.20, 0.30]
    )
    kd = Group.of(
        [1, 2], agreement=[0.9, 0.9], agreement_teacher_correct=[0.95, 0.96], agreement_teacher_wrong=[0.50, 0.65]
    )
    dx, dc = asymmetry_scores(kd, ctrl)
    m_c, m_w = 0.92, 0.25
    expected = [
        (0.50 - m_w) / (1 - m_w) - (0.95 - m_c) / (1 - m_c),
        (0.65 - m_w) / (1 - m_w) - (0.96 - m_c) / (1 - m_c),
    ]
    np.testing.assert_allclose(dx, expected)
    assert dc.mean() == pytest.approx(0.0, abs=1e-12)  # SIDDO's own scores average to 0
    px, _ = asymmetry_scores(kd, ctrl, headroom=False)
    np.testing.assert_allclose(px, [(0.50 - m_w) - (0.95 - m_c), (0.65 - m_w) - (0.96 - m_c)])
    # the mean score is h− − h+
    h_neg = (np.mean([0.50, 0.65]) - m_w) / (1 - m_w)
    h_pos = (np.mean([0.95, 0.96]) - m_c) / (1 - m_c)
    assert dx.mean() == pytest.approx(h_neg - h_pos)
    # no headroom: NaN, never a division by zero
    full = Group.of([1, 2], agreement=[1, 1], agreement_teacher_correct=[1.0, 1.0], agreement_teacher_wrong=[0.2, 0.3])
    assert np.isnan(asymmetry_scores(kd, full)[0]).all()


@pytest.mark.parametrize(
    "n_a, n_b, m, paired, expected",
    [
        (10, 10, 12, False, 12 * 2 / math.comb(20, 10)),
        (5, 5, 12, False, 12 * 2 / math.comb(10, 5)),
        (6, 6, 12, False, 12 * 2 / math.comb(12, 6)),
        (9, 9, 12, True, 12 * 2 / 2**9),
        (6, 6, 4, True, 4 * 2 / 2**6),
        (2, 2, 12, False, 1.0),
    ],
)
def test_smallest_adjusted_p_closed_forms(n_a, n_b, m, paired, expected) -> None:
    assert smallest_adjusted_p(n_a, n_b, m, Design(paired=paired)) == pytest.approx(expected)


def test_family_bound_and_seeds_needed() -> None:
    assert family_bound(0.01, 12, "holm") == pytest.approx(0.12)
    assert family_bound(0.01, 12, "bh") == family_bound(0.01, 12, "none") == 0.01
    assert seeds_needed(12, Design()) == 6  # 2/C(10,5) × 12 = 0.095; 2/C(12,6) × 12 = 0.026
    assert seeds_needed(4, Design()) == 5
    assert seeds_needed(12, Design(paired=True)) == 9  # 2/2^8 × 12 = 0.094; 2/2^9 × 12 = 0.047
    assert seeds_needed(4, Design(paired=True)) == 8  # 2/2^7 × 4 = 0.0625; 2/2^8 × 4 = 0.031
    assert seeds_needed(12, Design(standard="paper")) == 4  # no correction: 2/C(8,4) = 0.029
    assert seeds_needed(12, Design(correction="bh")) == 4


def test_design_notes_say_what_cannot_be_decided() -> None:
    assert design_notes(10, 3, True, True, Design()) == []
    (note,) = design_notes(5, 3, True, True, Design())
    assert "5 seed(s)" in note and "0.095" in note and "6 seeds per group" in note
    (note,) = design_notes(10, 3, True, False, Design())
    assert "no SIDDO students" in note
    assert design_notes(3, 0, True, True, Design()) == ["no distillation condition (kd) to give verdicts for"]


def test_planned_notes_from_the_spec() -> None:
    assert planned_notes(resolve_spec("digits-mlp", [])) == []
    notes = planned_notes(resolve_spec("digits-mlp", ["protocol.conditions=[kd,rcd-uniform]"]))
    assert len(notes) == 1 and "no SIDDO students" in notes[0]
    notes = planned_notes(resolve_spec("digits-mlp", ["protocol.conditions=[siddo,kd]", "protocol.seeds=4"]))
    assert any("4 seed(s)" in n and "primary family of 9" in n for n in notes)  # 3 α × (H1, H3, H4)
    assert any("beyond regularisation is not testable" in n for n in notes)
    notes = planned_notes(resolve_spec("digits-mlp", ["protocol.seeds=8", "analysis.paired=true"]))
    assert any("paired Wilcoxon" in n and "9 seeds" in n for n in notes)


def test_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 400)
    diff, lo, hi = bootstrap_mean_diff(a, b, seed=3)
    assert diff == pytest.approx(a.mean() - b.mean())
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)  # the normal-theory interval
    assert lo == pytest.approx(diff - 1.96 * se, abs=0.25 * se) and hi == pytest.approx(diff + 1.96 * se, abs=0.25 * se)
    assert bootstrap_mean_diff(a, b, seed=3) == (diff, lo, hi)  # seeded: the same numbers
    assert bootstrap_mean_diff(a, b, seed=4) != (diff, lo, hi)
    # paired: a constant difference has a degenerate interval at that difference
    assert bootstrap_mean_diff(b + 0.5, b, paired=True, seed=0) == pytest.approx((0.5, 0.5, 0.5))
    # NaN dropped; too few values: no interval
    d, lo2, hi2 = bootstrap_mean_diff([1.0, np.nan], [0.0, 0.5])
    assert d == pytest.approx(0.75) and math.isnan(lo2) and math.isnan(hi2)
    assert all(math.isnan(x) for x in bootstrap_mean_diff([], [1.0, 2.0]))
    with pytest.raises(ValueError, match="equal lengths"):
        bootstrap_mean_diff([1.0, 2.0], [1.0], paired=True)


def test_design_from_spec_and_bad_values() -> None:
    spec = resolve_spec(
        "digits-mlp",
        [
            "analysis.method=permutation",
            "analysis.standard=paper",
            "analysis.secondary_correction=holm",
            "analysis.bootstrap=0",
        ],
    )
    d = Design.from_spec(spec.analysis)
    assert (d.method, d.standard, d.secondary_correction, d.bootstrap) == ("permutation", "paper", "holm", 0)
    assert d.primary_correction == "none"
    with pytest.raises(InputError, match="level"):
        Design(level=0.0)
    with pytest.raises(InputError, match="secondary_correction"):
        Design(secondary_correction="sidak")


def test_decide_hardest_control_and_monte_carlo_is_seeded() -> None:
    k = np.arange(10) / 1000
    ctrl = Group.of(
        range(1, 11), agreement=0.80 + k, agreement_teacher_correct=0.9 + k, agreement_teacher_wrong=0.2 + k
    )
    kd = Group.of(range(1, 11), agreement=0.90 + k, agreement_teacher_correct=0.9 + k, agreement_teacher_wrong=0.5 + k)
    easy = Group.of(
        range(1, 11), agreement=0.50 + k, agreement_teacher_correct=0.9 + k, agreement_teacher_wrong=0.2 + k
    )
    hard = Group.of(
        range(1, 11), agreement=0.899 + k, agreement_teacher_correct=0.9 + k, agreement_teacher_wrong=0.2 + k
    )
    (d,) = decide([Unit("kd", 0.9, kd, {"rcd-easy": easy, "rcd-hard": hard})], ctrl, Design())
    assert d.tests["H2"]["control"] == "rcd-hard"  # the larger p decides
    assert d.tests["H2"]["p_value"] == max(c["p_value"] for c in d.h2_components)
    assert d.verdicts["beyond_regularisation"] == "no"
    again = decide([Unit("kd", 0.9, kd, {"rcd-easy": easy, "rcd-hard": hard})], ctrl, Design())[0]
    assert again.tests["H2"]["ci_low"] == d.tests["H2"]["ci_low"]


@pytest.mark.parametrize("module", ["effects", "exact", "simulate"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    mod = importlib.import_module(f"kdaudit.analysis.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
