"""Rates of adversarial attacks and of their transfer from a teacher to a student (numpy in, numpy out).

Pure functions of logits and labels: :func:`success_rate` of an attack on one model,
:func:`transferable_mask` (the examples on which the teacher made an adversarial error a student
could copy) and :func:`transfer_rates` (how a student fares on the teacher's adversarial examples).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError, SpecError

__all__ = ["success_rate", "transfer_rates", "transferable_mask"]


def _logits_labels(logits: ArrayLike, y: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    lg = np.asarray(logits)
    yy = np.asarray(y)
    if lg.ndim != 2 or yy.ndim != 1 or len(lg) != len(yy):
        raise InputError(f"{what}: need logits (n, classes) and labels (n,), got {lg.shape} and {yy.shape}")
    return lg, yy.astype(np.int64)


def _mask(mask: ArrayLike | None, n: int, what: str) -> np.ndarray:
    if mask is None:
        return np.ones(n, dtype=bool)
    m = np.asarray(mask)
    if m.shape != (n,) or m.dtype != bool:
        raise InputError(f"{what}: mask must be a boolean array of shape ({n},), got {m.dtype} {m.shape}")
    return m


def _rate(hits: np.ndarray) -> float:
    return float(hits.mean()) if hits.size else math.nan


def success_rate(
    logits: ArrayLike,
    y: ArrayLike,
    targeted: bool = False,
    target: ArrayLike | None = None,
) -> float:
    """Fraction of adversarial inputs on which the attack succeeded (NaN when empty).

    Untargeted: prediction != ``y``; targeted: prediction == ``target``.
    """
    lg, yy = _logits_labels(logits, y, "success_rate")
    pred = lg.argmax(1)
    if targeted:
        if target is None:
            raise SpecError("a targeted success rate needs target class ids")
        t = np.asarray(target).astype(np.int64)
        if t.shape != yy.shape:
            raise InputError(f"success_rate: targets {t.shape} do not match labels {yy.shape}")
        return _rate(pred == t)
    return _rate(pred != yy)


def transferable_mask(teacher_logits_clean: ArrayLike, teacher_logits_adv: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Samples the teacher classified right and whose adversarial version fools it.

    This is the transferable set that :func:`transfer_rates` is meant to be restricted to:
    only there did the teacher make an adversarial error a student could copy.
    """
    c, yy = _logits_labels(teacher_logits_clean, y, "transferable_mask")
    a, _ = _logits_labels(teacher_logits_adv, y, "transferable_mask")
    if c.shape != a.shape:
        raise InputError(f"transferable_mask: clean {c.shape} and adversarial {a.shape} logits differ")
    return (c.argmax(1) == yy) & (a.argmax(1) != yy)


def transfer_rates(
    student_logits_adv: ArrayLike,
    teacher_adv_labels: ArrayLike,
    y: ArrayLike,
    student_logits_clean: ArrayLike | None = None,
    mask: ArrayLike | None = None,
) -> dict[str, float | int]:
    """How a student fares on adversarial examples crafted on the teacher.

    ``mask`` (boolean, one per sample) restricts every rate to a subset; pass
    :func:`transferable_mask` (teacher right on the clean input, fooled on the adversarial one)
    so that only teacher errors a student could inherit count. Without it all samples count.
    Returns, over the masked samples (NaN when there are none):

    - ``fooled``: fraction the student misclassifies (argmax != y);
    - ``follows_teacher``: fraction where the student's label equals the teacher's adversarial
      label and that label is wrong (the teacher's error copied);
    - ``adv_accuracy``: student accuracy on the adversarial inputs (= 1 − fooled);
    - ``n``: number of masked samples;

    and with ``student_logits_clean`` also ``clean_accuracy`` (student on the clean inputs),
    ``n_correct`` (masked samples the student gets right when clean) and ``fooled_of_correct``
    = #(masked, right when clean, wrong when adversarial) / ``n_correct``: the attack flipped
    the student's own correct prediction, so its clean errors are not counted as transfer
    (the audit's ``adv_flipped@ε``; NaN when ``n_correct`` is 0).
    """
    lg, yy = _logits_labels(student_logits_adv, y, "transfer_rates")
    t = np.asarray(teacher_adv_labels)
    if t.shape != yy.shape:
        raise InputError(f"transfer_rates: teacher labels {t.shape} do not match labels {yy.shape}")
    t = t.astype(np.int64)
    m = _mask(mask, len(yy), "transfer_rates")
    pred = lg.argmax(1)[m]
    ym, tm = yy[m], t[m]
    out: dict[str, float | int] = {
        "fooled": _rate(pred != ym),
        "follows_teacher": _rate((pred == tm) & (tm != ym)),
        "adv_accuracy": _rate(pred == ym),
        "n": int(m.sum()),
    }
    if student_logits_clean is not None:
        cl, _ = _logits_labels(student_logits_clean, y, "transfer_rates")
        if cl.shape != lg.shape:
            raise InputError(f"transfer_rates: clean {cl.shape} and adversarial {lg.shape} logits differ")
        right = cl.argmax(1)[m] == ym
        out["clean_accuracy"] = _rate(right)
        out["fooled_of_correct"] = _rate(pred[right] != ym[right])
        out["n_correct"] = int(right.sum())
    return out
