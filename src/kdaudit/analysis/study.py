"""A study's tables: one row per setup × distillation condition × α, pooled estimates per α.

From each setup's finished audit (its runs, transfer table and verdicts), :func:`build_study_tables`
gives

- ``rows`` (:data:`STUDY_COLUMNS`): the setup's modality, dataset and architecture, the
  teacher's accuracy and wrong count, the verdicts, and Δ± and h± each with its standard error
  (the figure that enters the pooled estimate, see :mod:`kdaudit.analysis.meta`) and 95 % interval
  (estimate ± t·SE, t on Welch–Satterthwaite degrees of freedom), and the p-values of the audit's
  tests;
- ``pooled`` (:data:`POOLED_COLUMNS`): per condition, α and quantity (Δ+, Δ−, h+, h−) the
  random-effects pooled estimate across setups with its interval and heterogeneity;
- ``failed``: the setups whose audit did not finish, with the error;
- ``sentences``: the cross-setup answer in plain words.

Δ and h are fractions (0.05 is 5 points), as in ``transfer.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from .hypotheses import is_regularisation_control
from .meta import headroom_share, mean_difference, random_effects, satterthwaite_df

__all__ = [
    "POOLED_COLUMNS",
    "QUANTITIES",
    "STUDY_COLUMNS",
    "SetupResult",
    "StudyTables",
    "build_study_tables",
    "load_setup_result",
    "pooled_table",
    "setup_rows",
    "study_sentences",
]

QUANTITIES = ("delta_pos", "delta_neg", "h_pos", "h_neg")
"""The per-setup effects pooled across setups: Δ+ and Δ− (points of agreement with the teacher,
KD minus SIDDO, on the samples it gets right / wrong) and h± (their share of the SIDDO headroom)."""

_VERDICTS = (
    "knowledge_transfer",
    "beyond_regularisation",
    "negative_transfer",
    "asymmetry",
    "negative_asymmetric_payoff",
)

STUDY_COLUMNS = [
    "setup",
    "modality",
    "dataset",
    "architecture",
    "dir",
    "condition",
    "alpha",
    "n_seeds",
    "teacher_accuracy",
    "n_teacher_wrong",
    "n_test",
    *_VERDICTS,
    "p_transfer",
    *[f"{q}{s}" for q in QUANTITIES for s in ("", "_se", "_ci_low", "_ci_high")],
    "p_pos",
    "p_neg_adjusted",
    "p_asymmetry_adjusted",
]

POOLED_COLUMNS = [
    "condition",
    "alpha",
    "quantity",
    "k",
    "estimate",
    "se",
    "ci_low",
    "ci_high",
    "p_value",
    "tau2",
    "i2",
    "q",
    "q_p",
    "method",
]


@dataclass
class SetupResult:
    """One setup's finished audit, as the study reads it (no model objects, no training)."""

    setup: str
    modality: str
    dataset: str
    architecture: str
    dir: str  # the audit directory, relative to the study directory
    runs: pd.DataFrame  # runs.csv
    transfer: pd.DataFrame  # transfer.csv
    verdicts: Sequence[Any]  # analysis.verdicts.Verdict
    tests: pd.DataFrame  # tests.csv
    teacher_accuracy: float
    n_teacher_wrong: int
    n_test: int


@dataclass
class StudyTables:
    rows: pd.DataFrame
    pooled: pd.DataFrame
    failed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["setup", "error"]))
    sentences: list[str] = field(default_factory=list)


def load_setup_result(audit_dir: str | Path, setup: str, rel_dir: str) -> SetupResult:
    """A finished audit directory as a :class:`SetupResult` (reads its spec, tables and
    ``audit.json``; raises :class:`~kdaudit.errors.KdauditError` when one is missing)."""
    import json

    import yaml

    from ..errors import KdauditError

    d = Path(audit_dir)
    need = ["spec.yaml", "runs.csv", "transfer.csv", "tests.csv", "audit.json"]
    missing = [n for n in need if not (d / n).is_file()]
    if missing:
        raise KdauditError(f"{d} is not a finished audit (missing {', '.join(missing)})")
    spec = yaml.safe_load((d / "spec.yaml").read_text()) or {}
    summary = json.loads((d / "audit.json").read_text())
    meta = summary.get("meta", {})
    student = (spec.get("student") or spec.get("model") or {}).get("name", "")
    teacher_m = ((spec.get("teacher") or {}).get("model") or spec.get("model") or {}).get("name", student)
    architecture = student if teacher_m == student else f"{teacher_m} → {student}"
    return SetupResult(
        setup=setup,
        modality=str(spec.get("modality") or ""),
        dataset=str((spec.get("data") or {}).get("name", meta.get("dataset", ""))),
        architecture=str(architecture),
        dir=rel_dir,
        runs=pd.read_csv(d / "runs.csv"),
        transfer=pd.read_csv(d / "transfer.csv"),
        verdicts=[SimpleNamespace(**v) for v in summary.get("verdicts", [])],
        tests=pd.read_csv(d / "tests.csv"),
        teacher_accuracy=float(meta.get("teacher_accuracy", math.nan)),
        n_teacher_wrong=int(meta.get("n_teacher_wrong", 0)),
        n_test=int(meta.get("n_test", 0)),
    )


