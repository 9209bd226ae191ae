"""Datasets as in-memory tensors: :class:`DataBundle` and the conversion of arrays into one.

A bundle holds train and test tensors already preprocessed (float inputs, int64 labels).
Everything that fits in memory is held as tensors and batched by index, so no per-sample Python
runs on the training hot path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError


@dataclass
class DataBundle:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    info: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def model_args(self) -> dict:
        """Data-dependent model arguments (e.g. ``vocab_size`` for token inputs).

        A factory receives those it declares; the spec's ``model.kwargs`` cannot override them.
        """
        return dict(self.info.get("model_args", {}))

    def fingerprint(self) -> str:
        """Content hash of the tensors: a record can tell which data it saw.

        Computed once and reused while the tensors are the same objects, unmodified (their
        version counters unchanged): every job's record states it, and hashing a large
        dataset for each of a hundred jobs would cost seconds."""
        tensors = (self.x_train, self.y_train, self.x_test, self.y_test)
        key = tuple((id(t), t._version) for t in tensors)
        cached = self.__dict__.get("_fingerprint")
        if cached is not None and cached[0] == key:
            return cached[1]
        h = hashlib.sha256()
        for t in tensors:
            a = t.detach().cpu().contiguous().numpy()
            h.update(str(a.shape).encode())
            h.update(str(a.dtype).encode())
            h.update(a.tobytes())
        value = h.hexdigest()[:16]
        self.__dict__["_fingerprint"] = (key, value)
        return value


def check_split(name: str, x: np.ndarray, y: np.ndarray, num_classes: int, split: str) -> None:
    """Clear errors for empty splits, length mismatches and labels out of range."""
    if len(x) == 0:
        raise InputError(f"dataset {name!r}: the {split} split is empty")
    if len(x) != len(y):
        raise InputError(f"dataset {name!r}: {split} split has {len(x)} inputs but {len(y)} labels")
    if y.min() < 0 or y.max() >= num_classes:
        raise InputError(
            f"dataset {name!r}: {split} labels must lie in [0, {num_classes}), found {int(y.min())}..{int(y.max())}"
        )


def subset_indices(n: int, size: int | None, seed: int, *, labels: np.ndarray | None = None) -> np.ndarray:
    """A fixed, seeded subset of ``size`` indices out of ``n`` (all of them, in order, if None).

    With ``labels`` the subset is stratified: each class keeps its share (rounded), so
    a small subset stays balanced.
    """
    if size is None or size >= n:
        return np.arange(n)
    if size <= 0:
        raise InputError(f"subset size must be positive, got {size}")
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.permutation(n)[:size])
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / n * size).astype(int)
    # distribute the remainder to the largest fractional parts, deterministically
    rest = size - quota.sum()
    frac = counts / n * size - quota
    for k in np.argsort(-frac, kind="stable")[:rest]:
        quota[k] += 1
    picked = []
    for c, q in zip(classes, quota, strict=True):
        idx = np.flatnonzero(labels == c)
        picked.append(idx[rng.permutation(len(idx))[:q]])
    return np.sort(np.concatenate(picked))


def to_bundle(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    *,
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 0,
    normalize: bool = True,
    info: dict | None = None,
) -> DataBundle:
    """Validate, subset, standardise (train mean/std) and convert arrays to a DataBundle.

    Integer inputs (token ids) stay int64 and are never standardised. For float inputs with
    ``normalize`` the standardisation is recorded in ``info["normalization"]`` (mean, std), so
    raw-space bounds (e.g. pixels in [0, 1]) can be mapped into the model's input space.
    """
    check_split(name, x_train, y_train, num_classes, "train")
    check_split(name, x_test, y_test, num_classes, "test")
    tr = subset_indices(len(x_train), train_subset, subset_seed, labels=y_train)
    te = subset_indices(len(x_test), test_subset, subset_seed + 1, labels=y_test)
    meta = dict(info or {})
    if np.issubdtype(x_train.dtype, np.integer):
        xtr = x_train[tr].astype(np.int64)
        xte = x_test[te].astype(np.int64)
    else:
        xtr = x_train[tr].astype(np.float32)
        xte = x_test[te].astype(np.float32)
        if normalize:
            mean = float(xtr.mean())
            std = float(xtr.std()) or 1.0
            xtr = (xtr - mean) / std
            xte = (xte - mean) / std
            meta["normalization"] = {"mean": mean, "std": std}
    meta.update(n_train=int(len(tr)), n_test=int(len(te)), num_classes=int(num_classes))
    return DataBundle(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(xtr)),
        y_train=torch.from_numpy(y_train[tr].astype(np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(xte)),
        y_test=torch.from_numpy(y_test[te].astype(np.int64)),
        num_classes=int(num_classes),
        info=meta,
    )
