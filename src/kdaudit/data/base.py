"""The dataset registry and :func:`load_dataset`.

A dataset factory takes keyword options and returns a :class:`DataBundle` (:mod:`.bundle`):
train and test tensors already preprocessed. ``load_dataset`` builds a registered dataset by
name, or calls a user's loader named by an import path (:mod:`.custom`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ..errors import InputError, SpecError
from ..registry import Registry
from .bundle import DataBundle, check_split, subset_indices, to_bundle
from .custom import call_loader

__all__ = ["DATASETS", "DataBundle", "check_split", "load_dataset", "subset_indices", "to_bundle"]

DATASETS: Registry[Callable[..., DataBundle]] = Registry(
    "dataset",
    builtins=tuple(
        f"kdaudit.data.{m}"
        for m in ("digits", "fashion_mnist", "mnist", "cifar", "audio", "speech_commands", "text", "npz")
    ),
)


def load_dataset(name: str, **options) -> DataBundle:
    """Build a registered dataset by name, or call the loader ``package.module:function``.

    An unknown or ill-typed option is a one-line error.
    """
    factory = DATASETS.resolve(name, field="data.name")
    if name not in DATASETS:
        return call_loader(name, factory, **options)
    params = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        allowed = [p for p in params if p not in ("train_subset", "test_subset", "subset_seed")]
        raise SpecError(f"dataset {name!r} has no option {', '.join(unknown)}; its options: {', '.join(allowed)}")
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"dataset {name!r}: bad option value or data ({exc})") from None
