"""Fashion-MNIST (Zalando, MIT): 60k train + 10k test 28×28 grey images, 10 classes.

Looked up, in order: ``data_dir`` from the spec (when set, it must hold the files: kdaudit then
looks nowhere else), ``$KDAUDIT_DATA/fashion-mnist``, the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``), and the user cache ``~/.cache/kdaudit/fashion-mnist``
where ``download: true`` fetches the official files.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np

from ..errors import InputError
from .base import DATASETS, DataBundle
from .idx import read_idx
from .images import image_bundle, not_found, search_dirs

FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def candidate_dirs(data_dir: str | None) -> list[Path]:
    given = [Path(data_dir).expanduser()] if data_dir else []
    return [*given, *search_dirs("fashion-mnist", system=(DEBIAN_DIR,))]


def find_files(data_dir: str | None, download: bool = False) -> Path:
    if data_dir:  # an explicit directory is never silently replaced by another copy
        given = Path(data_dir).expanduser()
        missing = [f for f in FILES.values() if not (given / f).exists()]
        if not missing:
            return given
        if given.exists():
            raise InputError(f"Fashion-MNIST: {data_dir} lacks {', '.join(missing)}")
        if not download:
            raise InputError(f"Fashion-MNIST: data.data_dir {data_dir} does not exist")
    tried = candidate_dirs(data_dir)
    for d in tried:
        if all((d / f).exists() for f in FILES.values()):
            return d
    if download:
        target = tried[-1]
        target.mkdir(parents=True, exist_ok=True)
        for f in FILES.values():
            try:
                urllib.request.urlretrieve(OFFICIAL_URL + f, target / f)
            except OSError as exc:
                raise InputError(f"Fashion-MNIST download of {f} failed: {exc}") from None
        return target
    raise not_found("Fashion-MNIST files", tried, "install them with `apt-get install dataset-fashion-mnist`")


@DATASETS.register("fashion-mnist")
def fashion_mnist(
    data_dir: str | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 0,
    flatten: bool = False,
    download: bool = False,
) -> DataBundle:
    root = find_files(data_dir, download)
    arrays = {k: read_idx(root / f) for k, f in FILES.items()}
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise InputError(f"Fashion-MNIST {split} images must be N×28×28, got shape {x.shape}")
    return image_bundle(
        "fashion-mnist",
        arrays["x_train"] / 255.0,
        arrays["y_train"].astype(np.int64),
        arrays["x_test"] / 255.0,
        arrays["y_test"].astype(np.int64),
        10,
        chw=(1, 28, 28),
        flatten=flatten,
        source=str(root),
        classes=CLASSES,
        train_subset=train_subset,
        test_subset=test_subset,
        subset_seed=subset_seed,
        image_shape=[1, 28, 28],
    )
