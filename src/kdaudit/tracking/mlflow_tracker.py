"""MLflow adapter: one experiment per audit, one run per job, one audit-level run.

Runs are logged from the job store, never from inside training: after a job is saved, its
``record.json`` gives the params (run id, condition, α, seed, the train settings, the job key),
the per-epoch metrics (``history``: ``train_loss`` at step = epoch), the final metrics (test
accuracy) and the tags (audit name, kdaudit version); the record itself is logged as an artifact
(and, with ``tracking.log_weights``, the weights and test outputs). Job runs are nested under the
audit-level run of their audit directory, which after the analysis receives ``runs.csv``,
``tests.csv``, ``transfer.csv``, ``summary.csv``, ``audit.json``, ``spec.yaml`` and
``report.html``.

Every job run is tagged with its job key, and a key already logged to the experiment is never
logged again, so a rerun (or a second audit sharing jobs) adds no duplicates. A run whose logging
was interrupted is deleted and logged anew.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import __version__
from ..config.schema import AuditSpec
from ..errors import KdauditError
from ..plan.jobs import Job, Plan
from ..store import JobStore

INSTALL_HINT = "pip install 'kdaudit[mlflow]'"
TAG_KIND = "kdaudit.kind"  # "job" or "audit"
TAG_JOB_KEY = "kdaudit.job_key"
TAG_AUDIT = "kdaudit.audit"
TAG_AUDIT_DIR = "kdaudit.audit_dir"
TAG_VERSION = "kdaudit.version"
AUDIT_ARTIFACTS = ("runs.csv", "tests.csv", "transfer.csv", "summary.csv", "audit.json", "spec.yaml", "report.html")


def import_mlflow():
    """``mlflow``, or a one-line :class:`KdauditError` saying what to install."""
    try:
        import mlflow
        from mlflow import MlflowClient  # noqa: F401
    except ImportError:
        raise KdauditError(f"--mlflow needs MLflow, which is not installed: {INSTALL_HINT}") from None
    return mlflow


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def sqlite_artifact_root(uri: str) -> str | None:
    """For a SQLite tracking store, artifacts go to ``mlartifacts/`` beside the database file."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    return (db.resolve().parent / "mlartifacts").as_uri()


