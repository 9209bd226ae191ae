"""Crash safety: `kdaudit run` killed with SIGKILL at many points of one audit, resumed each time.

One audit directory goes through a chain of kills. Each kill point is a failpoint hit
(``KDAUDIT_FAILPOINT=NAME:N``, see :mod:`kdaudit.faults`) drawn with a seeded RNG and spread
over the training (a job's epochs, its artifacts written but not its record, its record written
but not renamed, a mid-run checkpoint where the runner writes them) and over the analysis
(between table files, before the report), plus a few SIGKILLs sent from outside after random
delays. After every kill the same command runs again on the same directory. Each time:

* every job that was finished before the kill is still there, byte for byte (never retrained);
* the leftovers of interrupted writes (``.tmp-*``) are poisoned before the rerun and must be
  removed by it, never adopted as finished jobs;
* at the end, ``runs.csv`` and ``tests.csv`` are byte-identical to an uninterrupted run.

The chained runs are processes forked from a server that has imported kdaudit once
(:class:`helpers.ForkServer`; a fresh interpreter spends seconds importing torch), each calling
the CLI's entry point; the uninterrupted reference run is a plain ``python -m kdaudit.cli``.
A second test corrupts finished jobs in every way the store can notice and checks that the
rerun (a plain ``python -m kdaudit.cli`` again) names them, re-runs exactly them and ends with
the clean analysis.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY3, ForkServer, as_sets, cli_env, kdaudit, kdaudit_popen, tmp_leftovers
from kdaudit.config.loader import resolve_spec
from kdaudit.io import file_digest
from kdaudit.plan.jobs import build_plan
from kdaudit.store import JobStore

pytestmark = pytest.mark.slow  # whole audits killed and resumed, many times

EPOCHS = 3
SEED = 20240611
TRAINING_KILLS = 18  # failpoint kills while jobs are being trained
TRAINING_TIME_KILLS = 3  # SIGKILLs from outside while jobs are being trained
ANALYSIS_TIME_KILLS = 1  # ... and once the analysis has begun
MIN_KILLS = 20
ANALYSIS_KILLS = [
    ("analysis.tables", 1),
    ("analysis.tables", 2),
    ("analysis.tables", 3),
    ("analysis.tables", 4),
    ("report.write", 1),
]


def _checkpoint_args() -> list[str]:
    """Checkpoint every epoch, so kills also land inside mid-run checkpoint writes."""
    return ["--set", "train.checkpoint_every=1"]


CHECKPOINTS = _checkpoint_args()
SETS = as_sets(TINY3) + CHECKPOINTS
ARGS = ["run", "digits-mlp", *SETS, "--quiet"]
TRAINING_FAILPOINTS = ["train.epoch", "store.artifacts", "store.rename"] + (["checkpoint.write"] if CHECKPOINTS else [])


def _plan():
    return build_plan(resolve_spec("digits-mlp", [s for s in SETS if s != "--set"]))


class Background:
    """An uninterrupted run of the same spec, started at once and waited for when needed."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.proc = kdaudit_popen(*ARGS, "--out", str(out))

    def finished(self) -> Path:
        if self.proc is not None:
            _, err = self.proc.communicate(timeout=600)
            assert self.proc.returncode == 0, err
            self.proc = None
        return self.out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    bg = Background(tmp_path_factory.mktemp("crash") / "reference")
    yield bg
    if bg.proc is not None and bg.proc.poll() is None:
        bg.proc.kill()
        bg.proc.communicate()


def _done(plan, store: JobStore) -> dict[str, tuple[bytes, int]]:
    """The finished jobs: key → (record.json bytes, weights mtime)."""
    snap = {}
    for job in plan.jobs:
        if store.status(job.key) == "done":
            d = store.job_dir(job.key)
            snap[job.key] = ((d / "record.json").read_bytes(), (d / "weights.safetensors").stat().st_mtime_ns)
    return snap


def _poison_leftovers(jobs: Path) -> list[Path]:
    """Make every ``.tmp-*`` directory look like a finished job, but marked: adopting one shows."""
    found = []
    for tmp in sorted(jobs.glob(".tmp-*")):
        key = tmp.name[len(".tmp-") :].rsplit("-", 1)[0]
        rpath = tmp / "record.json"
        try:
            rec = json.loads(rpath.read_text())
        except (OSError, ValueError):  # not written yet, or cut short by an outside kill
            rec = {
                "key": key,
                "run_id": "?",
                "checksums": {p.name: file_digest(p) for p in tmp.iterdir() if p.name != rpath.name},
            }
        rec["poisoned"] = True
        rpath.write_text(json.dumps(rec))
        found.append(tmp)
    return found


