"""File I/O that survives a crash: atomic writes and file digests.

Every file kdaudit writes for a user (tables, ``audit.json``, reports, checkpoints, the sweep
report, security results) goes through :func:`atomic_write`: the content is written to a
temporary file in the same directory and moved over the target with :func:`os.replace`, so a
reader (or a rerun after ``kill -9``) sees the old file or the new one, never half of one. A
failed write leaves no temporary file behind and is one line for the user.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = write_text(d / "a.txt", "hello")
>>> (d / "a.txt").read_text(), file_digest(d / "a.txt", "md5")
('hello', '5d41402abc4b2a76b9719d911017c592')
>>> sorted(p.name for p in d.iterdir())
['a.txt']
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import KdauditError
from .faults import failpoint

__all__ = ["atomic_write", "file_digest", "write_text", "write_bytes", "save_npz", "save_safetensors"]

_TMP = ".{name}.tmp-{pid}"


def _temporary(path: Path) -> Path:
    return path.with_name(_TMP.format(name=path.name, pid=os.getpid()))


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporaries of ``path`` left by writers that were killed (their process is gone)."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            os.kill(int(stale.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except (ValueError, OSError):
            pass


def atomic_write(path: str | Path, write: Callable[[Path], object], *, fail: str | None = None) -> Path:
    """Write ``path`` by calling ``write(tmp)`` on a temporary file and renaming it into place.

    ``fail`` names a failpoint (:mod:`kdaudit.faults`) hit between the write and the rename.
    An ``OSError`` (a full disk, a read-only directory) becomes one :class:`KdauditError` line
    and the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _temporary(path)
    try:
        write(tmp)
        if fail is not None:
            failpoint(fail)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KdauditError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str, *, fail: str | None = None) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fail=fail)


def write_bytes(path: str | Path, data: bytes, *, fail: str | None = None) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), fail=fail)


def save_npz(path: str | Path, arrays: Mapping[str, Any], *, compressed: bool = False) -> Path:
    """Atomically write numpy arrays to an ``.npz`` file (the name is kept as given)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: numpy would append ".npz" to a path
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)

    return atomic_write(path, write)


def save_safetensors(
    path: str | Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None, *, fail: str | None = None
) -> Path:
    """Atomically write torch tensors to a ``.safetensors`` file."""
    from safetensors.torch import save_file

    return atomic_write(path, lambda tmp: save_file(dict(tensors), str(tmp), metadata=dict(metadata or {})), fail=fail)


def read_index_file(out: str | Path, name: str, kind: str) -> dict:
    """The JSON index ``name`` of a ``kind`` directory (a sweep, a study), or a one-line error
    saying ``out`` is not one."""
    path = Path(out) / name
    if not path.exists():
        raise KdauditError(f"{out} is not a {kind} directory (no {name})")
    return json.loads(path.read_text())


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (``sha256``, ``md5``, ...)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
