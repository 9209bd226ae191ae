"""The audit from saved logits: groups of students against a control group (PROTOCOL §7).

:func:`compare_logits` computes the §3 metrics of every student against the teacher, then decides
the verdicts of each group exactly as an audit does (:mod:`kdaudit.analysis.hypotheses`): the
primary family holds H1 (agreement), H3 (agreement on teacher-wrong samples) and H4 (asymmetry)
of every group against the control (SIDDO) students, and H2 (agreement against every random
control group given with ``rcd``), corrected together. Every other metric's test is secondary
(its own family, Benjamini–Hochberg by default). Files carry no seeds, so the tests are
unpaired (Mann–Whitney U). The result is JSON-safe: NaN becomes ``None`` (``null``); verdicts
are ``"yes"``, ``"no"`` or ``"not testable"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from .catalogue import student_metric_keys
from .hypotheses import Design, Group, Unit, compare_groups, decide, stream_seed
from .metrics import functional_metrics_many
from .stats import CORRECTIONS, adjust_pvalues
from .transfer import TRANSFER_KEYS, transfer_effects
from .validation import validate_labels, validate_logits

__all__ = ["METRIC_RESULT_KEYS", "compare_logits", "json_safe"]

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
    if design is None:
        if correction not in CORRECTIONS:
            raise InputError(f"unknown correction {correction!r} (choose one of {', '.join(CORRECTIONS)})")
        if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
            raise InputError(f"significance level must lie in (0, 1), got {level}")
        design = Design(level=float(level), correction=correction)
    design = replace(design, paired=False)
    if not groups:
        raise InputError("no group to compare with the control")
    rcd = dict(rcd or {})
    if clash := sorted(set(groups) & set(rcd)):
        raise InputError(f"{', '.join(map(repr, clash))} is given both as --group and as --rcd")
    zt = validate_logits(teacher, "teacher")
    y = validate_labels(labels, zt.shape[0], zt.shape[1])
    control_metrics = functional_metrics_many(zt, _stack(control, "control", zt.shape), y)
    group_metrics = {
        name: functional_metrics_many(zt, _stack(arrays, f"group {name!r}", zt.shape), y)
        for name, arrays in groups.items()
    }
    rcd_metrics = {
        name: functional_metrics_many(zt, _stack(arrays, f"random control {name!r}", zt.shape), y)
        for name, arrays in rcd.items()
    }

    control_group = _group(control_metrics)
    regularisers = {name: _group(m) for name, m in rcd_metrics.items()}
    units = [Unit(name, math.nan, _group(m), regularisers) for name, m in group_metrics.items()]
    decisions = {d.condition: d for d in decide(units, control_group, design)}
    primary_metric = {"agreement": "H1", "agreement_teacher_wrong": "H3"}

    secondary: dict[tuple[str, str], dict[str, Any]] = {}
    for name, values in group_metrics.items():
        for key in student_metric_keys():
            if key in primary_metric:
                continue
            secondary[(name, key)] = compare_groups(
                values[key],
                control_metrics[key],
                method=design.method,
                bootstrap=design.bootstrap,
                seed=stream_seed(design.seed, "vs_control", name, key),
                permutations=design.permutations,
            )
    order = list(secondary)
    adjusted = adjust_pvalues([secondary[k]["p_value"] for k in order], design.secondary_correction)
    for k, p in zip(order, adjusted.tolist(), strict=True):
        secondary[k]["p_adjusted"] = p

    out: dict[str, Any] = {
        "control": {"n": len(control)},
        "rcd": {name: {"n": len(arrays)} for name, arrays in rcd.items()},
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
    for name, values in group_metrics.items():
        d = decisions[name]
        metrics: dict[str, Any] = {}
        for key in student_metric_keys():
            h = primary_metric.get(key)
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
                "significant": bool(math.isfinite(padj) and padj < design.level),
                "family": "primary" if h else "secondary",
                "mean_diff": r["mean_diff"],
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "method": r["method"],
            }
        tr: dict[str, Any] = transfer_effects(
            values["agreement_teacher_correct"],
            values["agreement_teacher_wrong"],
            control_metrics["agreement_teacher_correct"],
            control_metrics["agreement_teacher_wrong"],
        )
        tr["p_pos"] = secondary[(name, "agreement_teacher_correct")]["p_value"]
        tr["p_neg"] = d.tests["H3"]["p_value"]
        tr["negative_asymmetric_payoff"] = d.verdicts["negative_asymmetric_payoff"]
        h4 = d.tests["H4"]
        pts = d.asymmetry_points or {}
        h2 = d.tests.get("H2")
        out["groups"][name] = {
            "n": len(groups[name]),
            "metrics": metrics,
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
                "hardest_control": h2["control"],
                "statistic": h2["statistic"],
                "p_value": h2["p_value"],
                "p_adjusted": h2["p_adjusted"],
                "effect_size": h2["effect_size"],
                "mean_diff": h2["mean_diff"],
            },
        }
    return json_safe(out)
