"""Functional metrics of a student against its teacher, from logits (PROTOCOL §3).

Everything is computed in float64 with numpy, vectorised over samples (and over runs in
:func:`functional_metrics_many`). With ``p = softmax(teacher logits)`` and
``q = softmax(student logits)`` per sample:

- ``accuracy`` / ``cross_entropy`` of one model against the labels;
- ``activation_distance`` = mean ‖p − q‖₂ (range [0, √2]);
- ``js_divergence`` = mean [½ KL(p ‖ m) + ½ KL(q ‖ m)], m = (p + q)/2, in nats, 0·log 0 = 0;
- ``prediction_disagreement`` = mean 1[argmax p ≠ argmax q] and ``agreement`` = 1 − that;
- ``logit_cosine`` = mean cos(z_teacher, z_student) (a zero logit row gives cosine 0);
- ``rank_disagreement`` = mean fraction of the C(C−1)/2 class pairs ordered oppositely by p and q
  (pairs tied in either vector are not discordant);
- conditional agreement on the samples the teacher gets right (𝒞) and wrong (𝒲).

Argmax ties take the lowest class index (``np.argmax``), and the argmax is taken on the
probabilities, as the protocol defines it.

The metrics are named in :mod:`kdaudit.analysis.catalogue`: :func:`functional_metrics` returns
exactly the keys of :func:`~kdaudit.analysis.catalogue.metric_keys`, in that order. The logits
and labels are checked by :mod:`kdaudit.analysis.validation`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from .catalogue import METRICS, metric_keys
from .validation import (
    FloatArray,
    IntArray,
    validate_labels,
    validate_logits,
    validate_logits_stack,
    validate_pair,
)

__all__ = [
    "EmptySubsetWarning",
    "MetricAccumulator",
    "accuracy",
    "activation_distance",
    "agreement",
    "conditional_agreement",
    "cross_entropy",
    "functional_metrics",
    "functional_metrics_many",
    "js_divergence",
    "logit_cosine",
    "prediction_disagreement",
    "rank_disagreement",
    "softmax",
    "validate_labels",
    "validate_logits",
]

_INT_KEYS = frozenset(m.key for m in METRICS if m.integer)

# Samples are processed in blocks of about _BLOCK_ELEMENTS float64 values per temporary
# (cache-sized), but with at least _MIN_PAIR_ELEMENTS values per class-pair operation of the
# rank kernel, so that many classes do not turn into many tiny numpy calls.
_BLOCK_ELEMENTS = 1 << 16
_MIN_PAIR_ELEMENTS = 1 << 13


def _block_size(runs: int, classes: int) -> int:
    """Number of samples per block for ``runs`` students with ``classes`` classes."""
    return max(1, _BLOCK_ELEMENTS // (runs * classes), -(-_MIN_PAIR_ELEMENTS // runs))


class EmptySubsetWarning(RuntimeWarning):
    """The teacher-correct or teacher-wrong set is empty: its conditional agreement is NaN."""


# ---------------------------------------------------------------------------------------------
# Per-sample kernels. They work in "class-first" layout: axis 0 is the class axis, the other
# axes are (runs ×) samples, so that reductions over classes are elementwise operations on
# contiguous arrays. A teacher array (C × n) broadcasts against a student stack (C × R × n)
# once given a middle axis of length 1.
# ---------------------------------------------------------------------------------------------

_TINY = np.finfo(np.float64).tiny


def _class_first(z: NDArray[np.floating]) -> FloatArray:
    """Move the last (class) axis to the front, as a contiguous float64 array."""
    return np.moveaxis(z, -1, 0).astype(np.float64, order="C")


def _softmax_cf(z: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Stable softmax and log-softmax over axis 0 (one exponential pass)."""
    shifted = z - z.max(axis=0)
    p = np.exp(shifted)
    total = p.sum(axis=0)
    p /= total
    shifted -= np.log(total)
    return p, shifted


