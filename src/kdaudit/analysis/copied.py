"""Which of the teacher's mistakes the students copy.

Over the teacher-wrong test samples 𝒲 (those whose teacher prediction ``t_i`` differs from the
label ``y_i``), a student *copies* the teacher on sample ``i`` when it outputs the teacher's wrong
label ``t_i``. For every group of students (a condition at an α) :func:`follow_shares` gives, per
sample of 𝒲, the share of the group's students that copy (the table ``copied.csv``);
:func:`compare` sets KD at one α against the SIDDO control (same initialisation, different data
order): per (true class → teacher label) pair and per sample, the KD share, the SIDDO share and
their difference, ranked by the difference.

Every function is pure (numpy and pandas only)::

    >>> import numpy as np
    >>> y = np.array([0, 1, 2, 1])
    >>> t = np.array([0, 2, 1, 2])                       # the teacher is wrong on samples 1, 2, 3
    >>> kd = np.array([[0, 2, 1, 1], [0, 2, 2, 2]])      # 2 KD students
    >>> siddo = np.array([[0, 1, 2, 1], [0, 2, 2, 1]])   # 2 SIDDO students
    >>> follow_shares(y, t, {"siddo": siddo, "kd@0.9": kd})
       sample  label  teacher_label  siddo  kd@0.9
    0       1      1              2    0.5     1.0
    1       2      2              1    0.0     0.5
    2       3      1              2    0.0     0.5
    >>> c = compare(y, t, kd, siddo)
    >>> c.pairs
       label  teacher_label  samples  kd_share  siddo_share  difference
    0      1              2        2      0.75         0.25         0.5
    1      2              1        1      0.50         0.00         0.5
    >>> c.samples["sample"].tolist()
    [1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import InputError
from .verdicts import fmt_alpha

__all__ = [
    "BASE_COLUMNS",
    "CONTROL",
    "PAIR_COLUMNS",
    "SAMPLE_COLUMNS",
    "Copying",
    "compare",
    "compare_shares",
    "difference_matrix",
    "follow_shares",
    "group_name",
    "parse_group_name",
    "teacher_wrong",
]

CONTROL = "siddo"
#: The first columns of ``copied.csv``; one column per student group follows.
BASE_COLUMNS = ["sample", "label", "teacher_label"]
PAIR_COLUMNS = ["label", "teacher_label", "samples", "kd_share", "siddo_share", "difference"]
SAMPLE_COLUMNS = ["sample", "label", "teacher_label", "kd_share", "siddo_share", "difference"]

NO_WRONG = "the teacher gets every test sample right, so there is no mistake to copy"
NO_CONTROL = "not available: the audit has no SIDDO students to compare with"
NO_STUDENTS = "not available: there are no students in the group"


def group_name(condition: str, alpha: float) -> str:
    """The column of a student group in ``copied.csv``: ``siddo``, ``kd@0.9``, ``rcd-uniform@0.5``.

    >>> group_name("kd", 0.9), group_name("siddo", 0.0)
    ('kd@0.9', 'siddo')
    """
    return CONTROL if condition == CONTROL else f"{condition}@{fmt_alpha(float(alpha))}"


def parse_group_name(name: str) -> tuple[str, float]:
    """``kd@0.9`` → ``("kd", 0.9)``; ``siddo`` → ``("siddo", 0.0)``; a name without α gets NaN.

    >>> parse_group_name("rcd-uniform@0.5")
    ('rcd-uniform', 0.5)
    """
    cond, sep, alpha = str(name).rpartition("@")
    if not sep:
        return str(name), 0.0 if name == CONTROL else float("nan")
    try:
        return cond, float(alpha)
    except ValueError:
        return str(name), float("nan")


def _labels(labels: np.ndarray, teacher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    t = np.asarray(teacher)
    if y.ndim != 1 or t.shape != y.shape:
        raise InputError(f"copied: labels {y.shape} and teacher predictions {t.shape} must be equal-length vectors")
    return y.astype(np.int64), t.astype(np.int64)


def _predictions(preds: np.ndarray, n: int, what: str) -> np.ndarray:
    p = np.asarray(preds)
    if p.ndim == 1:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] != n:
        raise InputError(f"copied: {what} predictions have shape {p.shape}, expected students × {n}")
    return p.astype(np.int64)


def teacher_wrong(labels: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """The indices of the teacher-wrong test samples 𝒲, ascending.

    >>> teacher_wrong(np.array([0, 1, 2]), np.array([0, 2, 2])).tolist()
    [1]
    """
    y, t = _labels(labels, teacher)
    return np.flatnonzero(t != y)


def _follow(t: np.ndarray, wrong: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Per sample of ``wrong``: the share of the students (rows of ``preds``) that output ``t``."""
    if len(preds) == 0:
        return np.full(len(wrong), np.nan)
    return (preds[:, wrong] == t[wrong]).mean(axis=0)


