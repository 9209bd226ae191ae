"""The ``npz`` dataset: a user's arrays in ``.npz`` files (see :mod:`.custom` for how they are read)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError, SpecError
from .base import DATASETS
from .bundle import DataBundle
from .custom import SPLIT_KEYS, arrays_to_bundle, check_normalize

NPZ_LAYOUT = (
    "expected train.npz and test.npz with arrays x, y, or data.npz with arrays x_train, y_train, x_test, y_test"
)


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"npz: {path} does not exist; {NPZ_LAYOUT}")
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise InputError(f"npz: {path} holds a single .npy array, not an .npz archive; {NPZ_LAYOUT}")
        with f:
            absent = [k for k in keys if k not in f.files]
            if absent:
                raise InputError(
                    f"npz: {path} has no array {', '.join(absent)} "
                    f"(it has: {', '.join(f.files) or 'none'}); {NPZ_LAYOUT}"
                )
            return {k: f[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"npz: cannot read {path} ({exc}); {NPZ_LAYOUT}") from None


@DATASETS.register("npz")
def npz(
    data_dir: str | None = None,
    num_classes: int | None = None,
    normalize: bool = True,
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 0,
) -> DataBundle:
    """Arrays from ``data_dir``: ``train.npz`` + ``test.npz`` (``x``, ``y``) or ``data.npz``."""
    if not data_dir:
        raise InputError(f"npz: set data.data_dir to the folder with the arrays; {NPZ_LAYOUT}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise InputError(f"npz: data.data_dir {root} is not a folder; {NPZ_LAYOUT}")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise SpecError(f"data.options.num_classes: must be a positive integer, got {num_classes!r}")
    split_files = [root / "train.npz", root / "test.npz"]
    if any(p.exists() for p in split_files):
        if (root / "data.npz").exists():
            raise InputError(f"npz: {root} holds both train.npz/test.npz and data.npz; keep one layout")
        tr, te = (_read_npz(p, ("x", "y")) for p in split_files)
        arrays = {"x_train": tr["x"], "y_train": tr["y"], "x_test": te["x"], "y_test": te["y"]}
        source = [str(p) for p in split_files]
    elif (root / "data.npz").exists():
        arrays = _read_npz(root / "data.npz", SPLIT_KEYS)
        source = [str(root / "data.npz")]
    else:
        raise InputError(f"npz: {root} holds neither train.npz/test.npz nor data.npz; {NPZ_LAYOUT}")
    return arrays_to_bundle(
        "npz",
        arrays,
        num_classes,
        normalize=check_normalize(normalize),
        train_subset=train_subset,
        test_subset=test_subset,
        subset_seed=subset_seed,
        info={"source": source},
    )
