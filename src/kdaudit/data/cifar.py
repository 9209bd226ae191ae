"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009): 50k train + 10k test 32×32 colour images.

Read from the official "python version" layout: ``cifar-10-batches-py/`` (``data_batch_1``..
``data_batch_5``, ``test_batch``, ``batches.meta``) or ``cifar-100-python/`` (``train``,
``test``, ``meta``; fine and coarse labels). ``data_dir`` may point at that folder, at its parent
or at the official tarball, whose members are read without extracting it. Looked up, in order:
``data_dir`` (when set, it must hold the data: kdaudit then looks nowhere else),
``$KDAUDIT_DATA/cifar10`` (resp. ``cifar100``) and the user cache ``~/.cache/kdaudit/cifar10``
(resp. ``cifar100``), where ``download: true`` fetches the official tarball and checks its md5.

The official files are pickles. CIFAR pickles are read only from the path the user chose, and
only through :class:`CifarUnpickler`, a restricted unpickler that rebuilds dicts, lists,
strings, numbers and plain numpy arrays and refuses every other global, so a tampered file
cannot run code.
"""

from __future__ import annotations

import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import InputError, SpecError
from ..io import file_digest
from .base import DATASETS, DataBundle
from .images import cache_dir, image_bundle, locate, search_dirs

PIXELS = 3 * 32 * 32


def _latin1_bytes(text: object, encoding: object = "latin1") -> bytes:
    """How Python 3 protocol-2 pickles spell a bytes object: ``_codecs.encode(str, "latin1")``."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "") != "latin1":
        raise InputError("CIFAR reader refuses _codecs.encode with anything but (str, 'latin1')")
    return text.encode("latin1")


def _empty_bytes(*args: object) -> bytes:
    """How Python 3 protocol-2 pickles spell ``b""``: ``bytes()``; any argument is refused."""
    if args:
        raise InputError("CIFAR reader refuses bytes(...) with arguments")
    return b""


