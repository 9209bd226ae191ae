"""From stored test outputs to the per-run table (``runs.csv``, PROTOCOL §6)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import KdauditError
from ..plan.jobs import Plan
from ..store import JobStore
from .audit import RUNS_COLUMNS
from .catalogue import runs_metrics
from .metrics import accuracy, cross_entropy, functional_metrics_many


def collect_runs(plan: Plan, store: JobStore, temperature: float) -> pd.DataFrame:
    """One row per trained model: its accuracy and loss, and every §3 metric against the teacher."""
    missing = [j.run_id for j in plan.trained if not store.is_done(j.key)]
    if missing:
        raise KdauditError(
            f"{len(missing)} of {len(plan.trained)} models are not finished or are corrupt in the store "
            f"(e.g. {', '.join(missing[:3])}); run `kdaudit run` on this audit first"
        )
    t_out = store.load_outputs(plan.teacher.key)
    zt, labels = t_out["test_logits"].astype(np.float64), t_out["test_labels"]
    students = plan.students
    stack = np.empty((len(students),) + zt.shape, dtype=np.float64)
    for i, job in enumerate(students):
        out = store.load_outputs(job.key)
        if out["test_logits"].shape != zt.shape or not np.array_equal(out["test_labels"], labels):
            raise KdauditError(
                f"run {job.run_id} was evaluated on a different test set than the teacher; "
                "delete its job directory and rerun"
            )
        stack[i] = out["test_logits"]
    rows = [
        {
            "run_id": plan.teacher.run_id,
            "role": "teacher",
            "condition": "teacher",
            "alpha": np.nan,
            "temperature": np.nan,
            "seed": plan.teacher.seed,
            "accuracy": accuracy(zt, labels),
            "loss": cross_entropy(zt, labels),
        }
    ]
    if students:
        m = functional_metrics_many(zt, stack, labels)
        for i, job in enumerate(students):
            row = {
                "run_id": job.run_id,
                "role": "student",
                "condition": job.condition,
                "alpha": job.alpha,
                "temperature": np.nan if job.condition == "siddo" else temperature,
                "seed": job.seed,
            }
            row.update({metric.name: m[metric.key][i] for metric in runs_metrics()})
            rows.append(row)
    df = pd.DataFrame(rows)
    for col in RUNS_COLUMNS:
        if col not in df:
            df[col] = np.nan
    return df[RUNS_COLUMNS]
