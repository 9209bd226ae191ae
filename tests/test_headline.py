"""The headline: the audit's answer in one plain sentence, from the verdicts."""

from __future__ import annotations

from typing import Any

import pytest

from kdaudit.analysis.verdicts import Verdict, headline

STATS = {
    "standard": "kdaudit",
    "level": 0.05,
    "correction": "holm",
    "paired": False,
    "method": "auto",
    "primary_family_size": 12,
}
VERDICT_KEYS = (
    "knowledge transfer",
    "beyond regularisation",
    "negative transfer",
    "asymmetry",
    "negative asymmetric payoff",
)


def verdict(alpha: float, kt: str = "yes", br: str = "yes", nt: str = "yes", asym: str = "yes", **kw: Any) -> Verdict:
    """A KD verdict at ``alpha`` with 10 seeds per group; the payoff follows H3 and H4 unless given."""
    payoff = kw.pop("payoff", "yes" if nt == asym == "yes" else ("no" if "no" in (nt, asym) else "not testable"))
    tests = kw.pop("tests", {"H1": {"n_a": 10, "n_b": 10, "smallest_p_adjusted": 1e-4}})
    return Verdict(
        condition="kd",
        alpha=alpha,
        knowledge_transfer=kt,
        beyond_regularisation=br,
        negative_asymmetric_payoff=payoff,
        fidelity="yes",
        negative_transfer=nt,
        asymmetry=asym,
        tests=tests,
        **kw,
    )


def test_a_negative_asymmetric_payoff() -> None:
    text = headline([verdict(0.9)], STATS)
    assert text == (
        "KD students at α = 0.9 took real knowledge from the teacher beyond what a knowledge-free (random or "
        "label-smoothing) teacher gives, and copied its mistakes more than its correct answers: a negative "
        "asymmetric payoff."
    )


def test_no_payoff_because_they_moved_less_on_the_mistakes_relative_to_headroom() -> None:
    tests = {"H1": {"n_a": 10, "n_b": 10}, "H4": {"mean_diff": -0.07}}
    text = headline([verdict(0.9, asym="no", tests=tests)], STATS)
    assert text.endswith(
        "and copied its mistakes, but no negative asymmetric payoff: relative to the room each had left, they moved "
        "less on its mistakes than on its correct answers."
    )


def test_no_payoff_because_the_asymmetry_is_not_significant() -> None:
    tests = {"H1": {"n_a": 10, "n_b": 10}, "H4": {"mean_diff": 0.12}}
    text = headline([verdict(0.9, asym="no", tests=tests)], STATS)
    assert "they did not move significantly more on its mistakes than on its correct answers." in text


def test_no_payoff_without_negative_transfer_and_without_beyond_regularisation() -> None:
    text = headline([verdict(0.5, br="no", nt="no", asym="no")], STATS)
    assert text == (
        "KD students at α = 0.5 took real knowledge from the teacher, but not significantly more than a "
        "knowledge-free (random or label-smoothing) teacher gives, and did not copy its mistakes significantly: no "
        "negative asymmetric payoff."
    )


def test_the_paper_standard_reads_the_payoff_in_points() -> None:
    text = headline([verdict(0.9, asym="no", standard="paper")], {**STATS, "standard": "paper"})
    assert text.startswith("By the predecessor paper's standard (uncorrected tests): KD students at α = 0.9")
    assert "in points they moved no more on its mistakes than on its correct answers." in text


def test_no_transfer_at_any_alpha() -> None:
    vs = [verdict(a, kt="no", br="no", nt="no", asym="no") for a in (0.1, 0.5, 0.9)]
    assert headline(vs, STATS) == (
        "No significant transfer at any α (0.1, 0.5 and 0.9; 10 seeds per group): KD students agree with the "
        "teacher no more than students trained on the labels alone."
    )


def test_transfer_at_some_alphas_only() -> None:
    vs = [verdict(0.1, kt="no", br="no", nt="no", asym="no"), verdict(0.5), verdict(0.9)]
    text = headline(vs, STATS)
    assert text.startswith("KD students at α = 0.5 and 0.9 took real knowledge from the teacher")
    assert text.endswith("a negative asymmetric payoff. At α = 0.1: no significant transfer.")


def test_not_testable_with_too_few_seeds_says_how_many_would_do() -> None:
    tests = {"H1": {"n_a": 3, "n_b": 3, "smallest_p_adjusted": 1.0}}
    nt = dict(kt="not testable", br="not testable", nt="not testable", asym="not testable", tests=tests)
    vs = [verdict(a, **nt) for a in (0.1, 0.5, 0.9)]
    assert headline(vs, STATS) == (
        "Not testable: with 3 seeds per group, no test can reach the 0.05 level after holm correction over 12 "
        "primary tests; 6 seeds per group needed."
    )


def test_not_testable_without_a_control_gives_the_reason() -> None:
    v = verdict(
        0.5,
        kt="not testable",
        br="not testable",
        nt="not testable",
        asym="not testable",
        tests={},
        reasons={"knowledge_transfer": "there are no SIDDO students to compare with"},
    )
    assert headline([v], STATS) == "Not testable: there are no SIDDO students to compare with."


def test_no_verdicts() -> None:
    assert headline([], {}).startswith("No verdicts")


@pytest.mark.parametrize("standard", ["kdaudit", "paper"])
def test_the_headline_never_reads_like_a_terminal_verdict_line(standard: str) -> None:
    """The terminal's verdict lines read "<verdict> <answer>"; the headline printed above them
    never has a verdict's name followed by a space, so a reader (or a script) finds the answers."""
    outcomes = ("yes", "no", "not testable")
    for kt in outcomes:
        for br in outcomes:
            for nt in outcomes:
                for asym in outcomes:
                    v = verdict(0.9, kt=kt, br=br, nt=nt, asym=asym, standard=standard)
                    text = headline([v, verdict(0.1, kt="no")], {**STATS, "standard": standard})
                    assert not any(f"{k} " in text for k in VERDICT_KEYS), text
