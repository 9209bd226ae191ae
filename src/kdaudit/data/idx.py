"""Reader for the IDX format (MNIST, Fashion-MNIST): big-endian header, then raw data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from ..errors import InputError

_DTYPES: dict[int, DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Raises :class:`InputError` naming the file on a bad magic number, an unknown type code,
    or a file whose size does not match its header (e.g. a truncated download).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4:
        raise InputError(f"IDX file {path} is too short to hold a header")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _DTYPES or ndim == 0:
        raise InputError(f"IDX file {path} has a bad magic number 0x{raw[:4].hex()} (expected 0x0000TTDD)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"IDX file {path} is truncated inside its header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise InputError(
            f"IDX file {path} holds {len(raw) - header} data bytes but its header "
            f"{dims} needs {expected} (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an array as IDX (gzip when the name ends in .gz); used by tests and tools."""
    array = np.asarray(array)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}
    if array.dtype not in codes:
        raise ValueError("write_idx supports uint8/int8 arrays")
    header = struct.pack(">HBB", 0, codes[array.dtype], array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.tobytes()
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(data)