def _xlogx_sum(p: FloatArray) -> FloatArray:
    """Σ_c p_c log p_c per sample, with 0·log 0 = 0.

    The log is taken of p itself (not of the log-softmax), exactly as for m in :func:`_js_cf`,
    so that identical distributions give a JS divergence of exactly 0.
    """
    return np.einsum("c...,c...->...", p, np.log(np.maximum(p, _TINY)))


def _js_cf(p: FloatArray, p_logp: FloatArray, q: FloatArray, q_logq: FloatArray) -> FloatArray:
    """JS divergence per sample from entropies: ½Σp log p + ½Σq log q − Σm log m.

    ``p_logp`` and ``q_logq`` are the per-sample Σ x log x (:func:`_xlogx_sum`). Exact zeros
    (underflowed probabilities) contribute 0·log(tiny) = 0, i.e. 0·log 0 = 0. The result is
    clipped at 0 against rounding.
    """
    m = p + q
    m *= 0.5
    js = 0.5 * (p_logp + q_logq) - _xlogx_sum(m)
    return np.maximum(js, 0.0)


def _ad_cf(p: FloatArray, q: FloatArray) -> FloatArray:
    d = q - p
    return np.sqrt(np.einsum("c...,c...->...", d, d))


def _cosine_cf(zt: FloatArray, zs: FloatArray) -> FloatArray:
    dot = np.einsum("c...,c...->...", zt, zs)
    den = np.sqrt(np.einsum("c...,c...->...", zt, zt)) * np.sqrt(np.einsum("c...,c...->...", zs, zs))
    out = np.zeros(np.broadcast_shapes(dot.shape, den.shape))
    return np.divide(dot, den, out=out, where=den > 0)


def _rank_cf(p: FloatArray, q: FloatArray) -> FloatArray:
    """Fraction of class pairs (a < b) with (p_a − p_b)(q_a − q_b) < 0, per sample.

    The teacher's pair order is reduced to a sign (−1, 0, +1), so the test is
    sign(p_a − p_b)·(q_a − q_b) < 0: exact (no product can underflow to a false tie), and a
    tie in either vector gives 0, i.e. not discordant. One pair at a time keeps memory at one
    sample block.
    """
    c = p.shape[0]
    shape = np.broadcast_shapes(p.shape[1:], q.shape[1:])
    count = np.zeros(shape, dtype=np.int64)
    buf = np.empty(shape, dtype=np.float64)
    mask = np.empty(shape, dtype=bool)
    for a in range(c - 1):
        for b in range(a + 1, c):
            sign_p = np.sign(p[a] - p[b])
            np.subtract(q[a], q[b], out=buf)
            np.multiply(buf, sign_p, out=buf)
            np.less(buf, 0.0, out=mask)
            count += mask
    return count / (c * (c - 1) / 2)


# ---------------------------------------------------------------------------------------------
# Single-pair public functions
# ---------------------------------------------------------------------------------------------


