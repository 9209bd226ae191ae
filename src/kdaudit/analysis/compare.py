"""The audit from saved logits: groups of students against a control group (PROTOCOL §7).

:func:`compare_logits` computes the §3 metrics of every student against the teacher, then decides
the verdicts of each group exactly as an audit does (:mod:`kdaudit.analysis.hypotheses`): the
primary family holds H1 (agreement), H3 (agreement on teacher-wrong samples) and H4 (asymmetry)
of every group against the control (SIDDO) students, and H2 (agreement against every random
control group given with ``rcd``), corrected together. Every other metric's test is secondary
(its own family, Benjamini–Hochberg by default). Files carry no seeds, so the tests are
unpaired (Mann–Whitney U). The result is JSON-safe: NaN becomes ``None`` (``null``); verdicts
are ``"yes"``, ``"no"`` or ``"not testable"``.

:func:`compare_audit` also returns the audit's tables (:class:`~kdaudit.analysis.audit.AuditTables`)
of the same students: :func:`logits_runs` makes the runs table of an audit from the logits (one
row per student, seeds numbered 1, 2, … in file order, the control as ``siddo``), and
:func:`~kdaudit.analysis.audit.build_audit_tables` decides on it exactly as :func:`compare_logits`
does. The files carry no α: the tables leave it empty (NaN) for every group but the control.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..errors import InputError
from .audit import AuditTables, build_audit_tables
from .catalogue import runs_columns, runs_metrics, student_metric_keys
from .hypotheses import (
    CONTROL,
    Decision,
    Design,
    Group,
    Unit,
    compare_groups,
    decide,
    is_regularisation_control,
    stream_seed,
)
from .metrics import accuracy, cross_entropy, functional_metrics_many
from .stats import CORRECTIONS, adjust_pvalues
from .transfer import TRANSFER_KEYS, transfer_effects
from .validation import validate_labels, validate_logits
from .verdicts import fmt_alpha

__all__ = [
    "METRIC_RESULT_KEYS",
    "compare_audit",
    "compare_logits",
    "json_safe",
    "logits_runs",
    "rcd_condition",
]

_ALPHA = 1.0
"""The α the tests are labelled with (their random streams are seeded by it): the files carry none,
so every output shows it as NaN. :func:`compare_logits` and :func:`compare_audit` use the same."""

_RESERVED = (CONTROL, "teacher")

METRIC_RESULT_KEYS = [
    "mean",
    "sem",
    "control_mean",
    "control_sem",
    "statistic",
    "p_value",
    "p_adjusted",
    "effect_size",
    "significant",
]


def json_safe(obj: Any) -> Any:
    """Recursively turn numpy scalars into Python ones and NaN/±Inf floats into ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _stack(arrays: Sequence[NDArray[np.floating]], label: str, shape: tuple[int, int]) -> np.ndarray:
    if len(arrays) < 2:
        raise InputError(f"{label} has {len(arrays)} logits array(s); at least 2 students are needed")
    checked = []
    for i, arr in enumerate(arrays):
        a = validate_logits(arr, f"{label} student {i + 1}")
        if a.shape != shape:
            raise InputError(f"{label} student {i + 1} has logits of shape {a.shape}, the teacher's are {shape}")
        checked.append(a)
    return np.stack(checked)


def _group(metrics: dict[str, np.ndarray]) -> Group:
    n = len(metrics["agreement"])
    return Group.of(
        np.arange(1, n + 1),
        **{k: metrics[k] for k in ("agreement", "agreement_teacher_correct", "agreement_teacher_wrong")},
    )


def rcd_condition(name: str) -> str:
    """The condition of a random-control group in the audit's tables: its own name when an audit reads
    that as a regularisation control (``rcd…`` or ``ls``), else ``rcd-<name>``."""
    return name if is_regularisation_control(name) else f"rcd-{name}"


@dataclass
class _Measured:
    """The §3 metrics of every student by group (random controls by their given names)."""

    teacher: NDArray[np.float64]
    labels: NDArray[np.int64]
    control: dict[str, np.ndarray]
    groups: dict[str, dict[str, np.ndarray]]
    rcd: dict[str, dict[str, np.ndarray]]