def _students(runs: pd.DataFrame, condition: str, alpha: float | None) -> pd.DataFrame:
    s = runs.loc[(runs["role"].astype(str) == "student") & (runs["condition"].astype(str) == condition)]
    if alpha is not None:
        s = s.loc[np.isclose(pd.to_numeric(s["alpha"]).astype(float), alpha)]
    return s


def _primary_p(tests: pd.DataFrame, condition: str, alpha: float, hypothesis: str) -> float:
    t = tests.loc[
        (tests["condition"].astype(str) == condition)
        & np.isclose(pd.to_numeric(tests["alpha"], errors="coerce").astype(float), alpha)
        & (tests["family"].astype(str) == "primary")
        & (tests["hypothesis"].astype(str) == hypothesis)
    ]
    return float(t["p_adjusted"].iloc[0]) if len(t) else math.nan


def _transfer_value(transfer: pd.DataFrame, condition: str, alpha: float, col: str) -> float:
    t = transfer.loc[
        (transfer["condition"].astype(str) == condition)
        & np.isclose(pd.to_numeric(transfer["alpha"], errors="coerce").astype(float), alpha)
    ]
    return float(t[col].iloc[0]) if len(t) and col in t else math.nan


def _welch_dfs(xs: np.ndarray, cs: np.ndarray) -> tuple[float, float]:
    """Welch–Satterthwaite df of Δ = x̄ − c̄ and of h = Δ / (1 − c̄) (its delta-method terms)."""
    xs, cs = xs[np.isfinite(xs)], cs[np.isfinite(cs)]
    if len(xs) < 2 or len(cs) < 2:
        return math.nan, math.nan
    a, b = float(np.var(xs, ddof=1)) / len(xs), float(np.var(cs, ddof=1)) / len(cs)
    room = 1.0 - float(cs.mean())
    df_delta = satterthwaite_df([(a, len(xs)), (b, len(cs))])
    if room <= 0:
        return df_delta, math.nan
    b_h = b * (float(xs.mean()) - 1.0) ** 2 / room**4
    return df_delta, satterthwaite_df([(a / room**2, len(xs)), (b_h, len(cs))])


def setup_rows(result: SetupResult) -> list[dict[str, Any]]:
    """The study rows of one setup: one per judged condition (not SIDDO, not a regularisation
    control) and α, with Δ± and h± against SIDDO and their standard errors."""
    rows = []
    control = _students(result.runs, "siddo", None)
    for v in result.verdicts:
        cond, alpha = str(v.condition), float(v.alpha)
        if cond == "siddo" or is_regularisation_control(cond):
            continue
        x = _students(result.runs, cond, alpha)
        row: dict[str, Any] = {
            "setup": result.setup,
            "modality": result.modality,
            "dataset": result.dataset,
            "architecture": result.architecture,
            "dir": result.dir,
            "condition": cond,
            "alpha": alpha,
            "n_seeds": len(x),
            "teacher_accuracy": result.teacher_accuracy,
            "n_teacher_wrong": result.n_teacher_wrong,
            "n_test": result.n_test,
            **{k: str(getattr(v, k, "not testable")) for k in _VERDICTS},
            "p_transfer": _primary_p(result.tests, cond, alpha, "H1"),
        }
        for sign, metric in (("pos", "agreement_teacher_correct"), ("neg", "agreement_teacher_wrong")):
            xs = pd.to_numeric(x[metric], errors="coerce").to_numpy(float)
            cs = pd.to_numeric(control[metric], errors="coerce").to_numpy(float)
            df_delta, df_h = _welch_dfs(xs, cs)
            for name, (est, se), df in (
                (f"delta_{sign}", mean_difference(xs, cs), df_delta),
                (f"h_{sign}", headroom_share(xs, cs), df_h),
            ):
                half = float(sps.t.ppf(0.975, df)) * se if math.isfinite(df) else math.nan
                row.update({name: est, f"{name}_se": se, f"{name}_ci_low": est - half, f"{name}_ci_high": est + half})
        row["p_pos"] = _transfer_value(result.transfer, cond, alpha, "p_pos")
        row["p_neg_adjusted"] = _transfer_value(result.transfer, cond, alpha, "p_neg_adjusted")
        row["p_asymmetry_adjusted"] = _transfer_value(result.transfer, cond, alpha, "p_asymmetry_adjusted")
        rows.append(row)
    return rows


