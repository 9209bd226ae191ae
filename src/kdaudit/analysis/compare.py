"""The audit from saved logits: groups of students against a control group (PROTOCOL §7).

:func:`compare_logits` computes the §3 metrics of every student against the teacher, then for
each group and each per-student metric a two-sided Mann–Whitney test against the control
(SIDDO) students, and the §4 transfer/payoff. The multiple-comparison family is **every
(group, metric) test of the call** (all metrics of all groups; NaN p-values excluded);
``significant`` is ``p_adjusted < level``. The result is JSON-safe: NaN becomes ``None``
(``null``) and ``negative_asymmetric_payoff`` is ``"yes"``, ``"no"`` or ``"not testable"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from .metrics import STUDENT_METRIC_KEYS, functional_metrics_many, validate_labels, validate_logits
from .stats import CORRECTIONS, adjust_pvalues, mann_whitney
from .transfer import payoff_label, transfer_payoff

__all__ = ["METRIC_RESULT_KEYS", "compare_logits", "json_safe"]

METRIC_RESULT_KEYS = [
    "mean", "sem", "control_mean", "control_sem", "statistic", "p_value", "p_adjusted",
    "effect_size", "significant",
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
        raise InputError(
            f"{label} has {len(arrays)} logits array(s); at least 2 students are needed"
        )
    checked = []
    for i, arr in enumerate(arrays):
        a = validate_logits(arr, f"{label} student {i + 1}")
        if a.shape != shape:
            raise InputError(
                f"{label} student {i + 1} has logits of shape {a.shape}, the teacher's are {shape}"
            )
        checked.append(a)
    return np.stack(checked)


def compare_logits(
    teacher: NDArray[np.floating],
    labels: NDArray[np.integer],
    control: list[NDArray[np.floating]],
    groups: dict[str, list[NDArray[np.floating]]],
    level: float = 0.05,
    correction: str = "holm",
) -> dict[str, Any]:
    """Compare each group of students with the control group, from N × C test logits.

    Returns ``{"control": {"n"}, "groups": {NAME: {"n", "metrics": {METRIC: {...}},
    "transfer": {...}}}}`` with METRIC over :data:`~kdaudit.analysis.metrics.STUDENT_METRIC_KEYS`
    and the metric fields :data:`METRIC_RESULT_KEYS` (``mean``/``sem`` of the group,
    ``control_mean``/``control_sem``, Mann–Whitney U of the group, raw and adjusted p,
    rank-biserial effect size, ``significant``). Raises :class:`~kdaudit.errors.InputError`
    for fewer than 2 arrays in the control or a group, shapes that differ from the teacher's,
    bad labels, no groups, or a bad level/correction.
    """
    if correction not in CORRECTIONS:
        raise InputError(f"unknown correction {correction!r} (choose one of {', '.join(CORRECTIONS)})")
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise InputError(f"significance level must lie in (0, 1), got {level}")
    if not groups:
        raise InputError("no group to compare with the control")
    zt = validate_logits(teacher, "teacher")
    y = validate_labels(labels, zt.shape[0], zt.shape[1])
    control_metrics = functional_metrics_many(zt, _stack(control, "control", zt.shape), y)
    group_metrics = {
        name: functional_metrics_many(zt, _stack(arrays, f"group {name!r}", zt.shape), y)
        for name, arrays in groups.items()
    }

    tests = {
        (name, key): mann_whitney(values[key], control_metrics[key])
        for name, values in group_metrics.items()
        for key in STUDENT_METRIC_KEYS
    }
    order = list(tests)
    adjusted = adjust_pvalues([tests[k].p_value for k in order], correction)
    p_adj = dict(zip(order, adjusted.tolist()))

    out: dict[str, Any] = {"control": {"n": len(control)}, "groups": {}}
    for name, values in group_metrics.items():
        metrics: dict[str, Any] = {}
        for key in STUDENT_METRIC_KEYS:
            r = tests[(name, key)]
            padj = p_adj[(name, key)]
            metrics[key] = {
                "mean": r.mean_a,
                "sem": r.sem_a,
                "control_mean": r.mean_b,
                "control_sem": r.sem_b,
                "statistic": r.statistic,
                "p_value": r.p_value,
                "p_adjusted": padj,
                "effect_size": r.effect_size,
                "significant": bool(math.isfinite(padj) and padj < level),
            }
        tr = transfer_payoff(
            values["agreement_teacher_correct"], values["agreement_teacher_wrong"],
            control_metrics["agreement_teacher_correct"], control_metrics["agreement_teacher_wrong"],
            level=level,
        )
        tr["negative_asymmetric_payoff"] = payoff_label(tr["negative_asymmetric_payoff"])
        out["groups"][name] = {"n": len(groups[name]), "metrics": metrics, "transfer": tr}
    return json_safe(out)