def job_params(job: Job, record: dict) -> dict[str, str]:
    """The params of one job's run: identity, protocol settings and the train settings."""
    params = record.get("params", {})
    out: dict[str, Any] = {
        "run_id": record.get("run_id", job.run_id),
        "kind": job.kind,
        "condition": job.condition,
        "alpha": job.alpha,
        "seed": job.seed,
        "job_key": job.key,
    }
    for name in ("temperature", "kd_loss", "t2_scaling", "init_seed"):
        if name in params:
            out[name] = params[name]
    if "data" in params:
        out["data.name"] = params["data"].get("name")
    if "model" in params:
        out["model.name"] = params["model"].get("name")
        out["model.kwargs"] = json.dumps(params["model"].get("kwargs", {}), sort_keys=True)
    for name, value in params.get("train", {}).items():
        out[f"train.{name}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return {k: str(v)[:6000] for k, v in out.items()}


def job_metrics(record: dict) -> list[tuple[str, float, int]]:
    """(name, value, step): every numeric per-epoch value of ``history``, then the final metrics."""
    rows = []
    for entry in record.get("history", []):
        step = int(entry.get("epoch", 0))
        for name, value in entry.items():
            if name != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append((name, float(value), step))
    final_step = max((r[2] for r in rows), default=0)
    for name, value in record.get("metrics", {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((name, float(value), final_step))
    if isinstance(record.get("seconds"), (int, float)):
        rows.append(("train_seconds", float(record["seconds"]), final_step))
    return rows


class MlflowTracker:
    """Logs an audit's jobs and tables to the MLflow tracking store at ``uri``."""

    def __init__(self, uri: str, spec: AuditSpec, out_dir: Path) -> None:
        import_mlflow()
        from mlflow import MlflowClient

        self.uri = uri
        self.spec = spec
        self.out_dir = Path(out_dir).resolve()
        self.errors: list[str] = []
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment()
            self.logged = self._logged_job_keys()
            self.audit_run_id = self._audit_run()
        except KdauditError:
            raise
        except Exception as exc:
            raise KdauditError(f"MLflow tracking at {uri}: {_first_line(exc)}") from None

    # -- setup ---------------------------------------------------------------------------
    def _experiment(self) -> str:
        name = self.spec.name
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            return self.client.create_experiment(
                name, artifact_location=sqlite_artifact_root(self.uri), tags={TAG_VERSION: __version__}
            )
        if exp.lifecycle_stage != "active":
            raise KdauditError(f"MLflow experiment {name!r} at {self.uri} is deleted; restore it or remove it for good")
        return exp.experiment_id

    def _search(self, filter_string: str) -> Iterable[Any]:
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=filter_string, max_results=1000, page_token=token
            )
            yield from page
            token = page.token
            if not token:
                return

    def _logged_job_keys(self) -> set[str]:
        keys = set()
        for run in self._search(f"tags.`{TAG_KIND}` = 'job'"):
            key = run.data.tags.get(TAG_JOB_KEY)
            if run.info.status == "FINISHED" and key:
                keys.add(key)
            else:  # logging was interrupted: log it again from scratch
                self.client.delete_run(run.info.run_id)
        return keys

    def _audit_run(self) -> str:
        audit_dir = str(self.out_dir)
        for run in self._search(f"tags.`{TAG_KIND}` = 'audit'"):
            if run.data.tags.get(TAG_AUDIT_DIR) == audit_dir:
                return run.info.run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.spec.name,
            tags={
                TAG_KIND: "audit",
                TAG_AUDIT: self.spec.name,
                TAG_AUDIT_DIR: audit_dir,
                TAG_VERSION: __version__,
            },
        )
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    # -- jobs ----------------------------------------------------------------------------
    def log_job(self, job: Job, store: JobStore) -> bool:
        """Log one finished job from its record; False if it was logged already (or is not done)."""
        if job.key in self.logged or not store.is_done(job.key):
            return False
        from mlflow.entities import Metric, Param

        record = store.load_record(job.key)
        tags = {
            TAG_KIND: "job",
            TAG_JOB_KEY: job.key,
            TAG_AUDIT: self.spec.name,
            TAG_VERSION: __version__,
            "mlflow.parentRunId": self.audit_run_id,
            "kdaudit.created": str(record.get("created", "")),
        }
        torch_version = record.get("versions", {}).get("torch")
        if torch_version:
            tags["kdaudit.torch_version"] = str(torch_version)
        run = self.client.create_run(self.experiment_id, run_name=job.run_id, tags=tags)
        run_id = run.info.run_id
        try:
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in job_params(job, record).items()])
            now = int(time.time() * 1000)
            metrics = [Metric(name, value, now, step) for name, value, step in job_metrics(record)]
            for i in range(0, len(metrics), 1000):
                self.client.log_batch(run_id, metrics=metrics[i : i + 1000])
            job_dir = store.job_dir(job.key)
            self.client.log_artifact(run_id, str(job_dir / "record.json"))
            if self.spec.tracking.log_weights:
                for name in ("weights.safetensors", "outputs.npz"):
                    if (job_dir / name).exists():
                        self.client.log_artifact(run_id, str(job_dir / name))
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        self.logged.add(job.key)
        return True

    def try_log_job(self, job: Job, store: JobStore) -> None:
        """Log a job as it finishes; a failure is kept for :meth:`log_jobs` to retry and report."""
        try:
            self.log_job(job, store)
        except Exception as exc:
            self.errors.append(f"{job.run_id}: {_first_line(exc)}")

    def log_jobs(self, plan: Plan, store: JobStore) -> int:
        """Log every done job of ``plan`` not logged yet; returns how many were logged now."""
        n = 0
        try:
            for job in plan.jobs:
                n += self.log_job(job, store)
        except Exception as exc:
            raise KdauditError(
                f"MLflow tracking at {self.uri}: logging the jobs failed: {_first_line(exc)}; "
                "the audit's results are in the store, rerun to log them"
            ) from None
        self.errors.clear()
        return n

    def wrap(self, progress: Any, store: JobStore) -> TrackingProgress:
        """``progress`` that also logs each job to MLflow as soon as it finishes."""
        return TrackingProgress(progress, self, store)

    # -- the audit -----------------------------------------------------------------------
    def log_audit(self, out_dir: Path, meta: dict) -> None:
        """Log the audit's tables, report and headline numbers to the audit-level run."""
        from mlflow.entities import Metric, RunTag

        try:
            run_id = self.audit_run_id
            now = int(time.time() * 1000)
            metrics = [
                Metric(k, float(meta[k]), now, 0)
                for k in ("teacher_accuracy", "n_models", "train_seconds_total", "wall_time_s")
                if isinstance(meta.get(k), (int, float))
            ]
            tags = [
                RunTag(k, str(meta[k]))
                for k in ("dataset", "model", "precision", "torch_version")
                if meta.get(k) is not None
            ]
            self.client.log_batch(run_id, metrics=metrics, tags=tags)
            for name in AUDIT_ARTIFACTS:
                path = Path(out_dir) / name
                if path.exists():
                    self.client.log_artifact(run_id, str(path))
            self.client.set_terminated(run_id, "FINISHED")
        except Exception as exc:
            raise KdauditError(
                f"MLflow tracking at {self.uri}: logging the audit tables failed: {_first_line(exc)}"
            ) from None


class TrackingProgress:
    """A :class:`~kdaudit.execute.runner.Progress` that also logs each job when it finishes."""

    def __init__(self, inner: Any, tracker: MlflowTracker, store: JobStore) -> None:
        from ..execute.runner import NullProgress

        self.inner = inner or NullProgress()
        self.tracker = tracker
        self.store = store

    def start(self, total: int, todo: int) -> None:
        self.inner.start(total, todo)

    def job_started(self, job: Job, epochs: int) -> None:
        self.inner.job_started(job, epochs)

    def epoch_done(self, job: Job, epoch: int, epochs: int, loss: float) -> None:
        self.inner.epoch_done(job, epoch, epochs, loss)

    def job_finished(self, job: Job, skipped: bool) -> None:
        self.inner.job_finished(job, skipped)
        self.tracker.try_log_job(job, self.store)
