import numpy as np
import pytest

from kdaudit.data.base import load_dataset, subset_indices
from kdaudit.data.fashion_mnist import FILES
from kdaudit.data.idx import read_idx, write_idx
from kdaudit.errors import InputError


def write_fake_fashion_mnist(root, n_train=60, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for k, f in FILES.items():
        write_idx(root / f, arrays[k])
    return arrays


def test_idx_round_trip_plain_and_gzip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        write_idx(tmp_path / name, a)
        assert np.array_equal(read_idx(tmp_path / name), a)


def test_idx_header_is_big_endian_per_spec(tmp_path):
    # the magic 0x00000801 and a big-endian count, as in the official label files
    raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])
    (tmp_path / "l.idx").write_bytes(raw)
    assert read_idx(tmp_path / "l.idx").tolist() == [7, 8, 9]


@pytest.mark.parametrize(
    "raw, words",
    [
        (bytes([1, 2, 8, 1, 0, 0, 0, 1, 5]), "bad magic"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]), "truncated"),
        (bytes([0, 0]), "too short"),
        (bytes([0, 0, 8, 3, 0, 0]), "truncated inside its header"),
    ],
)
def test_idx_rejects_bad_files(tmp_path, raw, words):
    p = tmp_path / "bad.idx"
    p.write_bytes(raw)
    with pytest.raises(InputError, match=words):
        read_idx(p)


def test_idx_truncated_gzip_is_a_clear_error(tmp_path):
    p = tmp_path / "x.idx.gz"
    write_idx(p, np.zeros((50, 28, 28), np.uint8))
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(InputError, match="x.idx.gz"):
        read_idx(p)


def test_fashion_mnist_loader_reads_idx_layout(tmp_path):
    arrays = write_fake_fashion_mnist(tmp_path / "fm")
    b = load_dataset("fashion-mnist", data_dir=str(tmp_path / "fm"))
    assert b.x_train.shape == (60, 1, 28, 28) and b.x_test.shape == (20, 1, 28, 28)
    assert b.num_classes == 10
    assert b.y_train.tolist() == arrays["y_train"].astype(int).tolist()
    # standardised with the training mean/std
    x = arrays["x_train"] / 255.0
    expected = (x - x.mean()) / x.std()
    assert np.allclose(b.x_train.numpy()[:, 0], expected, atol=1e-5)
    flat = load_dataset("fashion-mnist", data_dir=str(tmp_path / "fm"), flatten=True, train_subset=30)
    assert flat.x_train.shape == (30, 784)
    assert np.bincount(flat.y_train.numpy()).tolist() == [3] * 10  # stratified subset


def test_fashion_mnist_missing_files_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr("kdaudit.data.fashion_mnist.DEBIAN_DIR", tmp_path / "none")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KDAUDIT_DATA", raising=False)
    with pytest.raises(InputError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    (tmp_path / "partial").mkdir()
    with pytest.raises(InputError, match="lacks"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "partial"))


def test_fashion_mnist_label_out_of_range(tmp_path):
    write_fake_fashion_mnist(tmp_path / "fm")
    write_idx(tmp_path / "fm" / FILES["y_test"], np.full(20, 12, np.uint8))
    with pytest.raises(InputError, match=r"labels must lie in \[0, 10\)"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "fm"))


def test_subsets_are_deterministic_stratified_and_exact():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    a = subset_indices(100, 50, 7, labels=labels)
    b = subset_indices(100, 50, 7, labels=labels)
    c = subset_indices(100, 50, 8, labels=labels)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(a) == 50 and len(set(a)) == 50
    assert np.bincount(labels[a]).tolist() == [5, 10, 15, 20]
    assert np.array_equal(subset_indices(100, None, 0), np.arange(100))


def test_digits_dataset_split_is_fixed():
    a = load_dataset("digits")
    b = load_dataset("digits")
    assert a.x_train.shape[1:] == (64,)
    assert len(a.x_train) + len(a.x_test) == 1797
    assert a.fingerprint() == b.fingerprint()
    assert load_dataset("digits", train_subset=100).fingerprint() != a.fingerprint()


@pytest.mark.skipif(
    not (__import__("pathlib").Path("/usr/share/datasets/fashion-mnist") / FILES["x_test"]).exists(),
    reason="Debian dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist_from_debian_package():
    b = load_dataset("fashion-mnist", train_subset=1000, test_subset=500)
    assert b.x_train.shape == (1000, 1, 28, 28) and len(b.x_test) == 500
    assert b.info["source"].startswith("/usr/share/datasets")
