"""scikit-learn's 8×8 digits (1,797 images, 10 classes): shipped inside the wheel, for fast runs."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .base import DATASETS, DataBundle
from .images import held_out, image_bundle


@DATASETS.register("digits")
def digits(
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 0,
    test_fraction: float = 0.3,
    flatten: bool = True,
) -> DataBundle:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise InputError("the 'digits' dataset needs scikit-learn: pip install 'kdaudit[digits]'") from None
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    if not 0 < test_fraction < 1:
        raise InputError(f"digits: test_fraction must lie in (0, 1), got {test_fraction}")
    n_test = int(round(len(x) * test_fraction))
    train_mask, test_idx = held_out(y, n_test, 12345)
    return image_bundle(
        "digits",
        x[train_mask],
        y[train_mask],
        x[test_idx],
        y[test_idx],
        10,
        chw=(1, 8, 8),
        flatten=flatten,
        source="sklearn.datasets.load_digits",
        classes=[str(i) for i in range(10)],
        train_subset=train_subset,
        test_subset=test_subset,
        subset_seed=subset_seed,
        image_shape=[1, 8, 8],
    )
