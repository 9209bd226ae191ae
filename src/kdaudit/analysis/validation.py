"""Checks of the arrays the metrics are computed from: logits and labels (PROTOCOL §3).

Every failure is an :class:`~kdaudit.errors.InputError` with a one-line message naming the
array. Labels: integer arrays are accepted; floating-point labels are accepted only when every
value is a finite whole number (they are converted to int64); booleans are rejected.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError

__all__ = [
    "FloatArray",
    "IntArray",
    "validate_labels",
    "validate_logits",
    "validate_logits_stack",
    "validate_pair",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _check_finite(arr: np.ndarray, name: str) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum()) - n_nan
        raise InputError(f"{name}: {n_nan + n_inf} non-finite value(s) in the logits ({n_nan} NaN, {n_inf} Inf)")


def _check_float_dtype(arr: object, name: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(arr).__name__}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{name}: logits must be floating point, got dtype {arr.dtype}")
    return arr


def validate_logits(arr: object, name: str = "logits") -> FloatArray:
    """Check a logits array (N samples × C classes) and return it as float64.

    Raises :class:`~kdaudit.errors.InputError` (one-line message naming ``name``) for a
    non-array, a non-floating dtype (integer, bool, object, complex), a shape that is not 2-D,
    N = 0, C < 2, or NaN/Inf values (the message says how many).
    """
    a = _check_float_dtype(arr, name)
    if a.ndim != 2:
        raise InputError(f"{name}: logits must be 2-D (N samples × C classes), got shape {tuple(a.shape)}")
    n, c = a.shape
    if n == 0:
        raise InputError(f"{name}: logits have no samples (shape {tuple(a.shape)})")
    if c < 2:
        raise InputError(f"{name}: logits need at least 2 classes, got C = {c}")
    _check_finite(a, name)
    return a.astype(np.float64, copy=False)


def validate_logits_stack(arr: object, name: str) -> NDArray[np.floating]:
    """Like :func:`validate_logits` for a stack of runs (R × N × C).

    The stack keeps its floating dtype (it is converted to float64 block by block).
    """
    if isinstance(arr, (list, tuple)):
        if len(arr) == 0:
            raise InputError(f"{name}: no student logits given")
        parts = [validate_logits(x, f"{name}[{i}]") for i, x in enumerate(arr)]
        shapes = {p.shape for p in parts}
        if len(shapes) != 1:
            raise InputError(f"{name}: the student arrays have different shapes {sorted(shapes)}")
        return np.stack(parts)
    a = _check_float_dtype(arr, name)
    if a.ndim != 3:
        raise InputError(
            f"{name}: expected a stack of logits (R runs × N samples × C classes), got shape {tuple(a.shape)}"
        )
    r, n, c = a.shape
    if r == 0:
        raise InputError(f"{name}: no student logits given (R = 0)")
    if n == 0:
        raise InputError(f"{name}: logits have no samples (shape {tuple(a.shape)})")
    if c < 2:
        raise InputError(f"{name}: logits need at least 2 classes, got C = {c}")
    _check_finite(a, name)
    return a


def validate_labels(labels: object, n: int, c: int, name: str = "labels") -> IntArray:
    """Check a label vector for ``n`` samples and ``c`` classes and return it as int64.

    Integer dtypes are accepted. Floating-point labels are accepted when every value is a
    finite whole number (e.g. ``3.0``); bool and other dtypes are rejected. Raises
    :class:`~kdaudit.errors.InputError` for a non-array, a shape that is not 1-D, a length
    other than ``n``, non-integer values, or values outside ``[0, c)``.
    """
    if not isinstance(labels, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(labels).__name__}")
    if labels.ndim != 1:
        raise InputError(f"{name}: labels must be 1-D (one class index per sample), got shape {tuple(labels.shape)}")
    if labels.dtype == np.bool_ or not (
        np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
    ):
        raise InputError(f"{name}: labels must be integers, got dtype {labels.dtype}")
    if labels.shape[0] != n:
        raise InputError(f"{name}: {labels.shape[0]} labels for {n} samples (lengths differ)")
    if np.issubdtype(labels.dtype, np.floating):
        bad = ~np.isfinite(labels) | (labels != np.floor(np.where(np.isfinite(labels), labels, 0)))
        n_bad = int(bad.sum())
        if n_bad:
            raise InputError(f"{name}: labels must be integers, {n_bad} value(s) are not whole numbers")
        out_range = (labels < 0) | (labels >= c)
    else:
        out_range = (labels < 0) | (labels >= c)
    n_out = int(out_range.sum())
    if n_out:
        raise InputError(f"{name}: {n_out} label(s) outside [0, {c}) (min {labels.min():g}, max {labels.max():g})")
    return labels.astype(np.int64, copy=False)


def validate_pair(t: object, s: object) -> tuple[FloatArray, FloatArray]:
    """Check teacher and student logits of one pair (same N × C shape) and return them as float64."""
    tt = validate_logits(t, "teacher")
    ss = validate_logits(s, "student")
    if tt.shape != ss.shape:
        raise InputError(f"teacher logits have shape {tt.shape} but student logits have shape {ss.shape}")
    return tt, ss