def follow_shares(labels: np.ndarray, teacher: np.ndarray, groups: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """``copied.csv``: one row per teacher-wrong sample (``sample``, ``label``, ``teacher_label``),
    then per group (in the order of ``groups``: name → students × N predictions) the share of its
    students whose prediction is the teacher's wrong label (NaN for a group without students)."""
    y, t = _labels(labels, teacher)
    wrong = np.flatnonzero(t != y)
    df = pd.DataFrame({"sample": wrong, "label": y[wrong], "teacher_label": t[wrong]})
    for name, preds in groups.items():
        df[name] = _follow(t, wrong, _predictions(preds, len(y), name))
    return df


@dataclass(frozen=True)
class Copying:
    """KD against SIDDO over the teacher-wrong samples: the (true class → teacher label) pairs
    (:data:`PAIR_COLUMNS`) and the samples (:data:`SAMPLE_COLUMNS`), each ranked by the difference
    KD − SIDDO share (pairs: ties by more samples, then by class; samples: ties by index).
    ``reason`` says why there is nothing to compare (the tables are then empty), else ``""``."""

    pairs: pd.DataFrame
    samples: pd.DataFrame
    reason: str = ""

    @property
    def available(self) -> bool:
        return not self.reason

    def top_pairs(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` most-copied pairs."""
        return self.pairs.head(k)

    def top_samples(self, k: int = 8) -> pd.DataFrame:
        """The ``k`` samples KD copies most, relative to SIDDO."""
        return self.samples.head(k)


def _empty(reason: str) -> Copying:
    return Copying(pd.DataFrame(columns=PAIR_COLUMNS), pd.DataFrame(columns=SAMPLE_COLUMNS), reason)


def _rank_key(difference: pd.Series) -> pd.Series:
    """The difference rounded to 9 decimals, so that equal differences reached by different float
    sums (3/10 − 1/10 and 2/10 − 0) tie and fall to the tie-breaks."""
    return difference.round(9)


def compare_shares(
    samples: np.ndarray,
    labels: np.ndarray,
    teacher: np.ndarray,
    kd_share: np.ndarray,
    siddo_share: np.ndarray | None,
) -> Copying:
    """:func:`compare` from the per-sample shares of ``copied.csv`` (one entry per teacher-wrong sample).

    Every sample of a group is seen by the same students, so a pair's mean of the per-sample
    shares is the share over its samples and students together.
    """
    if siddo_share is None:
        return _empty(NO_CONTROL)
    if len(samples) == 0:
        return _empty(NO_WRONG)
    kd = np.asarray(kd_share, dtype=float)
    ctrl = np.asarray(siddo_share, dtype=float)
    if np.isnan(kd).all() or np.isnan(ctrl).all():
        return _empty(NO_STUDENTS if np.isnan(kd).all() else NO_CONTROL)
    per_sample = pd.DataFrame(
        {
            "sample": np.asarray(samples, dtype=np.int64),
            "label": np.asarray(labels, dtype=np.int64),
            "teacher_label": np.asarray(teacher, dtype=np.int64),
            "kd_share": kd,
            "siddo_share": ctrl,
        }
    )
    per_sample["difference"] = per_sample["kd_share"] - per_sample["siddo_share"]
    per_sample["rank"] = _rank_key(per_sample["difference"])
    ranked = per_sample.sort_values(["rank", "sample"], ascending=[False, True], kind="mergesort")
    pairs = (
        per_sample.groupby(["label", "teacher_label"], sort=True)
        .agg(samples=("sample", "size"), kd_share=("kd_share", "mean"), siddo_share=("siddo_share", "mean"))
        .reset_index()
    )
    pairs["difference"] = pairs["kd_share"] - pairs["siddo_share"]
    pairs["rank"] = _rank_key(pairs["difference"])
    pairs = pairs.sort_values(
        ["rank", "samples", "label", "teacher_label"], ascending=[False, False, True, True], kind="mergesort"
    )
    return Copying(pairs[PAIR_COLUMNS].reset_index(drop=True), ranked[SAMPLE_COLUMNS].reset_index(drop=True))


def compare(labels: np.ndarray, teacher: np.ndarray, kd: np.ndarray, siddo: np.ndarray | None) -> Copying:
    """What the KD students (``kd``: students × N predictions) copy of the teacher's mistakes
    beyond the SIDDO students (``siddo``, or None when the audit has none: not available)."""
    y, t = _labels(labels, teacher)
    wrong = np.flatnonzero(t != y)
    kd_share = _follow(t, wrong, _predictions(kd, len(y), "KD"))
    siddo_share = None if siddo is None else _follow(t, wrong, _predictions(siddo, len(y), "SIDDO"))
    return compare_shares(wrong, y[wrong], t[wrong], kd_share, siddo_share)


def difference_matrix(pairs: pd.DataFrame, num_classes: int) -> np.ndarray:
    """The pairs' differences as a ``num_classes`` × ``num_classes`` matrix (rows: true class,
    columns: teacher label); NaN where the teacher never made that mistake.

    >>> difference_matrix(pd.DataFrame({"label": [1], "teacher_label": [0], "difference": [0.5]}), 2)
    array([[nan, nan],
           [0.5, nan]])
    """
    out = np.full((num_classes, num_classes), np.nan)
    for y, t, d in zip(pairs["label"], pairs["teacher_label"], pairs["difference"], strict=True):
        if 0 <= int(y) < num_classes and 0 <= int(t) < num_classes:
            out[int(y), int(t)] = float(d)
    return out
