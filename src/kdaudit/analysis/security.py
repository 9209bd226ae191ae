"""Security tables: the per-model security metrics through the audit's statistics.

Every security metric (columns of ``security_runs.csv``, see :mod:`kdaudit.security.evaluate`)
gets the same tests as the functional metrics: per distillation condition X ≠ ``siddo`` and α, a
two-sided Mann–Whitney test of X's students against all SIDDO students, and for non-RCD
conditions against each RCD condition at the same α. The multiple-comparison family is every
row of ``security_tests.csv`` (its own family, separate from ``tests.csv``). The sentences say in
plain words whether the KD students inherit the teacher's backdoor or its adversarial errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .audit import CONTROL, TESTS_COLUMNS, _test_row, _values, display_name, find_test, is_rcd
from .stats import adjust_pvalues, mann_whitney, mean_sem
from .transfer import format_p, p_equals
from .verdicts import fmt_alpha


@dataclass
class SecurityTables:
    runs: pd.DataFrame
    tests: pd.DataFrame
    summary: pd.DataFrame  # per condition and α (teacher first): n, <metric>_mean, <metric>_sem
    sentences: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # what was attacked and how (from the evaluation)


def build_security_tables(
    runs: pd.DataFrame, metrics: list[str], meta: dict, *, level: float = 0.05, correction: str = "holm"
) -> SecurityTables:
    students = runs.loc[runs["role"] == "student"]
    control = students.loc[students["condition"] == CONTROL]
    groups = {
        (str(c), float(a)): g
        for (c, a), g in students.loc[students["condition"] != CONTROL].groupby(["condition", "alpha"], sort=True)
    }
    rcd_at: dict[float, list[str]] = {}
    for cond, alpha in groups:
        if is_rcd(cond):
            rcd_at.setdefault(alpha, []).append(cond)

    rows: list[dict[str, Any]] = []
    for (cond, alpha), g in groups.items():
        opponents = [(f"vs_{CONTROL}", control)]
        if not is_rcd(cond):
            opponents += [(f"vs_{r}", groups[(r, alpha)]) for r in sorted(rcd_at.get(alpha, []))]
        for comparison, b in opponents:
            for m in metrics:
                res = mann_whitney(_values(g, m), _values(b, m))
                rows.append(_test_row(comparison, cond, alpha, m, res, "security"))
    tests = pd.DataFrame(rows, columns=TESTS_COLUMNS)
    if len(tests):
        tests["p_adjusted"] = adjust_pvalues(tests["p_value"].to_numpy(np.float64), correction)
        tests["significant"] = (tests["p_adjusted"] < level).astype(bool)
    tests = tests.astype({"n_a": "int64", "n_b": "int64", "significant": "bool"})

    summary_rows = []
    teacher = runs.loc[runs["role"] == "teacher"]
    parts = [("teacher", math.nan, teacher), (CONTROL, 0.0, control)] + [(c, a, g) for (c, a), g in groups.items()]
    for cond, alpha, g in parts:
        if g.empty:
            continue
        row: dict[str, Any] = {"condition": cond, "alpha": alpha, "n": int(len(g))}
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_sem"] = mean_sem(_values(g, m))
        summary_rows.append(row)
    summary = pd.DataFrame(summary_rows)

    sentences = _sentences(tests, summary, metrics, meta, correction)
    return SecurityTables(runs=runs.copy(), tests=tests, summary=summary, sentences=sentences, meta=dict(meta))


def _ms(mean: float, sem: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.3f} ± {sem:.3f}" if math.isfinite(sem) else f"{mean:.3f}"


def _p(row: pd.Series, correction: str) -> str:
    text = p_equals(row["p_value"])
    if correction != "none":
        text += f", {correction}-adjusted {format_p(row['p_adjusted'])}"
    return text


def _higher(row: pd.Series | None) -> str:
    if row is None or not math.isfinite(row["p_adjusted"]):
        return "not testable"
    return "yes" if bool(row["significant"]) and row["mean_a"] > row["mean_b"] else "no"


def _teacher(summary: pd.DataFrame, metric: str) -> float:
    t = summary.loc[summary["condition"] == "teacher"]
    return float(t[f"{metric}_mean"].iloc[0]) if len(t) else math.nan


MIN_TRANSFERABLE = 100


def sentence_level(adv: dict) -> str:
    """The ε the sentences speak of: the smallest with at least :data:`MIN_TRANSFERABLE`
    transferable examples (else the largest). Small budgets are where copying the teacher's
    adversarial errors is least automatic, and enough examples keep the per-student rates from
    being noise; each sentence also lists the ε at which the difference is significant, and the
    tables and figures give every ε."""
    labels = [f"{e:g}" for e in adv["levels"]]
    for lab in labels:
        if adv["n_transferable"].get(lab, 0) >= MIN_TRANSFERABLE:
            return lab
    return labels[-1]


def _sentences(
    tests: pd.DataFrame, summary: pd.DataFrame, metrics: list[str], meta: dict, correction: str
) -> list[str]:
    out: list[str] = []
    tested = list(zip(tests["condition"], tests["alpha"], strict=True))
    pairs = sorted({(c, a) for c, a in tested if not is_rcd(c)}, key=lambda p: (p[0], p[1]))
    if "backdoor_asr" in metrics:
        bd = meta.get("backdoor", {})
        out.append(
            f"Backdoor: the teacher was trained with {bd.get('trigger', 'a trigger')} on "
            f"{100 * float(bd.get('rate', 0)):g} % of its training data relabelled as class "
            f"{bd.get('target')}; its attack success rate (ASR) is {_teacher(summary, 'backdoor_asr'):.2f}. "
            + bd.get("transfer", {}).get("description", "Students were distilled on clean data.")
        )
        for cond, alpha in pairs:
            r = find_test(tests, f"vs_{CONTROL}", cond, alpha, "backdoor_asr")
            if r is None:
                continue
            name = display_name(cond)
            said = "inherit" if _higher(r) == "yes" else "do not significantly inherit"
            s = (
                f"{name} students at α = {fmt_alpha(alpha)} {said} the teacher's backdoor: ASR "
                f"{_ms(r['mean_a'], r['sem_a'])} vs SIDDO {_ms(r['mean_b'], r['sem_b'])} ({_p(r, correction)})"
            )
            beyond = []
            for rc in sorted({c for c, a in tested if is_rcd(c) and a == alpha}):
                rr = find_test(tests, f"vs_{rc}", cond, alpha, "backdoor_asr")
                if rr is not None:
                    s += f"; vs {display_name(rc)} {_ms(rr['mean_b'], rr['sem_b'])} ({_p(rr, correction)})"
                    beyond.append(_higher(rr) == "yes")
            if _higher(r) == "yes" and beyond and not all(beyond):
                s += (
                    "; but not above every random control, so the rise may come from the soft targets "
                    "as such (regularisation) rather than from the teacher's backdoor"
                )
            out.append(s + ".")
    adv = meta.get("adversarial")
    if adv:
        lab = sentence_level(adv)
        metric = f"adv_follows@{lab}"
        out.append(
            f"Adversarial transfer: {adv['attack']}; crafted on the teacher for {adv['n_attacked']} test "
            f"samples; at ε = {lab} it fools the teacher on {100 * adv['teacher_success'][lab]:.1f} % of "
            f"those it gets right ({adv['n_transferable'][lab]} transferable examples)."
        )
        for cond, alpha in pairs:
            r = find_test(tests, f"vs_{CONTROL}", cond, alpha, metric)
            if r is None:
                continue
            name = display_name(cond)
            yes = _higher(r) == "yes"
            said = (
                "inherit the teacher's adversarial errors"
                if yes
                else "do not copy the teacher's adversarial errors more than SIDDO students"
            )
            levels = [f"{e:g}" for e in adv["levels"]]
            sig = [
                lv
                for lv in levels
                if _higher(find_test(tests, f"vs_{CONTROL}", cond, alpha, f"adv_follows@{lv}")) == "yes"
            ]
            where = (
                f"significantly more than SIDDO at ε = {', '.join(sig)}"
                if sig
                else "at no ε significantly more than SIDDO"
            )
            out.append(
                f"{name} students at α = {fmt_alpha(alpha)} {said} (ε = {lab}): they output the "
                f"teacher's adversarial label on {_ms(r['mean_a'], r['sem_a'])} of its transferable examples "
                f"vs SIDDO {_ms(r['mean_b'], r['sem_b'])} ({_p(r, correction)}); {where} "
                f"(of ε = {', '.join(levels)})."
            )
    return out