def softmax(logits: NDArray[np.floating], temperature: float = 1.0) -> FloatArray:
    """Numerically stable softmax of ``logits / temperature`` along the class axis (float64)."""
    z = validate_logits(logits, "logits")
    if not (math.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature must be a positive finite number, got {temperature}")
    shifted = z / temperature
    shifted -= shifted.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _probs(z: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Class-first (probabilities, log-probabilities) of N × C logits."""
    return _softmax_cf(_class_first(z))


def accuracy(logits: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    """Fraction of samples whose argmax class (lowest index on ties) equals the label."""
    z = validate_logits(logits, "logits")
    y = validate_labels(labels, z.shape[0], z.shape[1])
    p, _ = _probs(z)
    return float(np.mean(np.argmax(p, axis=0) == y))


def cross_entropy(logits: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    """Mean cross-entropy (nats) of the softmax of ``logits`` against ``labels``."""
    z = validate_logits(logits, "logits")
    y = validate_labels(labels, z.shape[0], z.shape[1])
    _, logp = _probs(z)
    return float(-np.mean(np.take_along_axis(logp, y[None, :], axis=0)))


def activation_distance(t: NDArray[np.floating], s: NDArray[np.floating]) -> float:
    """Mean Euclidean distance between teacher and student probability vectors."""
    tt, ss = validate_pair(t, s)
    return float(np.mean(_ad_cf(_probs(tt)[0], _probs(ss)[0])))


def js_divergence(t: NDArray[np.floating], s: NDArray[np.floating]) -> float:
    """Mean Jensen–Shannon divergence (nats, max ln 2) between teacher and student."""
    tt, ss = validate_pair(t, s)
    p, _ = _probs(tt)
    q, _ = _probs(ss)
    return float(np.mean(_js_cf(p, _xlogx_sum(p), q, _xlogx_sum(q))))


def prediction_disagreement(t: NDArray[np.floating], s: NDArray[np.floating]) -> float:
    """Fraction of samples whose teacher and student argmax classes differ."""
    tt, ss = validate_pair(t, s)
    return float(np.mean(np.argmax(_probs(tt)[0], 0) != np.argmax(_probs(ss)[0], 0)))


def agreement(t: NDArray[np.floating], s: NDArray[np.floating]) -> float:
    """Fraction of samples whose teacher and student argmax classes agree (1 − disagreement)."""
    return 1.0 - prediction_disagreement(t, s)


def logit_cosine(t: NDArray[np.floating], s: NDArray[np.floating]) -> float:
    """Mean cosine similarity of the raw logit vectors (0 for a sample with a zero logit row)."""
    tt, ss = validate_pair(t, s)
    return float(np.mean(_cosine_cf(_class_first(tt), _class_first(ss))))


def rank_disagreement(t: NDArray[np.floating], s: NDArray[np.floating]) -> float:
    """Mean fraction of class pairs the two probability vectors order oppositely."""
    tt, ss = validate_pair(t, s)
    n, c = tt.shape
    step = _block_size(1, c)
    total = 0.0
    for lo in range(0, n, step):
        p, _ = _probs(tt[lo : lo + step])
        q, _ = _probs(ss[lo : lo + step])
        total += float(_rank_cf(p, q).sum())
    return total / n


def _warn_empty(which: str) -> None:
    warnings.warn(
        f"the teacher-{which} set is empty: agreement_teacher_{which} is NaN",
        EmptySubsetWarning,
        stacklevel=3,
    )


def conditional_agreement(
    t: NDArray[np.floating], s: NDArray[np.floating], labels: NDArray[np.integer]
) -> tuple[float, float, int, int]:
    """Agreement on the teacher-correct and teacher-wrong samples.

    Returns ``(agree_correct, agree_wrong, n_correct, n_wrong)``. ``agree_wrong`` is the
    fraction of teacher-wrong samples on which the student predicts the teacher's wrong label.
    An empty set gives NaN and an :class:`EmptySubsetWarning`.
    """
    tt, ss = validate_pair(t, s)
    y = validate_labels(labels, tt.shape[0], tt.shape[1])
    pt = np.argmax(_probs(tt)[0], 0)
    agree = pt == np.argmax(_probs(ss)[0], 0)
    correct = pt == y
    n_c = int(correct.sum())
    n_w = int(correct.size - n_c)
    if n_c == 0:
        _warn_empty("correct")
    if n_w == 0:
        _warn_empty("wrong")
    a_c = float((agree & correct).sum() / n_c) if n_c else math.nan
    a_w = float((agree & ~correct).sum() / n_w) if n_w else math.nan
    return a_c, a_w, n_c, n_w


# ---------------------------------------------------------------------------------------------
# All metrics: running sums, one pair, many runs, streaming
# ---------------------------------------------------------------------------------------------

_SUM_KEYS = (
    "student_correct",
    "student_ce",
    "activation_distance",
    "js_divergence",
    "disagree",
    "logit_cosine",
    "rank_disagreement",
    "agree_correct",
    "agree_wrong",
)


def _block_sums(zt: FloatArray, zs: NDArray[np.floating], y: IntArray) -> dict[str, np.ndarray | int]:
    """Per-run sums over one block of samples.

    ``zt``: teacher logits (n × C); ``zs``: student logits (R × n × C); ``y``: labels (n).
    Teacher quantities are computed once for the block and broadcast over the R runs.
    """
    zt_cf = _class_first(zt)[:, None, :]  # C × 1 × n
    zs_cf = _class_first(zs)  # C × R × n
    pt, _ = _softmax_cf(zt_cf)
    pred_t = np.argmax(pt, axis=0)  # 1 × n
    correct_t = pred_t == y

    qs, logqs = _softmax_cf(zs_cf)
    pred_s = np.argmax(qs, axis=0)  # R × n
    agree = pred_s == pred_t
    log_q_label = np.take_along_axis(logqs, np.broadcast_to(y[None, None, :], (1,) + logqs.shape[1:]), axis=0)[0]

    return {
        "n": int(y.size),
        "teacher_correct": int(correct_t.sum()),
        "student_correct": (pred_s == y).sum(axis=-1),
        "student_ce": -log_q_label.sum(axis=-1),
        "activation_distance": _ad_cf(pt, qs).sum(axis=-1),
        "js_divergence": _js_cf(pt, _xlogx_sum(pt), qs, _xlogx_sum(qs)).sum(axis=-1),
        "disagree": (~agree).sum(axis=-1),
        "logit_cosine": _cosine_cf(zt_cf, zs_cf).sum(axis=-1),
        "rank_disagreement": _rank_cf(pt, qs).sum(axis=-1),
        "agree_correct": (agree & correct_t).sum(axis=-1),
        "agree_wrong": (agree & ~correct_t).sum(axis=-1),
    }


def _stack_sums(zt: FloatArray, zs: NDArray[np.floating], y: IntArray) -> dict[str, np.ndarray | int]:
    """Per-run sums over all samples, processed in sample blocks of bounded memory."""
    r, n, c = zs.shape
    step = _block_size(r, c)
    totals: dict[str, np.ndarray | int] = {"n": 0, "teacher_correct": 0}
    for key in _SUM_KEYS:
        totals[key] = np.zeros(r, dtype=np.float64)
    for lo in range(0, n, step):
        part = _block_sums(zt[lo : lo + step], zs[:, lo : lo + step], y[lo : lo + step])
        for key, value in part.items():
            totals[key] = totals[key] + value
    return totals


def _finalise(sums: dict[str, np.ndarray | int]) -> dict[str, np.ndarray]:
    """Turn per-run sums into the arrays of every metric key (length R), in catalogue order."""
    n = int(sums["n"])
    n_c = int(sums["teacher_correct"])
    n_w = n - n_c
    r = np.asarray(sums["student_correct"]).shape[0]
    if n_c == 0:
        _warn_empty("correct")
    if n_w == 0:
        _warn_empty("wrong")
    nan = np.full(r, np.nan)
    return {
        "teacher_accuracy": np.full(r, n_c / n),
        "student_accuracy": np.asarray(sums["student_correct"], dtype=np.float64) / n,
        "student_loss": np.asarray(sums["student_ce"], dtype=np.float64) / n,
        "activation_distance": np.asarray(sums["activation_distance"], dtype=np.float64) / n,
        "js_divergence": np.asarray(sums["js_divergence"], dtype=np.float64) / n,
        "prediction_disagreement": np.asarray(sums["disagree"], dtype=np.float64) / n,
        "agreement": 1.0 - np.asarray(sums["disagree"], dtype=np.float64) / n,
        "logit_cosine": np.asarray(sums["logit_cosine"], dtype=np.float64) / n,
        "rank_disagreement": np.asarray(sums["rank_disagreement"], dtype=np.float64) / n,
        "agreement_teacher_correct": (np.asarray(sums["agree_correct"], dtype=np.float64) / n_c if n_c else nan),
        "agreement_teacher_wrong": (np.asarray(sums["agree_wrong"], dtype=np.float64) / n_w if n_w else nan.copy()),
        "n_teacher_correct": np.full(r, n_c, dtype=np.int64),
        "n_teacher_wrong": np.full(r, n_w, dtype=np.int64),
    }


def _to_scalars(arrays: dict[str, np.ndarray], i: int = 0) -> dict[str, float | int]:
    return {k: (int(arrays[k][i]) if k in _INT_KEYS else float(arrays[k][i])) for k in metric_keys()}


def functional_metrics(
    teacher_logits: NDArray[np.floating],
    student_logits: NDArray[np.floating],
    labels: NDArray[np.integer],
) -> dict[str, float | int]:
    """All §3 metrics of one student against the teacher: a dict with exactly the metric keys.

    ``n_teacher_correct`` and ``n_teacher_wrong`` are ints, everything else floats (NaN for
    the conditional agreement on an empty set, with an :class:`EmptySubsetWarning`).
    """
    zt, zs = validate_pair(teacher_logits, student_logits)
    y = validate_labels(labels, zt.shape[0], zt.shape[1])
    return _to_scalars(_finalise(_stack_sums(zt, zs[None], y)))


def functional_metrics_many(
    teacher_logits: NDArray[np.floating],
    students: NDArray[np.floating] | Sequence[NDArray[np.floating]],
    labels: NDArray[np.integer],
) -> dict[str, np.ndarray]:
    """All §3 metrics for R students at once.

    ``students`` is an R × N × C array (or a sequence of N × C arrays). Returns a dict with
    exactly the metric keys, each an array of length R (float64; int64 for the ``n_*`` keys;
    teacher-only keys repeated). The teacher's softmax/argmax are computed once.
    """
    zt = validate_logits(teacher_logits, "teacher")
    zs = validate_logits_stack(students, "students")
    if zs.shape[1:] != zt.shape:
        raise InputError(f"teacher logits have shape {zt.shape} but student logits have shape {zs.shape[1:]}")
    y = validate_labels(labels, zt.shape[0], zt.shape[1])
    return _finalise(_stack_sums(zt, zs, y))


class MetricAccumulator:
    """Streaming §3 metrics over batches of test samples, keeping only running sums.

    ``compute()`` equals :func:`functional_metrics` on the concatenated batches (to rounding).
    """

    def __init__(self) -> None:
        self._sums: dict[str, np.ndarray | int] | None = None
        self._n_classes: int | None = None

    def update(
        self,
        teacher_logits_batch: NDArray[np.floating],
        student_logits_batch: NDArray[np.floating],
        labels_batch: NDArray[np.integer],
    ) -> None:
        """Add one batch (n × C teacher and student logits, n labels)."""
        zt, zs = validate_pair(teacher_logits_batch, student_logits_batch)
        if self._n_classes is not None and zt.shape[1] != self._n_classes:
            raise InputError(f"batch has {zt.shape[1]} classes but earlier batches had {self._n_classes}")
        y = validate_labels(labels_batch, zt.shape[0], zt.shape[1])
        part = _stack_sums(zt, zs[None], y)
        if self._sums is None:
            self._sums = part
            self._n_classes = zt.shape[1]
        else:
            for key, value in part.items():
                self._sums[key] = self._sums[key] + value

    @property
    def n_samples(self) -> int:
        """Number of samples seen so far."""
        return 0 if self._sums is None else int(self._sums["n"])

    def compute(self) -> dict[str, float | int]:
        """The metrics of all batches so far (same keys and types as functional_metrics)."""
        if self._sums is None:
            raise InputError("no batch was given to the metric accumulator")
        return _to_scalars(_finalise(self._sums))