def _dead_pid() -> int:
    """The pid of a process that has ended, as a killed writer leaves in its temporary's name."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _epochs_left(store: JobStore, job) -> int:
    """Epochs a pending job still has to train: fewer than all when it resumes from a checkpoint."""
    from safetensors import safe_open

    ckpt = store.root / ".checkpoints" / f"{job.key}.safetensors"
    try:
        with safe_open(str(ckpt), framework="pt") as fh:
            return EPOCHS - int(fh.metadata()["epoch"])
    except Exception:  # none (or unreadable: the job starts afresh)
        return EPOCHS


def _training_kill(rng: random.Random, name: str, plan, store: JobStore, kills_left: int) -> tuple[str, int]:
    """A hit of failpoint ``name`` inside one of the next pending jobs, so that the kills cover every job."""
    pending = [j for j in plan.jobs if store.status(j.key) != "done"]
    per = len(pending) / max(kills_left, 1)
    target = min(len(pending) - 1, rng.choice([math.floor(per), math.ceil(per)]))  # jobs to let finish first
    epochs = [0 if j.kind == "init" else _epochs_left(store, j) for j in pending]
    if name == "checkpoint.write" and epochs[target] > 1:  # after every epoch but the last
        return name, sum(max(e - 1, 0) for e in epochs[:target]) + rng.randint(1, epochs[target] - 1)
    if name in ("train.epoch", "checkpoint.write") and epochs[target] > 0:
        return "train.epoch", sum(epochs[:target]) + rng.randint(1, epochs[target])
    return (name if name.startswith("store.") else "store.rename"), target + 1  # one hit per saved job


@pytest.fixture
def fork_server(tmp_path):
    server = ForkServer(tmp_path / "logs")
    yield server
    server.close()


def test_an_audit_killed_at_many_points_resumes_and_ends_as_if_never_killed(reference, fork_server, tmp_path):
    started = time.monotonic()
    out = tmp_path / "chained"
    plan = _plan()
    store = JobStore(out / "jobs")
    rng = random.Random(SEED)
    log: list[str] = []
    survived = avoided = starts = 0

    def start(failpoint: tuple[str, int] | None, delay: float | None) -> None:
        """One `kdaudit run` on the chained directory, killed by ``failpoint`` or after ``delay``."""
        nonlocal survived, avoided, starts
        before = _done(plan, store)
        leftovers = _poison_leftovers(out / "jobs") if (out / "jobs").exists() else []
        env = cli_env(KDAUDIT_FAILPOINT=f"{failpoint[0]}:{failpoint[1]}") if failpoint else cli_env()
        t0 = time.monotonic()
        proc = fork_server.start(*ARGS, "--out", str(out), env=env)
        starts += 1
        if delay is not None:
            proc.wait_for_output("Audit digits-mlp")  # the run has begun
            time.sleep(delay)
            proc.kill()  # a no-op if it has finished already
        proc.wait()
        stderr = proc.stderr
        what = (
            f"{failpoint[0]}:{failpoint[1]}" if failpoint else (f"SIGKILL after {delay:.2f} s" if delay else "no kill")
        )
        killed = proc.returncode == -signal.SIGKILL
        assert killed or proc.returncode == 0, (what, proc.returncode, stderr)
        assert "Traceback" not in stderr, (what, stderr)

        after = _done(plan, store)
        # no finished job was retrained, rewritten or lost
        for key, snap in before.items():
            assert after.get(key) == snap, f"{what}: finished job {key} was retrained or lost"
        # the run got past the store's cleanup (every failpoint lies after it): no leftover survives
        reached = proc.returncode == 0 or failpoint is not None or len(after) > len(before)
        if reached:
            assert not [p for p in leftovers if p.exists()], f"{what}: a .tmp-* leftover survived the rerun"
            avoided += len([k for k in before if k != plan.init.key])
        for key in after:
            assert "poisoned" not in json.loads(store.record_path(key).read_text()), (
                f"{what}: an interrupted write was adopted as a finished job"
            )
        if failpoint is not None and not killed:
            what += " (not reached)"
        survived += killed
        log.append(
            f"{what} -> {'killed' if killed else 'finished'} after {time.monotonic() - t0:.1f} s; "
            f"{len(after)}/{len(plan.jobs)} jobs done"
        )

    # training: failpoints spread over the jobs, with SIGKILLs from outside in between
    steps = TRAINING_KILLS + TRAINING_TIME_KILLS
    timed = set(rng.sample(range(steps), TRAINING_TIME_KILLS))
    kills_left = TRAINING_KILLS
    deck: list[str] = []  # every training failpoint as often as the others
    for i in range(steps):
        if len(_done(plan, store)) == len(plan.jobs):
            break
        if i in timed:
            start(None, rng.uniform(0.05, 0.5))
        else:
            deck = deck or rng.sample(TRAINING_FAILPOINTS, len(TRAINING_FAILPOINTS))
            start(_training_kill(rng, deck.pop(), plan, store, kills_left), None)
            kills_left -= 1

    # analysis: between the table files, before the report, and once from outside
    analysis = [(fp, None) for fp in ANALYSIS_KILLS] + [(None, rng.uniform(0.2, 2.5))] * ANALYSIS_TIME_KILLS
    rng.shuffle(analysis)
    (out / f".runs.csv.tmp-{_dead_pid()}").write_text("a table write cut short\n")  # what a kill there leaves
    for failpoint, delay in analysis:
        start(failpoint, delay)
    while survived < MIN_KILLS:  # a kill point not reached (the run was faster than planned): more analysis ones
        start(rng.choice(ANALYSIS_KILLS), None)
    start(None, None)  # the last rerun finishes the audit

    ref = reference.finished()
    summary = (
        f"{survived} kill points survived, {avoided} re-runs of finished models avoided, "
        f"{starts} starts, {time.monotonic() - started:.0f} s:\n  " + "\n  ".join(log)
    )
    print(summary)
    assert survived >= MIN_KILLS, summary
    assert len(_done(plan, store)) == len(plan.jobs)
    assert tmp_leftovers(out) == [], summary
    for name in ("runs.csv", "tests.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), f"{name} differs from the uninterrupted run"
    ref_store = JobStore(ref / "jobs")
    for job in plan.trained:
        assert np.array_equal(
            store.load_outputs(job.key)["test_logits"], ref_store.load_outputs(job.key)["test_logits"]
        )


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_record(path: Path, change) -> None:
    rec = json.loads(path.read_text())
    change(rec)
    path.write_text(json.dumps(rec))


CORRUPTIONS = {
    "m0": ("weights.safetensors", _truncate),
    "siddo-s01": ("weights.safetensors", _truncate),
    "kd-a0.5-s02": ("outputs.npz", _flip_byte),
    "rcd-uniform-a0.1-s01": ("record.json", Path.unlink),
    "rcd-gaussian-a0.9-s02": ("record.json", lambda p: _edit_record(p, lambda r: r.update(key="0" * 20))),
    "teacher": ("record.json", lambda p: _edit_record(p, lambda r: r["versions"].update(code="0"))),
    "kd-a0.1-s01": ("record.json", lambda p: _edit_record(p, lambda r: r.pop("checksums"))),
    "kd-a0.9-s01": ("record.json", lambda p: _edit_record(p, lambda r: r.update(versions="1"))),
    "siddo-s02": ("record.json", lambda p: p.write_text("[]")),
    "rcd-uniform-a0.9-s02": ("record.json", lambda p: p.write_text('{"key": ')),
}


def test_corrupt_jobs_are_reported_rerun_and_the_analysis_equals_the_clean_one(reference, tmp_path):
    ref = reference.finished()
    out = tmp_path / "corrupted"
    shutil.copytree(ref, out)
    plan = _plan()
    store = JobStore(out / "jobs")
    keys = {j.run_id: j.key for j in plan.jobs}
    for run_id, (name, corrupt) in CORRUPTIONS.items():
        corrupt(store.job_dir(keys[run_id]) / name)
        assert store.status(keys[run_id]) == "corrupt", run_id
    untouched = {k: store.record_path(k).read_bytes() for r, k in keys.items() if r not in CORRUPTIONS}

    r = kdaudit(*ARGS, "--out", str(out))
    assert r.returncode == 0, r.stderr
    trained = [j.run_id for j in plan.trained if j.run_id in CORRUPTIONS]
    line = next((ln for ln in r.stdout.splitlines() if "corrupt" in ln), "")
    assert f"Found {len(CORRUPTIONS)} corrupt job(s)" in line, r.stdout
    for run_id in CORRUPTIONS:
        assert run_id in line, (run_id, line)
    assert all(store.status(k) == "done" for k in keys.values())
    assert {k: store.record_path(k).read_bytes() for k in untouched} == untouched  # only those re-ran
    audit = json.loads((out / "audit.json").read_text())
    assert audit["meta"]["trained_now"] == len(trained)
    assert tmp_leftovers(out) == []
    for name in ("runs.csv", "tests.csv", "transfer.csv", "summary.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