# Exactly the globals the CIFAR files need: numpy's array reconstruction (the official files were
# pickled by Python 2 with numpy.core; numpy >= 2 pickles as numpy._core), plus the two spellings
# of bytes that protocol-2 pickles written by Python 3 use. Everything else is refused.
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`; any other global is an InputError."""

    def __init__(self, fh: IO[bytes], label: str) -> None:
        super().__init__(fh, encoding="bytes")
        self.label = label

    def find_class(self, module: str, name: str) -> object:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise InputError(
                f"CIFAR reader refuses to unpickle {module}.{name} from {self.label}: "
                "a CIFAR file holds only numpy arrays, lists, strings and numbers"
            ) from None


def read_pickle(fh: IO[bytes], label: str) -> dict[bytes, object]:
    """One CIFAR pickle as a dict with bytes keys; anything malformed is an InputError naming it."""
    try:
        obj = CifarUnpickler(fh, label).load()
    except InputError:
        raise
    except Exception as exc:  # a damaged or foreign file can fail in many ways inside pickle
        raise InputError(f"CIFAR: cannot read {label} ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise InputError(f"CIFAR: {label} must hold a dict, found {type(obj).__name__}")
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


@dataclass(frozen=True)
class Layout:
    """Where one CIFAR variant's files live and how they are named."""

    name: str
    title: str
    folder: str
    tarball: str
    md5: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, *self.test, self.meta)

    @property
    def url(self) -> str:
        return "https://www.cs.toronto.edu/~kriz/" + self.tarball

    def cache_dir(self) -> Path:
        return cache_dir(self.name)


CIFAR10 = Layout(
    "cifar10",
    "CIFAR-10",
    "cifar-10-batches-py",
    "cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "batches.meta",
)
CIFAR100 = Layout(
    "cifar100",
    "CIFAR-100",
    "cifar-100-python",
    "cifar-100-python.tar.gz",
    "eb9058c3a382ffc7106e4002c42a8d85",
    ("train",),
    ("test",),
    "meta",
)


def resolve(layout: Layout, d: Path) -> Path | None:
    """The batches folder or tarball at or inside ``d``; None when there is neither.

    A folder holding only part of the files is an error, not a miss.
    """
    if d.is_file():
        return d
    if not d.is_dir():
        return None
    for folder in (d, d / layout.folder):
        present = [f for f in layout.files if (folder / f).is_file()]
        if len(present) == len(layout.files):
            return folder
        if present:
            missing = [f for f in layout.files if f not in present]
            raise InputError(f"{layout.title}: {folder} lacks {', '.join(missing)}")
    if (d / layout.tarball).is_file():
        return d / layout.tarball
    return None


def download(layout: Layout) -> Path:
    """Fetch the official tarball into the cache and check its md5."""
    target = layout.cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    dest = target / layout.tarball
    part = dest.with_name(dest.name + ".part")
    try:
        urllib.request.urlretrieve(layout.url, part)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise InputError(
            f"{layout.title} download from {layout.url} failed ({exc}); fetch it by hand into {target}"
        ) from None
    digest = file_digest(part, "md5")
    if digest != layout.md5:
        part.unlink(missing_ok=True)
        raise InputError(f"{layout.title} download from {layout.url} has md5 {digest}, expected {layout.md5}")
    part.replace(dest)
    return dest


def find_source(layout: Layout, data_dir: str | None, fetch: bool = False) -> Path:
    """The batches folder or tarball to read, following the documented lookup order."""
    return locate(
        data_dir,
        lambda d: resolve(layout, d),
        search_dirs(layout.name),
        (lambda: download(layout)) if fetch else None,
        title=layout.title,
        expected=f"{layout.folder}/ nor {layout.tarball}",
        what=layout.title,
        how=f"put {layout.tarball} from {layout.url} into {layout.cache_dir()}",
        hint=f"point it at the {layout.title} python batches: the {layout.folder} folder, "
        f"the folder that holds it, or {layout.tarball}",
    )


def read_files(layout: Layout, source: Path) -> dict[str, dict[bytes, object]]:
    """Every file of the layout, unpickled, from the folder or straight from the tarball."""
    if source.is_dir():
        out = {}
        for f in layout.files:
            with open(source / f, "rb") as fh:
                out[f] = read_pickle(fh, str(source / f))
        return out
    out = {}
    try:
        with tarfile.open(source, "r:*") as tf:
            for member in tf:  # in archive order, so a gzip stream is read once
                parts = member.name.removeprefix("./").split("/")
                if len(parts) != 2 or parts[0] != layout.folder or parts[1] not in layout.files:
                    continue
                stream = tf.extractfile(member) if member.isfile() else None
                if stream is not None and parts[1] not in out:
                    out[parts[1]] = read_pickle(stream, f"{source}:{member.name}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{layout.title}: cannot read the tarball {source} ({exc})") from None
    missing = [f"{layout.folder}/{f}" for f in layout.files if f not in out]
    if missing:
        raise InputError(f"{layout.title}: the tarball {source} lacks {', '.join(missing)}")
    return out


def batch_arrays(
    batch: dict[bytes, object], label_key: bytes, num_classes: int, label: str
) -> tuple[np.ndarray, np.ndarray]:
    """(images N×3×32×32 uint8, labels int64) from one batch dict, validated."""
    for key in (b"data", label_key):
        if key not in batch:
            raise InputError(f"CIFAR: {label} has no {key.decode()!r} entry")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        desc = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise InputError(f"CIFAR: {label} 'data' must be an N×{PIXELS} uint8 array, found {desc}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError):
        raise InputError(f"CIFAR: {label} {label_key.decode()!r} must be a list of integers") from None
    if labels.shape != (len(data),):
        raise InputError(f"CIFAR: {label} has {len(data)} images but {labels.size} {label_key.decode()!r}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(f"CIFAR: {label} labels must lie in [0, {num_classes}), found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def class_names(meta: dict[bytes, object], key: bytes, num_classes: int, label: str) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, list) or len(names) != num_classes:
        raise InputError(f"CIFAR: {label} must list {num_classes} {key.decode()!r}")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def build(
    layout: Layout,
    label_key: bytes,
    names_key: bytes,
    num_classes: int,
    *,
    data_dir: str | None,
    download: bool,
    flatten: bool,
    train_subset: int | None,
    test_subset: int | None,
    subset_seed: int,
    extra_info: dict | None = None,
) -> DataBundle:
    source = find_source(layout, data_dir, download)
    files = read_files(layout, source)
    where = (lambda f: f"{source}:{layout.folder}/{f}") if source.is_file() else (lambda f: str(source / f))
    splits = {}
    for split, names in (("train", layout.train), ("test", layout.test)):
        parts = [batch_arrays(files[f], label_key, num_classes, where(f)) for f in names]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        splits[split] = (np.divide(x, 255, dtype=np.float32), y)
    classes = class_names(files[layout.meta], names_key, num_classes, where(layout.meta))
    return image_bundle(
        layout.name,
        *splits["train"],
        *splits["test"],
        num_classes,
        chw=(3, 32, 32),
        flatten=flatten,
        source=f"{layout.url} ({source})",
        classes=classes,
        train_subset=train_subset,
        test_subset=test_subset,
        subset_seed=subset_seed,
        **(extra_info or {}),
    )


@DATASETS.register("cifar10")
def cifar10(
    data_dir: str | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 0,
    flatten: bool = False,
    download: bool = False,
) -> DataBundle:
    return build(
        CIFAR10,
        b"labels",
        b"label_names",
        10,
        data_dir=data_dir,
        download=download,
        flatten=flatten,
        train_subset=train_subset,
        test_subset=test_subset,
        subset_seed=subset_seed,
    )


@DATASETS.register("cifar100")
def cifar100(
    data_dir: str | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 0,
    label_mode: str = "fine",
    flatten: bool = False,
    download: bool = False,
) -> DataBundle:
    if label_mode not in ("fine", "coarse"):
        raise SpecError(f"cifar100: label_mode must be 'fine' (100 classes) or 'coarse' (20), got {label_mode!r}")
    num_classes = 100 if label_mode == "fine" else 20
    return build(
        CIFAR100,
        f"{label_mode}_labels".encode(),
        f"{label_mode}_label_names".encode(),
        num_classes,
        data_dir=data_dir,
        download=download,
        flatten=flatten,
        train_subset=train_subset,
        test_subset=test_subset,
        subset_seed=subset_seed,
        extra_info={"label_mode": label_mode},
    )
