"""A user's own data: a loader named by import path, or arrays in ``.npz`` files.

``data.name: package.module:function`` calls the function with the dataset options its
signature declares. It returns a :class:`DataBundle` (taken as preprocessed: only subsetting is
applied), a tuple ``(x_train, y_train, x_test, y_test)`` or a dict with those keys and an
optional ``num_classes`` (tensors or numpy arrays).

``data.name: npz`` (:mod:`.npz`) reads ``data.data_dir``: ``train.npz`` and ``test.npz`` with
arrays ``x`` and ``y`` each, or one ``data.npz`` with ``x_train``, ``y_train``, ``x_test`` and
``y_test``.

For arrays, labels are integer class ids (``num_classes`` defaults to the largest label + 1
over both splits); inputs of any real dtype are cast to float32 (uint8 pixels included) and,
with ``normalize`` (default true), standardised with the train mean and std. kdaudit applies
``train_subset``, ``test_subset``, ``subset_seed`` and ``normalize`` itself; a loader never
receives them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import numpy as np
import torch

from ..errors import InputError, KdauditError, SpecError
from .bundle import DataBundle, to_bundle

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
# options kdaudit applies to every user dataset; they are not passed to a loader
KDAUDIT_OPTIONS = ("train_subset", "test_subset", "subset_seed", "normalize")


def _as_array(name: str, key: str, value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    if isinstance(value, np.ndarray):
        return value
    raise InputError(f"dataset {name!r}: {key} must be a torch tensor or a numpy array, got {type(value).__name__}")


def _check_arrays(name: str, arrays: dict[str, np.ndarray]) -> None:
    """Labels: 1-D integer ids; inputs: real numbers, finite, the same shape in both splits."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise InputError(
                f"dataset {name!r}: y_{split} must be a 1-D array of integer class ids, "
                f"got dtype {y.dtype} and shape {y.shape}"
            )
        if x.ndim < 2:
            raise InputError(f"dataset {name!r}: x_{split} must have shape (N, features...), got {x.shape}")
        if x.dtype != np.bool_ and not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise InputError(f"dataset {name!r}: x_{split} must hold real numbers, got dtype {x.dtype}")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            bad = int(x.size - np.isfinite(x).sum())
            raise InputError(f"dataset {name!r}: x_{split} holds {bad} non-finite values (NaN or inf)")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise InputError(
            f"dataset {name!r}: train inputs have shape {arrays['x_train'].shape[1:]} per sample "
            f"but test inputs {arrays['x_test'].shape[1:]}"
        )


def arrays_to_bundle(
    name: str,
    arrays: Mapping[str, object],
    num_classes: object = None,
    *,
    normalize: bool = True,
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 0,
    info: dict | None = None,
) -> DataBundle:
    """Validate user arrays (``x_train``, ``y_train``, ``x_test``, ``y_test``) into a DataBundle."""
    a = {k: _as_array(name, k, arrays[k]) for k in SPLIT_KEYS}
    _check_arrays(name, a)
    if num_classes is None:
        num_classes = max((int(a[k].max()) for k in ("y_train", "y_test") if a[k].size), default=0) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise InputError(f"dataset {name!r}: num_classes must be a positive integer, got {num_classes!r}")
    x_train, x_test = (a[k] if a[k].dtype.kind == "f" else a[k].astype(np.float32) for k in ("x_train", "x_test"))
    return to_bundle(
        name,
        x_train,
        a["y_train"],
        x_test,
        a["y_test"],
        int(num_classes),
        train_subset=train_subset,
        test_subset=test_subset,
        subset_seed=subset_seed,
        normalize=normalize,
        info={"source": name, "modality": None, **(info or {})},
    )


def check_normalize(normalize: object) -> bool:
    if not isinstance(normalize, bool):
        raise SpecError(f"data.options.normalize: must be true or false, got {normalize!r}")
    return normalize


def output_to_bundle(name: str, out: object, **kdaudit_options) -> DataBundle:
    """A loader's return value (DataBundle, 4-tuple or dict) as a validated, subset DataBundle."""
    if isinstance(out, DataBundle):
        arrays = {k: getattr(out, k) for k in SPLIT_KEYS}
        a = {k: _as_array(name, k, v) for k, v in arrays.items()}
        _check_arrays(name, a)
        options = {**kdaudit_options, "normalize": False}  # a bundle is already preprocessed
        # a bundle may hold token ids (int64 with info["model_args"]): keep its dtypes
        return to_bundle(
            name,
            a["x_train"],
            a["y_train"],
            a["x_test"],
            a["y_test"],
            out.num_classes,
            **options,
            info={"source": name, "modality": None, **out.info},
        )
    if isinstance(out, tuple) and len(out) == 4:
        return arrays_to_bundle(name, dict(zip(SPLIT_KEYS, out, strict=True)), **kdaudit_options)
    if isinstance(out, Mapping):
        missing = [k for k in SPLIT_KEYS if k not in out]
        extra = sorted(set(out) - {*SPLIT_KEYS, "num_classes"}, key=str)
        if missing or extra:
            what = f"lacks {', '.join(missing)}" if missing else f"has unknown key(s) {', '.join(map(str, extra))}"
            raise InputError(
                f"dataset {name!r}: the returned dict {what}; keys: {', '.join(SPLIT_KEYS)} and optionally num_classes"
            )
        return arrays_to_bundle(name, dict(out), out.get("num_classes"), **kdaudit_options)
    got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
    raise InputError(
        f"dataset {name!r} must return a DataBundle, a tuple (x_train, y_train, x_test, y_test) "
        f"or a dict with those keys; got {got}"
    )


def call_loader(path: str, loader: Callable[..., object], **options) -> DataBundle:
    """Call ``loader`` (the function the import path ``path`` names) with the options it declares."""
    own = {k: options.pop(k) for k in KDAUDIT_OPTIONS if k in options}
    own["normalize"] = check_normalize(own.get("normalize", True))
    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):
        raise SpecError(f"data.name {path!r}: cannot read the signature of {path!r}") from None
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = {n: p for n, p in params.items() if p.kind in by_keyword}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [] if takes_any else sorted(set(options) - set(named))
    if unknown:
        raise SpecError(
            f"dataset {path!r} has no option {', '.join(unknown)}; its options: {', '.join([*named, 'normalize'])}"
        )
    missing = [n for n, p in named.items() if p.default is p.empty and n not in options]
    if missing:
        raise SpecError(f"dataset {path!r} needs option(s) {', '.join(missing)} (data.options)")
    try:
        out = loader(**options)
    except KdauditError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
        raise InputError(f"dataset {path!r} fails to load ({detail})") from exc
    return output_to_bundle(path, out, **own)
