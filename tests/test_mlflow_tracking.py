"""MLflow tracking: one run per job logged from its record, the audit tables, no duplicates.

One test talks to a real ``mlflow server`` on 127.0.0.1 (SQLite backend, one worker, job
execution off), started here and always terminated; the others use the SQLite default of a bare
``--mlflow``.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import TINY2, as_sets, kdaudit_here, records

mlflow = pytest.importorskip("mlflow")

from kdaudit import __version__  # noqa: E402
from kdaudit.config.loader import resolve_spec  # noqa: E402
from kdaudit.errors import KdauditError  # noqa: E402
from kdaudit.plan.jobs import build_plan  # noqa: E402

GRID = TINY2
SMALL = [*GRID, "protocol.conditions=[siddo,kd]", "protocol.alphas=[0.5]"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(root / "server.log", "wb") as log:  # the server writes to its own copy of the file
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("mlflow server did not answer within 120 s")
            time.sleep(0.25)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker: our own session
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def job_runs(client, experiment_id):
    return client.search_runs([experiment_id], filter_string="tags.`kdaudit.kind` = 'job'", max_results=1000)


@pytest.mark.slow  # an MLflow server, and an audit of 21 models logged to it twice
def test_every_job_is_one_mlflow_run_on_a_tracking_server(mlflow_server, tmp_path):
    out = tmp_path / "audit"
    start = time.perf_counter()
    assert (
        kdaudit_here("run", "digits-mlp", *as_sets(GRID), "--out", str(out), "--quiet", "--mlflow", mlflow_server) == 0
    )
    spec = resolve_spec("digits-mlp", GRID)
    plan = build_plan(spec)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("digits-mlp")
    assert exp is not None
    runs = job_runs(client, exp.experiment_id)
    assert len(runs) == len(plan.jobs) == 22
    by_name = {run.info.run_name: run for run in runs}
    assert {run.data.tags["kdaudit.job_key"] for run in runs} == {j.key for j in plan.jobs}
    assert all(run.info.status == "FINISHED" for run in runs)

    recs = records(out)
    run = by_name["kd-a0.5-s02"]
    rec = recs["kd-a0.5-s02"]
    p = run.data.params
    assert (p["run_id"], p["condition"], p["alpha"], p["seed"], p["job_key"]) == (
        "kd-a0.5-s02",
        "kd",
        "0.5",
        "2",
        rec["key"],
    )
    assert p["train.epochs"] == "2" and p["train.optimizer"] == "sgd" and p["train.lr"] == "0.05"
    assert p["temperature"] == "1.0" and p["model.kwargs"] == '{"hidden": [16]}'
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (h["epoch"], h["train_loss"]) for h in rec["history"]
    ]
    assert run.data.metrics["test_accuracy"] == rec["metrics"]["test_accuracy"]
    tags = run.data.tags
    assert tags["kdaudit.audit"] == "digits-mlp" and tags["kdaudit.version"] == __version__
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["record.json"]
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "record.json", str(tmp_path))).read_text())
    assert logged == rec

    audit_runs = client.search_runs([exp.experiment_id], filter_string="tags.`kdaudit.kind` = 'audit'")
    assert len(audit_runs) == 1
    audit = audit_runs[0]
    assert all(r.data.tags["mlflow.parentRunId"] == audit.info.run_id for r in runs)
    names = {a.path for a in client.list_artifacts(audit.info.run_id)}
    assert {"runs.csv", "tests.csv", "transfer.csv", "report.html"} <= names
    assert audit.data.metrics["n_models"] == 21

    # a rerun logs nothing twice
    assert (
        kdaudit_here("run", "digits-mlp", *as_sets(GRID), "--out", str(out), "--quiet", "--mlflow", mlflow_server) == 0
    )
    after = job_runs(client, exp.experiment_id)
    assert sorted(r.info.run_id for r in after) == sorted(r.info.run_id for r in runs)
    assert len(client.search_runs([exp.experiment_id], filter_string="tags.`kdaudit.kind` = 'audit'")) == 1
    print(f"server run + rerun: {time.perf_counter() - start:.1f} s")


@pytest.fixture(scope="module")
def sqlite_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sqlite") / "audit"
    # a bare --mlflow, even before the setup name, means the SQLite store in the audit directory
    assert kdaudit_here("run", "--mlflow", "digits-mlp", *as_sets(SMALL), "--out", str(out), "--quiet") == 0
    return out


def test_bare_mlflow_flag_uses_sqlite_in_the_audit_dir(sqlite_run):
    out = sqlite_run
    db = out / "mlflow.db"
    assert db.is_file()
    assert f"mlflow: sqlite:///{db.resolve()}" in (out / "spec.yaml").read_text()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("digits-mlp")
    assert exp.artifact_location == (out / "mlartifacts").resolve().as_uri()
    runs = job_runs(client, exp.experiment_id)
    assert sorted(r.info.run_name for r in runs) == sorted(
        j.run_id for j in build_plan(resolve_spec("digits-mlp", SMALL)).jobs
    )
    teacher = next(r for r in runs if r.info.run_name == "teacher")
    assert (
        Path(exp.artifact_location.removeprefix("file://")) / teacher.info.run_id / "artifacts" / "record.json"
    ).is_file()


@pytest.mark.slow
def test_interrupted_or_deleted_job_runs_are_logged_again_once(sqlite_run):
    out = sqlite_run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits-mlp")
    runs = {r.info.run_name: r for r in job_runs(client, exp.experiment_id)}
    client.update_run(runs["siddo-s01"].info.run_id, status="RUNNING")  # as if logging had been cut off
    client.delete_run(runs["kd-a0.5-s02"].info.run_id)
    assert kdaudit_here("run", "digits-mlp", *as_sets(SMALL), "--out", str(out), "--quiet", "--mlflow") == 0
    after = job_runs(client, exp.experiment_id)
    names = sorted(r.info.run_name for r in after)
    assert names == sorted(runs) and len(set(names)) == len(names) == 6
    assert all(r.info.status == "FINISHED" for r in after)
    new = {r.info.run_name: r.info.run_id for r in after}
    assert new["siddo-s01"] != runs["siddo-s01"].info.run_id and new["kd-a0.5-s02"] != runs["kd-a0.5-s02"].info.run_id
    assert new["teacher"] == runs["teacher"].info.run_id


def test_missing_mlflow_is_one_line_saying_what_to_install(monkeypatch):
    from kdaudit.tracking import mlflow_tracker

    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(KdauditError, match=r"pip install 'kdaudit\[mlflow\]'"):
        mlflow_tracker.import_mlflow()


def test_tracking_is_off_by_default_and_never_changes_job_keys():
    spec = resolve_spec("digits-mlp", GRID)
    assert spec.tracking.mlflow is None
    tracked = resolve_spec("digits-mlp", [*GRID, "tracking.mlflow=http://127.0.0.1:5000"])
    assert [j.key for j in build_plan(tracked).jobs] == [j.key for j in build_plan(spec).jobs]
