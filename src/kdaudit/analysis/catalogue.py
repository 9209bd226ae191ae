"""The catalogue of the functional metrics (PROTOCOL §3): names, labels, units and roles.

Every list of metric names in kdaudit is derived from :data:`METRICS`, in its order unless said
otherwise:

- :func:`metric_keys`: the keys of :func:`~kdaudit.analysis.metrics.functional_metrics` and of
  ``kdaudit metrics --json``; :func:`student_metric_keys` those that vary from one student to
  another;
- :func:`runs_columns`: the columns of ``runs.csv``, :func:`runs_metrics` its metric columns;
- :func:`tested_metrics`: the per-student metrics tested in ``tests.csv``;
- :func:`summary_metrics`: the metrics of ``summary.csv`` and of the report's summary table, in
  their own order (:attr:`Metric.summary`);
- :func:`figure_metrics`: the metrics with a per-seed distribution figure, in their own order
  (:attr:`Metric.figure`);
- :func:`label`, :func:`short` and :func:`heading`: the words of figures, sentences and tables;
  :attr:`Metric.terminal`, :attr:`Metric.scale` and :attr:`Metric.digits`: the columns of the
  terminal summary table.

A metric is named by its ``runs.csv`` column (:attr:`Metric.name`); :attr:`Metric.key` is its
key among the functional metrics, which differs for the student's own accuracy and loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "METRICS",
    "RUN_ID_COLUMNS",
    "Direction",
    "Metric",
    "Role",
    "figure_metrics",
    "heading",
    "label",
    "metric",
    "metric_keys",
    "runs_columns",
    "runs_metrics",
    "short",
    "student_metric_keys",
    "summary_metrics",
    "tested_metrics",
]

Role = Literal["teacher", "student", "comparison"]
"""``teacher``: the teacher alone (the same for every student); ``student``: the student alone;
``comparison``: the student against its teacher."""

Direction = Literal["higher", "lower", "none"]
"""Which way is better; for a comparison, better means closer to the teacher."""


@dataclass(frozen=True)
class Metric:
    """One functional metric and how kdaudit names, tests and shows it."""

    name: str
    """Column of ``runs.csv`` and ``metric`` of ``tests.csv`` (the functional key when not in runs.csv)."""
    key: str
    """Key of :func:`~kdaudit.analysis.metrics.functional_metrics`."""
    label: str
    """Axis and figure label."""
    short: str
    """The name inside sentences and table rows."""
    unit: str
    direction: Direction
    role: Role
    integer: bool = False
    """A count (int64), not a float."""
    in_runs: bool = True
    """A column of ``runs.csv``."""
    tested: bool = False
    """Tested per condition in ``tests.csv``."""
    summary: int | None = None
    """Position in ``summary.csv`` and the summary table; None when not summarised."""
    figure: int | None = None
    """Position among the per-seed distribution figures; None when it has none."""
    terminal: str = ""
    """Column header in the terminal summary table of ``kdaudit run`` (summarised metrics)."""
    scale: float = 100.0
    """Factor the terminal summary table shows the value with (100: percent)."""
    digits: int = 1
    """Decimals of the value in the terminal summary table."""

    @property
    def student(self) -> bool:
        """True when the value varies from one student to another (not a teacher-only quantity)."""
        return self.role != "teacher"

    @property
    def heading(self) -> str:
        """The column header of the summary table: the short name, capitalised."""
        return self.short[:1].upper() + self.short[1:]


METRICS: tuple[Metric, ...] = (
    Metric(
        "teacher_accuracy",
        "teacher_accuracy",
        "Teacher test accuracy",
        "teacher accuracy",
        "fraction",
        "higher",
        "teacher",
        in_runs=False,
    ),
    Metric(
        "accuracy",
        "student_accuracy",
        "Test accuracy",
        "accuracy",
        "fraction",
        "higher",
        "student",
        tested=True,
        summary=0,
        figure=3,
        terminal="accuracy %",
    ),
    Metric("loss", "student_loss", "Test loss (CE)", "loss", "nats", "lower", "student", tested=True),
    Metric(
        "activation_distance",
        "activation_distance",
        "Activation distance to teacher (L2)",
        "activation distance",
        "L2",
        "lower",
        "comparison",
        tested=True,
        summary=3,
        figure=2,
        terminal="AD ×10²",
        digits=2,
    ),
    Metric(
        "js_divergence",
        "js_divergence",
        "JS divergence to teacher (nats)",
        "JS divergence",
        "nats",
        "lower",
        "comparison",
        tested=True,
        summary=2,
        figure=1,
        terminal="JS ×10³ nats",
        scale=1e3,
        digits=2,
    ),
    Metric(
        "prediction_disagreement",
        "prediction_disagreement",
        "Prediction disagreement",
        "prediction disagreement",
        "fraction",
        "lower",
        "comparison",
        tested=True,
    ),
    Metric(
        "agreement",
        "agreement",
        "Agreement with teacher",
        "agreement",
        "fraction",
        "higher",
        "comparison",
        tested=True,
        summary=1,
        figure=0,
        terminal="agreement %",
    ),
    Metric(
        "logit_cosine",
        "logit_cosine",
        "Logit cosine similarity",
        "logit cosine",
        "cosine",
        "higher",
        "comparison",
        tested=True,
    ),
    Metric(
        "rank_disagreement",
        "rank_disagreement",
        "Rank disagreement",
        "rank disagreement",
        "fraction",
        "lower",
        "comparison",
        tested=True,
    ),
    Metric(
        "agreement_teacher_correct",
        "agreement_teacher_correct",
        "Agreement where the teacher is right",
        "agreement (teacher right)",
        "fraction",
        "higher",
        "comparison",
        tested=True,
        summary=4,
        figure=4,
        terminal="agree | teacher right %",
    ),
    Metric(
        "agreement_teacher_wrong",
        "agreement_teacher_wrong",
        "Agreement where the teacher is wrong",
        "agreement (teacher wrong)",
        "fraction",
        "higher",
        "comparison",
        tested=True,
        summary=5,
        figure=5,
        terminal="agree | teacher wrong %",
    ),
    Metric(
        "n_teacher_correct",
        "n_teacher_correct",
        "Test samples the teacher gets right",
        "samples (teacher right)",
        "samples",
        "none",
        "teacher",
        integer=True,
    ),
    Metric(
        "n_teacher_wrong",
        "n_teacher_wrong",
        "Test samples the teacher gets wrong",
        "samples (teacher wrong)",
        "samples",
        "none",
        "teacher",
        integer=True,
    ),
)
"""Every functional metric, in the order of the functional keys and of the ``runs.csv`` columns."""

RUN_ID_COLUMNS: tuple[str, ...] = ("run_id", "role", "condition", "alpha", "temperature", "seed")
"""The columns of ``runs.csv`` before the metrics: which model a row is."""

_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
_BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}


def metric(name: str) -> Metric:
    """The metric with this ``runs.csv`` name (or functional key); KeyError if there is none."""
    found = _BY_NAME.get(name) or _BY_KEY.get(name)
    if found is None:
        raise KeyError(f"unknown metric {name!r}")
    return found


def label(name: str) -> str:
    """The figure label of a metric; any other name is returned unchanged."""
    m = _BY_NAME.get(name)
    return name if m is None else m.label


def short(name: str) -> str:
    """The in-sentence name of a metric; any other name is returned unchanged."""
    m = _BY_NAME.get(name)
    return name if m is None else m.short


def heading(name: str) -> str:
    """The summary-table header of a metric; any other name is returned unchanged."""
    m = _BY_NAME.get(name)
    return name if m is None else m.heading


def metric_keys() -> list[str]:
    """The keys of ``kdaudit metrics --json`` (PROTOCOL §7), in order."""
    return [m.key for m in METRICS]


def student_metric_keys() -> list[str]:
    """The functional keys that vary from one student to another, in order."""
    return [m.key for m in METRICS if m.student]


def runs_metrics() -> list[Metric]:
    """The metric columns of ``runs.csv``, in order."""
    return [m for m in METRICS if m.in_runs]


def runs_columns() -> list[str]:
    """Every column of ``runs.csv``, in order."""
    return [*RUN_ID_COLUMNS, *(m.name for m in runs_metrics())]


def tested_metrics() -> list[str]:
    """The per-student metrics tested in ``tests.csv`` (columns of ``runs.csv``), in order."""
    return [m.name for m in METRICS if m.tested]


def summary_metrics() -> list[str]:
    """The metrics of ``summary.csv`` and the report's summary table, in column order."""
    return [m.name for m in sorted((m for m in METRICS if m.summary is not None), key=lambda m: m.summary or 0)]


def figure_metrics() -> list[str]:
    """The metrics with a per-seed distribution figure, in figure order."""
    return [m.name for m in sorted((m for m in METRICS if m.figure is not None), key=lambda m: m.figure or 0)]