def _design(design: Design | None, level: float, correction: str) -> Design:
    if design is None:
        if correction not in CORRECTIONS:
            raise InputError(f"unknown correction {correction!r} (choose one of {', '.join(CORRECTIONS)})")
        if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
            raise InputError(f"significance level must lie in (0, 1), got {level}")
        design = Design(level=float(level), correction=correction)
    return replace(design, paired=False)


def _measure(
    teacher: NDArray[np.floating],
    labels: NDArray[np.integer],
    control: list[NDArray[np.floating]],
    groups: dict[str, list[NDArray[np.floating]]],
    rcd: dict[str, list[NDArray[np.floating]]] | None,
) -> _Measured:
    if not groups:
        raise InputError("no group to compare with the control")
    rcd = dict(rcd or {})
    if clash := sorted(set(groups) & set(rcd)):
        raise InputError(f"{', '.join(map(repr, clash))} is given both as --group and as --rcd")
    seen: dict[str, str] = {}
    for name in rcd:
        if (other := seen.setdefault(rcd_condition(name), name)) != name:
            raise InputError(f"random controls {other!r} and {name!r} would both be named {rcd_condition(name)!r}")
    zt = validate_logits(teacher, "teacher")
    y = validate_labels(labels, zt.shape[0], zt.shape[1])

    def metrics(arrays: list[NDArray[np.floating]], label: str) -> dict[str, np.ndarray]:
        return functional_metrics_many(zt, _stack(arrays, label, zt.shape), y)

    return _Measured(
        teacher=zt,
        labels=y,
        control=metrics(control, "control"),
        groups={name: metrics(arrays, f"group {name!r}") for name, arrays in groups.items()},
        rcd={name: metrics(arrays, f"random control {name!r}") for name, arrays in rcd.items()},
    )


def compare_logits(
    teacher: NDArray[np.floating],
    labels: NDArray[np.integer],
    control: list[NDArray[np.floating]],
    groups: dict[str, list[NDArray[np.floating]]],
    level: float = 0.05,
    correction: str = "holm",
    rcd: dict[str, list[NDArray[np.floating]]] | None = None,
    *,
    design: Design | None = None,
) -> dict[str, Any]:
    """Compare each group of students with the control group, from N × C test logits.

    Returns ``{"control": {"n"}, "rcd": {NAME: {"n"}}, "statistics": {...}, "groups": {NAME:
    {"n", "metrics": {METRIC: {...}}, "transfer": {...}, "verdicts": {...}, "reasons": {...},
    "asymmetry": {...}, "beyond_regularisation": {...} | None}}}`` with METRIC over
    :func:`~kdaudit.analysis.catalogue.student_metric_keys` and the metric fields
    :data:`METRIC_RESULT_KEYS` (``mean``/``sem`` of the group, ``control_mean``/``control_sem``,
    Mann–Whitney U of the group, raw and adjusted p, rank-biserial effect size, ``significant``,
    plus ``family``, ``mean_diff``, ``ci_low``, ``ci_high``, ``method``). ``rcd`` adds random-control
    groups that decide "beyond regularisation". ``design`` sets every statistical option (its
    level and correction win over ``level`` / ``correction``). Raises
    :class:`~kdaudit.errors.InputError` for fewer than 2 arrays in the control or a group, shapes
    that differ from the teacher's, bad labels, no groups, a group named like a random control,
    or a bad level/correction.
    """
    design = _design(design, level, correction)
    return _result(_measure(teacher, labels, control, groups, rcd), design)


def compare_audit(
    teacher: NDArray[np.floating],
    labels: NDArray[np.integer],
    control: list[NDArray[np.floating]],
    groups: dict[str, list[NDArray[np.floating]]],
    rcd: dict[str, list[NDArray[np.floating]]] | None = None,
    *,
    design: Design | None = None,
    run_ids: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, Any], AuditTables]:
    """:func:`compare_logits` and the audit's tables of the same students (:func:`logits_runs`,
    then :func:`~kdaudit.analysis.audit.build_audit_tables`); both give the same verdicts."""
    design = _design(design, 0.05, "holm")
    measured = _measure(teacher, labels, control, groups, rcd)
    tables = build_audit_tables(_runs(measured, run_ids), design=design)
    return _result(measured, design), _alpha_unknown(tables)


