"""Experiment tracking of an audit (optional): MLflow runs logged from the job store.

Off by default. With ``tracking.mlflow`` set (or ``kdaudit run --mlflow [URI]``) every job of the
plan becomes one MLflow run, logged from its ``record.json`` once the job is in the store, so it
works the same for every executor and for jobs trained by an earlier audit; the audit's tables and
report go to one audit-level run. MLflow is imported only when tracking is on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..config.schema import AuditSpec
    from .mlflow_tracker import MlflowTracker


def default_mlflow_uri(out_dir: str | Path) -> str:
    """The tracking URI of ``--mlflow`` without a URI: a SQLite store in the audit directory."""
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def open_tracker(spec: AuditSpec, out_dir: Path) -> MlflowTracker | None:
    """The spec's tracker, or None when tracking is off."""
    if not spec.tracking.mlflow:
        return None
    from .mlflow_tracker import MlflowTracker

    return MlflowTracker(spec.tracking.mlflow, spec, out_dir)