def pooled_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Random-effects pooled Δ± and h± across setups, per judged condition and α."""
    out = []
    if len(rows):
        for (cond, alpha), g in rows.groupby(["condition", "alpha"], sort=True):
            for q in QUANTITIES:
                p = random_effects(g[q].to_numpy(float), g[f"{q}_se"].to_numpy(float))
                out.append({"condition": cond, "alpha": float(alpha), "quantity": q, **asdict(p)})
    return pd.DataFrame(out, columns=POOLED_COLUMNS)


def _count(words: Sequence[str]) -> dict[str, int]:
    return {w: sum(1 for x in words if x == w) for w in ("yes", "no", "not testable")}


def _points(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{100 * x:+.1f}"


def _untestable(counts: dict[str, int]) -> str:
    return f" (not testable in {counts['not testable']})" if counts["not testable"] else ""


def _share(p: pd.Series) -> str:
    return f"{p['estimate']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]"


def study_sentences(rows: pd.DataFrame, pooled: pd.DataFrame, failed: pd.DataFrame) -> list[str]:
    """The cross-setup answer in plain words, per judged condition and α."""
    out: list[str] = []
    if not len(rows):
        out.append("No setup finished, so the study answers nothing.")
    for (cond, alpha), g in rows.groupby(["condition", "alpha"], sort=True) if len(rows) else []:
        m = len(g)
        tr = _count(list(g["knowledge_transfer"]))
        label = f"{cond} at α = {alpha:g}"
        by_mod = ", ".join(
            f"{mod} {int((mg['knowledge_transfer'] == 'yes').sum())}/{len(mg)}"
            for mod, mg in g.groupby("modality", sort=True)
        )
        s = f"{label}: knowledge transfer is significant in {tr['yes']} of {m} setups ({by_mod})"
        if tr["not testable"]:
            s += f"; not testable in {tr['not testable']}"
        out.append(s + ".")
        nt, asym = _count(list(g["negative_transfer"])), _count(list(g["asymmetry"]))
        out.append(
            f"{label}: negative transfer (KD students give the teacher's wrong label more often than SIDDO "
            f"students) is significant in {nt['yes']} of {m} setups{_untestable(nt)}; asymmetry (they close more "
            f"of the room on its mistakes than on its correct answers) in {asym['yes']} of {m}{_untestable(asym)}."
        )
        sig = g.loc[g["knowledge_transfer"] == "yes"]
        if len(sig):
            pay = _count(list(sig["negative_asymmetric_payoff"]))
            s = (
                f"{label}: negative asymmetric payoff in {pay['yes']} of the {len(sig)} setups where transfer is "
                f"significant"
            )
            if pay["not testable"]:
                s += f" (not testable in {pay['not testable']})"
            out.append(s + ".")
        pc = pooled.loc[(pooled["condition"] == cond) & np.isclose(pooled["alpha"], alpha)].set_index("quantity")
        if len(pc) and min(int(pc.loc[q, "k"]) for q in ("delta_neg", "delta_pos")) >= 2:
            dn, dp = pc.loc["delta_neg"], pc.loc["delta_pos"]
            hn, hp = pc.loc["h_neg"], pc.loc["h_pos"]
            s = (
                f"{label}, pooled over {int(dn['k'])} setups (random effects, 95 % intervals): KD students agree "
                f"with the teacher's mistakes by {_points(dn['estimate'])} points [{_points(dn['ci_low'])}, "
                f"{_points(dn['ci_high'])}] and with its correct answers by {_points(dp['estimate'])} points "
                f"[{_points(dp['ci_low'])}, {_points(dp['ci_high'])}] more than SIDDO students"
            )
            if min(int(hn["k"]), int(hp["k"])) >= 2:
                k_h = "" if int(hn["k"]) == int(dn["k"]) == int(hp["k"]) else f" (over {int(hn['k'])} setups)"
                s += (
                    f"; they close h− = {_share(hn)} of the room on its mistakes and h+ = {_share(hp)} on its "
                    f"correct answers{k_h}"
                )
            out.append(f"{s} (I² of Δ− {100 * dn['i2']:.0f} %).")
    if len(failed):
        out.append(f"{len(failed)} setup(s) did not finish and are not counted: {', '.join(failed['setup'])}.")
    return out


def build_study_tables(results: Sequence[SetupResult], failed: Sequence[tuple[str, str]] = ()) -> StudyTables:
    """The study's rows, pooled estimates and sentences from the setups' finished audits."""
    rows = pd.DataFrame([r for res in results for r in setup_rows(res)], columns=STUDY_COLUMNS)
    pooled = pooled_table(rows)
    failed_df = pd.DataFrame(list(failed), columns=["setup", "error"])
    return StudyTables(rows, pooled, failed_df, study_sentences(rows, pooled, failed_df))