def logits_runs(
    teacher: NDArray[np.floating],
    labels: NDArray[np.integer],
    control: list[NDArray[np.floating]],
    groups: dict[str, list[NDArray[np.floating]]],
    rcd: dict[str, list[NDArray[np.floating]]] | None = None,
    run_ids: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """The runs table of an audit (:func:`~kdaudit.analysis.catalogue.runs_columns`) from test logits.

    One row for the teacher, then one per student: the control as ``siddo`` (α = 0), each group
    under its name and each random control as :func:`rcd_condition` of its name, at a placeholder
    α; seeds are 1, 2, … in the order given. ``run_ids`` names the students (e.g. by file), keyed
    by their condition in the table; by default ``<condition>-<seed>``. A group
    may not carry the name of a control (``siddo``, ``teacher``, ``ls``, ``rcd…``).
    """
    return _runs(_measure(teacher, labels, control, groups, rcd), run_ids)


def _runs(m: _Measured, run_ids: Mapping[str, Sequence[str]] | None) -> pd.DataFrame:
    for name in m.groups:
        if name in _RESERVED or is_regularisation_control(name):
            raise InputError(
                f"group name {name!r} is that of a control in an audit (siddo, teacher, ls, rcd…): "
                "rename the group, or give a random control with --rcd"
            )
    rows: list[dict[str, Any]] = [
        {
            "run_id": "teacher",
            "role": "teacher",
            "condition": "teacher",
            "alpha": math.nan,
            "temperature": math.nan,
            "seed": math.nan,
            "accuracy": accuracy(m.teacher, m.labels),
            "loss": cross_entropy(m.teacher, m.labels),
        }
    ]
    blocks = [(CONTROL, 0.0, m.control)]
    blocks += [(name, _ALPHA, v) for name, v in m.groups.items()]
    blocks += [(rcd_condition(name), _ALPHA, v) for name, v in m.rcd.items()]
    for condition, alpha, values in blocks:
        n = len(values["agreement"])
        ids = list((run_ids or {}).get(condition, [f"{condition}-{i}" for i in range(1, n + 1)]))
        if len(ids) != n:
            raise InputError(f"{len(ids)} run ids for the {n} students of {condition!r}")
        for i in range(n):
            row: dict[str, Any] = {
                "run_id": ids[i],
                "role": "student",
                "condition": condition,
                "alpha": alpha,
                "temperature": math.nan,
                "seed": i + 1,
            }
            row.update({metric.name: values[metric.key][i] for metric in runs_metrics()})
            rows.append(row)
    runs = pd.DataFrame(rows).reindex(columns=runs_columns())
    return runs.astype({"seed": "Int64"})  # the teacher has none


def _alpha_unknown(tables: AuditTables) -> AuditTables:
    """The tables with α NaN where it is the placeholder (every group but the control), in the tables,
    the verdicts and their sentences."""
    old, new = f"At α = {fmt_alpha(_ALPHA)},", f"At α = {fmt_alpha(math.nan)},"

    def relabel(text: Any) -> Any:
        return new + text[len(old) :] if isinstance(text, str) and text.startswith(old) else text

    def blank(df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        if len(out) and {"alpha", "condition"} <= set(out.columns):
            out["alpha"] = pd.to_numeric(out["alpha"]).astype(np.float64)
            out.loc[out["condition"].astype(str) != CONTROL, "alpha"] = math.nan
        if "verdict" in out.columns:
            out["verdict"] = out["verdict"].map(relabel)
        return out

    verdicts = [replace(v, alpha=math.nan, sentences=[relabel(s) for s in v.sentences]) for v in tables.verdicts]
    return AuditTables(
        runs=blank(tables.runs),
        tests=blank(tables.tests),
        transfer=blank(tables.transfer),
        summary=blank(tables.summary),
        verdicts=verdicts,
        statistics=dict(tables.statistics),
    )


def _decisions(m: _Measured, design: Design) -> dict[str, Decision]:
    """The primary family, decided as :func:`~kdaudit.analysis.audit.build_audit_tables` does on
    :func:`logits_runs` (the same groups, names, α label and seeds)."""
    regularisers = {rcd_condition(name): _group(v) for name, v in m.rcd.items()}
    units = [Unit(name, _ALPHA, _group(v), regularisers) for name, v in m.groups.items()]
    return {d.condition: d for d in decide(units, _group(m.control), design)}


def _secondary(m: _Measured, design: Design) -> dict[tuple[str, str], dict[str, Any]]:
    """Every other metric of every group against the control, corrected as one family."""
    secondary: dict[tuple[str, str], dict[str, Any]] = {}
    for name, values in m.groups.items():
        for key in student_metric_keys():
            if key in _PRIMARY_METRIC:
                continue
            secondary[(name, key)] = compare_groups(
                values[key],
                m.control[key],
                method=design.method,
                bootstrap=design.bootstrap,
                seed=stream_seed(design.seed, "vs_control", name, key),
                permutations=design.permutations,
            )
    order = list(secondary)
    adjusted = adjust_pvalues([secondary[k]["p_value"] for k in order], design.secondary_correction)
    for k, p in zip(order, adjusted.tolist(), strict=True):
        secondary[k]["p_adjusted"] = p
    return secondary


_PRIMARY_METRIC = {"agreement": "H1", "agreement_teacher_wrong": "H3"}


def _metric_rows(
    d: Decision, name: str, secondary: dict[tuple[str, str], dict[str, Any]], level: float
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for key in student_metric_keys():
        h = _PRIMARY_METRIC.get(key)
        r = d.tests[h] if h else secondary[(name, key)]
        padj = r["p_adjusted"]
        metrics[key] = {
            "mean": r["mean_a"],
            "sem": r["sem_a"],
            "control_mean": r["mean_b"],
            "control_sem": r["sem_b"],
            "statistic": r["statistic"],
            "p_value": r["p_value"],
            "p_adjusted": padj,
            "effect_size": r["effect_size"],
            "significant": bool(math.isfinite(padj) and padj < level),
            "family": "primary" if h else "secondary",
            "mean_diff": r["mean_diff"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
            "method": r["method"],
        }
    return metrics


def _result(m: _Measured, design: Design) -> dict[str, Any]:
    decisions = _decisions(m, design)
    secondary = _secondary(m, design)
    given = {rcd_condition(name): name for name in m.rcd}
    out: dict[str, Any] = {
        "control": {"n": len(m.control["agreement"])},
        "rcd": {name: {"n": len(v["agreement"])} for name, v in m.rcd.items()},
        "statistics": {
            "standard": design.standard,
            "level": design.level,
            "correction": design.primary_correction,
            "secondary_correction": design.secondary_correction,
            "method": design.method,
            "primary_family_size": sum(len(d.tests) for d in decisions.values()),
        },
        "groups": {},
    }
    for name, values in m.groups.items():
        d = decisions[name]
        tr: dict[str, Any] = transfer_effects(
            values["agreement_teacher_correct"],
            values["agreement_teacher_wrong"],
            m.control["agreement_teacher_correct"],
            m.control["agreement_teacher_wrong"],
        )
        tr["p_pos"] = secondary[(name, "agreement_teacher_correct")]["p_value"]
        tr["p_neg"] = d.tests["H3"]["p_value"]
        tr["negative_asymmetric_payoff"] = d.verdicts["negative_asymmetric_payoff"]
        h4 = d.tests["H4"]
        pts = d.asymmetry_points or {}
        h2 = d.tests.get("H2")
        out["groups"][name] = {
            "n": len(values["agreement"]),
            "metrics": _metric_rows(d, name, secondary, design.level),
            "transfer": {k: tr[k] for k in TRANSFER_KEYS},
            "verdicts": dict(d.verdicts),
            "reasons": dict(d.reasons),
            "asymmetry": {
                "statistic": h4["statistic"],
                "p_value": h4["p_value"],
                "p_adjusted": h4["p_adjusted"],
                "effect_size": h4["effect_size"],
                "mean_diff": h4["mean_diff"],
                "ci_low": h4["ci_low"],
                "ci_high": h4["ci_high"],
                "points_mean_diff": pts.get("mean_diff"),
                "points_p_value": pts.get("p_value"),
            },
            "beyond_regularisation": None
            if h2 is None
            else {
                "hardest_control": given[h2["control"]],
                "statistic": h2["statistic"],
                "p_value": h2["p_value"],
                "p_adjusted": h2["p_adjusted"],
                "effect_size": h2["effect_size"],
                "mean_diff": h2["mean_diff"],
            },
        }
    return json_safe(out)
