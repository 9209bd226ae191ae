"""One directory per job, named by its content hash, written atomically.

    <root>/<key>/weights.safetensors   the trained weights (safetensors only; no pickles)
    <root>/<key>/outputs.npz           test logits and labels (teacher: also train logits)
    <root>/<key>/record.json           spec slice, metrics, timings, versions, seeds, checksums
    <root>/<key>/snapshots/epoch-<e>/  a teacher run's (``teacher.snapshots``) weights and outputs
                                       at epoch e, written with the job and checksummed in its record

A job is built in a temporary sibling directory and renamed into place once its record is
written, so a reader never sees a half-written job. A job is *done* only if its record exists
and the checksums of its artifacts match; anything else is treated as missing and re-run.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import KdauditError
from ..faults import failpoint
from ..io import file_digest
from ..plan.jobs import result_versions, versions


class JobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def job_dir(self, key: str) -> Path:
        return self.root / key

    def record_path(self, key: str) -> Path:
        return self.job_dir(key) / "record.json"

    def load_record(self, key: str) -> dict:
        return json.loads(self.record_path(key).read_text())

    def status(self, key: str) -> str:
        """ "done", "missing", or "corrupt" (record absent/unreadable or a checksum mismatch)."""
        d = self.job_dir(key)
        if not d.exists():
            return "missing"
        try:
            record = self.load_record(key)
        except (OSError, ValueError):
            return "corrupt"
        if not isinstance(record, dict) or record.get("key") != key:
            return "corrupt"
        recorded = record.get("versions", {})
        if not isinstance(recorded, dict) or any(recorded.get(k) != v for k, v in result_versions().items()):
            return "corrupt"  # the key hashes the versions: the record contradicts its own key
        checksums = record.get("checksums")
        if not isinstance(checksums, dict) or "weights.safetensors" not in checksums:
            return "corrupt"
        for name, digest in checksums.items():
            path = d / name
            if not path.exists() or file_digest(path) != digest:
                return "corrupt"
        return "done"

    def is_done(self, key: str) -> bool:
        return self.status(key) == "done"

    def artifact_dir(self, key: str, snapshot: int | None = None) -> Path:
        """Where a job's weights and outputs are: its directory, or that of its epoch-``snapshot`` state."""
        d = self.job_dir(key)
        return d if snapshot is None else d / snapshot_name(snapshot)

    def load_weights(self, key: str, snapshot: int | None = None) -> dict[str, torch.Tensor]:
        return load_file(str(self.artifact_dir(key, snapshot) / "weights.safetensors"))

    def load_outputs(self, key: str, snapshot: int | None = None) -> dict[str, np.ndarray]:
        with np.load(self.artifact_dir(key, snapshot) / "outputs.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def save(
        self,
        key: str,
        record: dict,
        weights: dict[str, torch.Tensor],
        outputs: dict[str, np.ndarray] | None = None,
        files: dict[str, Path] | None = None,
    ) -> Path:
        """Write a job's artifacts and record atomically; returns the job directory.

        ``files`` maps paths inside the job directory (e.g. ``snapshots/epoch-2/weights.safetensors``)
        to files copied there; they are checksummed like the artifacts."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
        except OSError as exc:
            raise KdauditError(f"cannot write to the store {self.root}: {exc.strerror}") from None
        try:
            checksums = {}
            wpath = tmp / "weights.safetensors"
            save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(wpath))
            checksums[wpath.name] = file_digest(wpath)
            if outputs is not None:
                opath = tmp / "outputs.npz"
                arrays: dict[str, Any] = dict(outputs)
                with open(opath, "wb") as fh:
                    np.savez(fh, **arrays)
                checksums[opath.name] = file_digest(opath)
            for name, src in (files or {}).items():
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                checksums[name] = file_digest(dst)
            failpoint("store.artifacts")
            full = {"versions": versions(), **record, "key": key, "checksums": checksums}
            rpath = tmp / "record.json"
            rpath.write_text(json.dumps(full, indent=2, sort_keys=True, default=_json_default))
            for p in tmp.rglob("*"):
                if p.is_file():
                    _fsync(p)
            failpoint("store.rename")
            final = self.job_dir(key)
            if final.exists():  # a corrupt or stale copy: replace it
                shutil.rmtree(final)
            os.rename(tmp, final)
            return final
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise KdauditError(f"cannot write job {key} to the store {self.root}: {exc.strerror or exc}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def clean_tmp(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed."""
        n = 0
        if self.root.exists():
            for p in self.root.glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
        return n


def snapshot_name(epoch: int) -> str:
    """A snapshot's folder inside its teacher run's job directory."""
    return f"snapshots/epoch-{int(epoch)}"


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
