"""``teacher.snapshots``: the teacher run's snapshots, staged while it trains and read as teachers.

The teacher run saves each snapshot, as it is reached, to a staging folder beside the mid-run
checkpoints (atomically: a temporary folder renamed into place, before the checkpoint of that
epoch, so a run resumed from a checkpoint finds every earlier snapshot there); the finished
run's job directory is then written with all of them inside (``snapshots/epoch-<e>/``,
checksummed in its record) and the staging folder removed. A snapshot job copies one of them
into its own job directory: the audit's teacher, read by every student like a trained one.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import torch

from ..plan.jobs import Job
from ..store import JobStore
from .checkpoint import Checkpointer
from .train import TrainResult


def snapshot_stage(store: JobStore, key: str) -> Path:
    """A teacher run's staging folder, for the snapshots taken while it trains."""
    return store.root / ".checkpoints" / f"{key}.snapshots"


def _saved_epochs(job: Job) -> list[int]:
    """The epochs a teacher run saves apart from its result (its last epoch)."""
    return [e for e in job.params["snapshots"] if e < int(job.params["train"]["epochs"])]


def snapshot_args(job: Job, store: JobStore) -> dict:
    """``train_model``'s snapshot arguments for a teacher run; none for any other job."""
    if not job.teacher_run:
        return {}
    stage = snapshot_stage(store, job.key)
    for p in stage.glob(".tmp-*"):  # a write cut short by a kill
        shutil.rmtree(p, ignore_errors=True)

    def save(epoch: int, result: TrainResult) -> None:
        outputs = {
            "test_logits": result.test_logits,
            "test_labels": result.test_labels,
            "train_logits": result.train_logits,
        }
        _write_snapshot(stage, epoch, result.state, outputs)

    return {"snapshots": _saved_epochs(job), "on_snapshot": save}


def _write_snapshot(stage: Path, epoch: int, state: dict[str, torch.Tensor], outputs: dict) -> None:
    import numpy as np
    from safetensors.torch import save_file

    stage.mkdir(parents=True, exist_ok=True)
    tmp = stage / f".tmp-{epoch}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / "weights.safetensors"))
        with open(tmp / "outputs.npz", "wb") as fh:
            np.savez(fh, **{k: v for k, v in outputs.items() if v is not None})
        for p in tmp.iterdir():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        final = stage / f"epoch-{epoch}"
        if final.exists():  # from an earlier, interrupted run of the same job: the same numbers
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def staged_snapshots(job: Job, store: JobStore) -> dict[str, Path]:
    """The staged snapshot files of a finished teacher run, by their path in its job directory."""
    from ..errors import KdauditError
    from ..store.jobstore import snapshot_name

    stage = snapshot_stage(store, job.key)
    files = {}
    for epoch in _saved_epochs(job):
        for name in ("weights.safetensors", "outputs.npz"):
            src = stage / f"epoch-{epoch}" / name
            if not src.is_file():
                Checkpointer(store.root / ".checkpoints" / f"{job.key}.safetensors", 1).clear()
                raise KdauditError(
                    f"{job.run_id}: its epoch-{epoch} snapshot is missing from {stage} (removed "
                    "while it trained?); rerun to train it again"
                )
            files[f"{snapshot_name(epoch)}/{name}"] = src
    return files


def read_snapshot(job: Job, store: JobStore) -> tuple[TrainResult, dict]:
    """A snapshot job: the teacher run's state at ``snapshot_of.at`` epochs, as a TrainResult, and
    what its record states about it."""
    from ..errors import KdauditError
    from .train import _lr_factor

    start = time.perf_counter()
    run_key = job.deps[0]
    snap = job.params["snapshot_of"]
    at, epochs = int(snap["at"]), int(snap["epochs"])
    if not store.is_done(run_key):
        raise KdauditError(f"{job.run_id}: the teacher run {run_key} it is a snapshot of is not finished in the store")
    run = store.load_record(run_key)
    which = None if at == epochs else at  # the run's last epoch is its result
    outputs = store.load_outputs(run_key, which)
    # the snapshot equals a teacher trained for `at` epochs where every epoch's learning rate is
    # the same in both runs (constant and step schedules, warm-up); not under cosine, which
    # spreads its decay over the whole run
    train = job.params["train"]
    same = all(_lr_factor({**train, "epochs": epochs}, e) == _lr_factor(train, e) for e in range(at))
    result = TrainResult(
        state=store.load_weights(run_key, which),
        test_logits=outputs["test_logits"],
        test_labels=outputs["test_labels"],
        train_logits=outputs.get("train_logits"),
        history=list(run.get("history", []))[:at],
        seconds=time.perf_counter() - start,
    )
    extra = {
        "snapshot_of": {
            "key": run_key,
            "epochs": epochs,
            "at": at,
            "same_as_trained_for_at": same,
            "run_seconds": run.get("seconds"),
        }
    }
    return result, extra
