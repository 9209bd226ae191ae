"""What the image datasets share: where their files are looked up, and how their arrays become
a :class:`DataBundle`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .bundle import DataBundle, subset_indices, to_bundle


def cache_dir(name: str) -> Path:
    """The user cache of a dataset, ``~/.cache/kdaudit/<name>`` (where downloads go)."""
    return Path.home() / ".cache" / "kdaudit" / name


def search_dirs(name: str, system: Sequence[Path] = ()) -> list[Path]:
    """Where a dataset is looked for without ``data_dir``: ``$KDAUDIT_DATA/<name>`` (when the
    variable is set), the ``system`` folders, then :func:`cache_dir`."""
    dirs = [Path(os.environ["KDAUDIT_DATA"]) / name] if os.environ.get("KDAUDIT_DATA") else []
    return [*dirs, *system, cache_dir(name)]


def not_found(what: str, tried: Sequence[Path], how: str) -> InputError:
    """The error for data found nowhere: where it was looked for, and ``how`` to get it."""
    return InputError(
        f"{what} not found (looked in " + ", ".join(str(d) for d in tried) + f"); {how}, set data.data_dir, "
        "or set data.options.download=true when online"
    )


def locate(
    data_dir: str | None,
    resolve: Callable[[Path], Path | None],
    tried: Sequence[Path],
    fetch: Callable[[], Path] | None,
    *,
    title: str,
    expected: str,
    what: str,
    how: str,
    hint: str = "",
) -> Path:
    """The folder or archive to read: ``resolve(d)`` of the explicit ``data_dir`` (which is never
    replaced by another copy), else of the first folder in ``tried`` where it finds the data,
    else what ``fetch`` downloads (``download: true``).

    ``title`` starts the error for a ``data_dir`` without the data, which ``holds neither
    {expected}``, followed by ``hint`` (what ``data_dir`` should name) when given; ``what`` and
    ``how`` make the error for data found nowhere (:func:`not_found`).
    """
    if data_dir:
        given = Path(data_dir).expanduser()
        found = resolve(given)
        if found is None:
            why = f"holds neither {expected}" if given.exists() else "does not exist"
            raise InputError(f"{title}: data.data_dir {data_dir} {why}" + (f"; {hint}" if hint else ""))
        return found
    for d in tried:
        found = resolve(d)
        if found is not None:
            return found
    if fetch is not None:
        return fetch()
    raise not_found(what, tried, how)


def held_out(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed test split of ``n_test`` samples, stratified by class: (train mask, test indices)."""
    test_idx = subset_indices(len(labels), n_test, seed, labels=labels)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    return train_mask, test_idx


def image_bundle(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    *,
    chw: tuple[int, int, int],
    flatten: bool,
    source: str,
    classes: list[str],
    train_subset: int | None,
    test_subset: int | None,
    subset_seed: int,
    **info: object,
) -> DataBundle:
    """Images with values in [0, 1] as a DataBundle of ``N×C×H×W`` inputs (``chw``), or
    ``N×(C·H·W)`` with ``flatten``. ``info`` records the source, the class names, the image modality, the raw
    range [0, 1] and then ``info``."""
    shape = (-1, math.prod(chw)) if flatten else (-1, *chw)
    return to_bundle(
        name,
        x_train.reshape(shape),
        y_train,
        x_test.reshape(shape),
        y_test,
        num_classes,
        train_subset=train_subset,
        test_subset=test_subset,
        subset_seed=subset_seed,
        info={"source": source, "classes": classes, "modality": "image", "raw_range": [0.0, 1.0], **info},
    )
