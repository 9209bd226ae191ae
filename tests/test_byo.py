"""A user's own model and dataset: import paths, argument passing by signature, output
checks, layer lookup, the npz dataset, the MLP width knob, and every error path."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

from kdaudit.data.base import DATASETS, load_dataset
from kdaudit.errors import InputError, SpecError
from kdaudit.models.base import (
    build_model,
    check_model_output,
    feature_layers,
    model_param_count,
    resolve_model_factory,
    resolve_module,
)
from kdaudit.registry import import_object, is_import_path

MOD = "kdaudit_byo_user"  # the user's module, written to a temporary folder on sys.path

USER_CODE = """
import numpy as np
import torch
from torch import nn

from kdaudit.data.base import DataBundle

CALLS = []
NOT_CALLABLE = 3


class TinyNet(nn.Module):
    def __init__(self, input_shape, num_classes, hidden=4):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)
        self.feature_layers = ("body.2",)

    def forward(self, x):
        return self.head(self.body(x))


def classes_only(num_classes, scale=1):
    CALLS.append({"num_classes": num_classes, "scale": scale})
    return nn.Linear(3, num_classes)


def anything(**kwargs):
    CALLS.append(kwargs)
    return nn.Linear(3, kwargs["num_classes"])


def tokens(vocab_size, num_classes):
    return nn.Sequential(nn.Embedding(vocab_size, 2), nn.Flatten(), nn.Linear(12, num_classes))


class FixedFive(nn.Module):
    def __init__(self, input_shape):
        super().__init__()
        self.lin = nn.Linear(int(np.prod(input_shape)), 5)

    def forward(self, x):
        return self.lin(x.flatten(1))


class Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom\\nsecond line")


class TupleOut(nn.Module):
    def forward(self, x):
        return x, x


def not_a_module():
    return [1, 2]


def fails_to_build():
    raise KeyError("weights.pt")


def arrays(seed=0, n_train=40, n_test=16, k=4):
    rng = np.random.default_rng(seed)
    y_train = np.arange(n_train) % k
    y_test = np.arange(n_test) % k
    x_train = rng.normal(3.0, 2.0, (n_train, 2, 3))
    x_test = rng.normal(3.0, 2.0, (n_test, 2, 3))
    return x_train, y_train, x_test, y_test


def as_tuple(seed=0):
    return arrays(seed)


def as_dict(seed=0, num_classes=None):
    d = dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays(seed)))
    if num_classes is not None:
        d["num_classes"] = num_classes
    return d


def as_tensors():
    return tuple(torch.from_numpy(a) for a in arrays())


def as_bundle():
    x_train = torch.arange(40 * 6).reshape(40, 6) % 9
    x_test = torch.arange(16 * 6).reshape(16, 6) % 9
    return DataBundle(
        name="mine", x_train=x_train, y_train=torch.arange(40) % 4,
        x_test=x_test, y_test=torch.arange(16) % 4, num_classes=4,
        info={"model_args": {"vocab_size": 9, "pad_id": 0}, "modality": "text"},
    )


def with_dir(data_dir, seed=0):
    CALLS.append({"data_dir": data_dir})
    return arrays(seed)


def needs(required):
    return arrays()


def raises():
    raise OSError("disk gone")


def bad(kind):
    x_train, y_train, x_test, y_test = arrays()
    if kind == "list":
        return [x_train, y_train, x_test, y_test]
    if kind == "three":
        return x_train, y_train, x_test
    if kind == "none":
        return None
    if kind == "dict-missing":
        return {"x_train": x_train, "y_train": y_train, "x_test": x_test}
    if kind == "dict-extra":
        return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "classes": 4}
    if kind == "float-labels":
        return x_train, y_train.astype(np.float32), x_test, y_test
    if kind == "2d-labels":
        return x_train, y_train[:, None], x_test, y_test
    if kind == "nan":
        x_test = x_test.copy()
        x_test[3, 1, 2] = np.nan
        x_test[5, 0, 0] = np.inf
        return x_train, y_train, x_test, y_test
    if kind == "shapes":
        return x_train, y_train, x_test[:, :, :2], y_test
    if kind == "lengths":
        return x_train, y_train[:-1], x_test, y_test
    if kind == "python-list":
        return x_train.tolist(), y_train, x_test, y_test
    if kind == "strings":
        return x_train.astype(str), y_train, x_test, y_test
    if kind == "1d-inputs":
        return x_train[:, 0, 0], y_train, x_test[:, 0, 0], y_test
    if kind == "negative-label":
        y_train = y_train.copy()
        y_train[0] = -1
        return x_train, y_train, x_test, y_test
    if kind == "empty-test":
        return x_train, y_train, x_test[:0], y_test[:0]
    if kind == "bad-num-classes":
        return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "num_classes": 2.5}
    if kind == "bundle-float-labels":
        t = torch.from_numpy
        return DataBundle("b", t(x_train), t(y_train).float(), t(x_test), t(y_test), 4)
    raise AssertionError(kind)
"""


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's module (and one that fails on import), importable for this test module."""
    root = tmp_path_factory.mktemp("usercode")
    (root / f"{MOD}.py").write_text(USER_CODE)
    (root / f"{MOD}_broken.py").write_text("raise RuntimeError('cannot start')\n")
    sys.path.insert(0, str(root))
    import importlib

    module = importlib.import_module(MOD)
    yield module
    sys.path.remove(str(root))
    for name in (MOD, f"{MOD}_broken"):
        sys.modules.pop(name, None)


def standardised(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: float32 inputs standardised with the train split's scalar mean and std."""
    a, b = x_train.astype(np.float32), x_test.astype(np.float32)
    mean, std = a.astype(np.float64).mean(), a.astype(np.float64).std()
    return (a - mean) / std, (b - mean) / std


# --------------------------------------------------------------------------- import paths


@pytest.mark.parametrize(
    "name, expected",
    [
        ("pkg.mod:Net", True),
        ("mod:make_net", True),
        ("a.b.c:Outer.inner", True),
        ("_p1.m2:_F", True),
        ("mlp", False),
        ("small-cnn", False),
        ("pkg.mod:", False),
        (":Net", False),
        ("pkg.mod:Net:x", False),
        ("my-pkg.mod:Net", False),
        ("pkg..mod:Net", False),
        ("C:/data/net.py", False),
        (None, False),
    ],
)
def test_is_import_path(name, expected):
    assert is_import_path(name) is expected


def test_import_object_resolves_dotted_attributes():
    assert import_object("json:JSONDecoder.decode", "model.name") is __import__("json").JSONDecoder.decode
    assert import_object("os.path:join", "data.name") is __import__("os").path.join


def test_build_by_import_path_with_kwargs(user):
    torch.manual_seed(0)
    m = build_model(f"{MOD}:TinyNet", (2, 3), 5, hidden=7)
    assert isinstance(m, user.TinyNet)
    assert m.body[1].in_features == 6 and m.body[1].out_features == 7 and m.head.out_features == 5
    assert model_param_count(m) == (6 * 7 + 7) + (7 * 5 + 5)
    assert feature_layers(m) == ("body.2",)
    assert m(torch.randn(3, 2, 3)).shape == (3, 5)
    assert resolve_model_factory(f"{MOD}:TinyNet") is user.TinyNet
    assert resolve_model_factory("mlp").__name__ == "mlp"


def test_arguments_are_passed_by_signature(user):
    user.CALLS.clear()
    build_model(f"{MOD}:classes_only", (3,), 4, {"vocab_size": 9, "pad_id": 0}, scale=2)
    # no input_shape and no data args: the function does not declare them
    assert user.CALLS == [{"num_classes": 4, "scale": 2}]
    user.CALLS.clear()
    build_model(f"{MOD}:anything", (3,), 4, {"vocab_size": 9, "pad_id": 0}, depth=3)
    assert user.CALLS == [{"input_shape": (3,), "num_classes": 4, "vocab_size": 9, "pad_id": 0, "depth": 3}]
    user.CALLS.clear()
    build_model(f"{MOD}:anything", [3], 2)
    assert user.CALLS == [{"input_shape": (3,), "num_classes": 2}]
    m = build_model(f"{MOD}:tokens", (6,), 3, {"vocab_size": 11, "pad_id": 0})
    assert m[0].num_embeddings == 11


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "nosuchpkg.mod:Net",
            "model.name 'nosuchpkg.mod:Net': cannot import module 'nosuchpkg.mod' (No module named 'nosuchpkg')",
        ),
        (f"{MOD}:Net", f"model.name '{MOD}:Net': module '{MOD}' has no attribute 'Net'"),
        (
            f"{MOD}:TinyNet.missing",
            f"model.name '{MOD}:TinyNet.missing': module '{MOD}' has no attribute 'TinyNet.missing'",
        ),
        (f"{MOD}:NOT_CALLABLE", f"model.name '{MOD}:NOT_CALLABLE': '{MOD}:NOT_CALLABLE' is not callable"),
        (
            f"{MOD}_broken:Net",
            f"model.name '{MOD}_broken:Net': cannot import module '{MOD}_broken' (RuntimeError: cannot start)",
        ),
        ("bad name:Net", "model.name 'bad name:Net': not an import path of the form package.module:Name"),
    ],
)
def test_import_errors_are_one_line(user, name, message):
    with pytest.raises(SpecError) as e:
        build_model(name, (3,), 2)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "name, kwargs, data_args, message",
    [
        (
            f"{MOD}:TinyNet",
            {"depth": 2, "act": "relu"},
            None,
            f"model.kwargs: unknown option(s) act, depth for model '{MOD}:TinyNet'; allowed: hidden",
        ),
        (
            f"{MOD}:tokens",
            {"x": 1},
            None,
            f"model.kwargs: unknown option(s) x for model '{MOD}:tokens'; allowed: (none)",
        ),
        (
            f"{MOD}:TinyNet",
            {"num_classes": 3},
            None,
            "model.kwargs: num_classes come(s) from the dataset and cannot be set",
        ),
        (
            f"{MOD}:anything",
            {"input_shape": [3]},
            None,
            "model.kwargs: input_shape come(s) from the dataset and cannot be set",
        ),
        (
            f"{MOD}:tokens",
            {},
            None,
            f"model '{MOD}:tokens' needs token inputs (a dataset that provides vocab_size), got inputs of shape (6,)",
        ),
        (
            "torch.nn:Linear",
            {},
            None,
            "model 'torch.nn:Linear' needs model.kwargs: in_features, out_features (parameters without a default)",
        ),
        (f"{MOD}:not_a_module", {}, None, f"model '{MOD}:not_a_module' returns list, not a torch.nn.Module"),
        (f"{MOD}:fails_to_build", {}, None, f"model '{MOD}:fails_to_build' fails to build (KeyError: 'weights.pt')"),
        (f"{MOD}:TinyNet", {"hidden": "wide"}, None, f"model.kwargs: bad option value for model '{MOD}:TinyNet'"),
        ("nosuch", {}, None, "unknown model 'nosuch'"),
    ],
)
def test_build_errors(user, name, kwargs, data_args, message):
    with pytest.raises(SpecError) as e:
        build_model(name, (6,), 3, data_args, **kwargs)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- output check


def test_check_model_output_accepts_good_models_and_restores_modes(user):
    m = build_model(f"{MOD}:TinyNet", (2, 3), 10)
    m.train()
    m.head.eval()  # a mixed state is restored module by module
    seen = {}

    def hook(module, inputs, output):
        seen["training"] = module.training
        seen["grad"] = torch.is_grad_enabled()
        seen["input"] = inputs[0].clone()

    handle = m.body.register_forward_hook(hook)
    check_model_output(m, (2, 3), 10)
    handle.remove()
    assert seen["training"] is False and seen["grad"] is False
    assert seen["input"].shape == (2, 2, 3) and seen["input"].dtype == torch.float32
    assert not seen["input"].any()
    assert m.training and m.body.training and not m.head.training
    tok = build_model(f"{MOD}:tokens", (6,), 3, {"vocab_size": 5, "pad_id": 0})
    check_model_output(tok, (6,), 3, torch.int64, vocab_size=5)


def test_check_model_output_errors(user):
    five = build_model(f"{MOD}:FixedFive", (3,), 10)
    with pytest.raises(SpecError) as e:
        check_model_output(five, (3,), 10, name=f"{MOD}:FixedFive")
    assert str(e.value).startswith(
        f"model '{MOD}:FixedFive' returns logits of shape (2, 5) but the dataset has 10 classes"
    )
    with pytest.raises(SpecError, match=r"^model 'FixedFive' returns logits of shape \(2, 5\)"):
        check_model_output(five, (3,), 4)
    with pytest.raises(SpecError) as e:
        check_model_output(user.Broken(), (3,), 2, name="b")
    assert str(e.value) == "model 'b' fails on a batch of shape (2, 3) (RuntimeError: boom)"
    with pytest.raises(SpecError, match=r"^model 'TupleOut' returns tuple, not a tensor of logits$"):
        check_model_output(user.TupleOut(), (3,), 2)
    # float inputs into an embedding: the forward fails, the error names the model
    tok = build_model(f"{MOD}:tokens", (6,), 3, {"vocab_size": 5, "pad_id": 0})
    with pytest.raises(SpecError, match=r"^model 'Sequential' fails on a batch of shape \(2, 6\) \(RuntimeError"):
        check_model_output(tok, (6,), 3)
    int_out = nn.Sequential(nn.Flatten())
    with pytest.raises(SpecError, match="dtype torch.int64, not floating point"):
        check_model_output(int_out, (2,), 2, torch.int64)


# --------------------------------------------------------------------------- layers


def test_resolve_module_known_and_unknown(user):
    m = build_model("mlp", (4,), 3, hidden=[5, 6])
    assert resolve_module(m, "features.2") is m.features[2]
    assert resolve_module(m, "head") is m.head
    with pytest.raises(SpecError) as e:
        resolve_module(m, "features.9")
    assert str(e.value) == (
        "layer 'features.9' is not a module of MLP; its feature layers: features.2, features.4; "
        "modules: features, features.0, features.1, features.2, features.3, features.4, head"
    )
    with pytest.raises(SpecError, match=r"^layer '' is not a module"):
        resolve_module(m, "")
    deep = nn.Sequential(*[nn.Linear(2, 2) for _ in range(12)])
    with pytest.raises(SpecError) as e:
        resolve_module(deep, "x")
    assert str(e.value) == "layer 'x' is not a module of Sequential; modules: 0, 1, 2, 3, 4, 5, 6, 7, ... (12 in all)"
    with pytest.raises(SpecError, match=r"modules: \(none\)$"):
        resolve_module(nn.ReLU(), "x")


def test_model_param_count_counts_shared_weights_once():
    lin = nn.Linear(3, 4)
    assert model_param_count(nn.Sequential(lin, nn.ReLU(), lin)) == 16
    assert model_param_count(nn.ReLU()) == 0


# --------------------------------------------------------------------------- MLP width


def mlp_params(d: int, hidden: list[int], k: int, width: float) -> int:
    n, prev = 0, d
    for h in hidden:
        w = max(1, round(h * width))
        n += prev * w + w
        prev = w
    return n + prev * k + k


@pytest.mark.parametrize(
    "hidden, width",
    [([256], 1.0), ([256, 128], 0.5), ([100, 30], 0.25), ([5, 7], 0.5), ([64], 0.001), ([10, 20], 2.5)],
)
def test_mlp_width_parameter_count(hidden, width):
    m = build_model("mlp", (1, 8, 8), 10, hidden=hidden, width=width)
    assert model_param_count(m) == mlp_params(64, hidden, 10, width)
    assert len(feature_layers(m)) == len(hidden)


def test_mlp_width_hand_values():
    m = build_model("mlp", (8,), 3, hidden=[10, 20], width=0.5)
    assert [layer.out_features for layer in m.features if isinstance(layer, nn.Linear)] == [5, 10]
    assert model_param_count(m) == (8 * 5 + 5) + (5 * 10 + 10) + (10 * 3 + 3)
    assert model_param_count(build_model("mlp", (8,), 3)) == model_param_count(build_model("mlp", (8,), 3, width=1))


@pytest.mark.parametrize("width", [0, -1.0, math.nan, math.inf, True, "0.5", None])
def test_mlp_width_must_be_positive(width):
    with pytest.raises(SpecError, match=r"^model.kwargs.width: must be a positive number"):
        build_model("mlp", (8,), 3, width=width)


# --------------------------------------------------------------------------- npz


def write_split_layout(folder, x_train, y_train, x_test, y_test):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "train.npz", x=x_train, y=y_train)
    np.savez_compressed(folder / "test.npz", x=x_test, y=y_test)
    return folder


def sample_arrays(seed=1, n_train=60, n_test=20, k=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x_train = rng.normal(5.0, 3.0, (n_train, 4)).astype(dtype)
    x_test = rng.normal(5.0, 3.0, (n_test, 4)).astype(dtype)
    return x_train, np.arange(n_train) % k, x_test, np.arange(n_test) % k


def test_npz_is_registered():
    assert "npz" in DATASETS


@pytest.mark.parametrize("layout", ["split", "single"])
def test_npz_round_trip_both_layouts(tmp_path, layout):
    x_train, y_train, x_test, y_test = sample_arrays()
    if layout == "split":
        write_split_layout(tmp_path, x_train, y_train, x_test, y_test)
        sources = [str(tmp_path / "train.npz"), str(tmp_path / "test.npz")]
    else:
        np.savez(tmp_path / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        sources = [str(tmp_path / "data.npz")]
    b = load_dataset("npz", data_dir=str(tmp_path), train_subset=None, test_subset=None, subset_seed=0)
    ref_train, ref_test = standardised(x_train, x_test)
    assert b.x_train.dtype == torch.float32 and b.y_train.dtype == torch.int64
    assert np.allclose(b.x_train.numpy(), ref_train, atol=1e-5)
    assert np.allclose(b.x_test.numpy(), ref_test, atol=1e-5)
    assert b.y_train.tolist() == y_train.tolist() and b.y_test.tolist() == y_test.tolist()
    assert b.num_classes == 3 and b.input_shape == (4,)
    assert b.info["source"] == sources and b.info["modality"] is None
    assert b.info["normalization"]["mean"] == pytest.approx(x_train.astype(np.float32).mean(), rel=1e-5)
    raw = load_dataset("npz", data_dir=str(tmp_path), normalize=False)
    assert np.array_equal(raw.x_train.numpy(), x_train.astype(np.float32))
    assert "normalization" not in raw.info


def test_npz_subset_is_stratified_and_standardised_on_the_subset(tmp_path):
    x_train, y_train, x_test, y_test = sample_arrays(n_train=60, n_test=30)
    write_split_layout(tmp_path, x_train, y_train, x_test, y_test)
    b = load_dataset("npz", data_dir=str(tmp_path), train_subset=30, test_subset=12, subset_seed=4)
    assert len(b.x_train) == 30 and len(b.x_test) == 12
    assert np.bincount(b.y_train.numpy()).tolist() == [10, 10, 10]
    assert np.bincount(b.y_test.numpy()).tolist() == [4, 4, 4]
    # undo the standardisation and find each row among the originals
    norm = b.info["normalization"]
    rows = {r.astype(np.float32).tobytes(): i for i, r in enumerate(x_train)}
    back = b.x_train.numpy().astype(np.float64) * norm["std"] + norm["mean"]
    picked = [rows[min(rows, key=lambda k: np.abs(np.frombuffer(k, np.float32) - r).max())] for r in back]
    assert len(set(picked)) == 30 and picked == sorted(picked)
    assert [int(y_train[i]) for i in picked] == b.y_train.tolist()
    ref, _ = standardised(x_train[picked], x_test)
    assert np.allclose(b.x_train.numpy(), ref, atol=1e-5)
    again = load_dataset("npz", data_dir=str(tmp_path), train_subset=30, test_subset=12, subset_seed=4)
    other = load_dataset("npz", data_dir=str(tmp_path), train_subset=30, test_subset=12, subset_seed=5)
    assert again.fingerprint() == b.fingerprint() != other.fingerprint()


def test_npz_num_classes_and_integer_inputs(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 1, 4, 4)).astype(np.uint8)
    x_test = rng.integers(0, 256, (8, 1, 4, 4)).astype(np.uint8)
    y_train, y_test = np.arange(20) % 3, np.array([0, 1, 2, 4, 0, 1, 2, 4])
    write_split_layout(tmp_path, x_train, y_train, x_test, y_test)
    b = load_dataset("npz", data_dir=str(tmp_path))
    assert b.num_classes == 5  # the largest label over both splits + 1
    assert b.x_train.dtype == torch.float32 and b.input_shape == (1, 4, 4)  # uint8 pixels are cast
    ref_train, ref_test = standardised(x_train, x_test)
    assert np.allclose(b.x_test.numpy(), ref_test, atol=1e-5)
    assert load_dataset("npz", data_dir=str(tmp_path), num_classes=7).num_classes == 7
    with pytest.raises(InputError, match=r"^dataset 'npz': test labels must lie in \[0, 4\), found 0..4$"):
        load_dataset("npz", data_dir=str(tmp_path), num_classes=4)


def test_npz_errors(tmp_path):
    layout = (
        "expected train.npz and test.npz with arrays x, y, or data.npz with arrays x_train, y_train, x_test, y_test"
    )
    x_train, y_train, x_test, y_test = sample_arrays()

    def err(folder, **options):
        with pytest.raises((InputError, SpecError)) as e:
            load_dataset("npz", **({"data_dir": str(folder)} if folder else {}), **options)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert err(None) == f"npz: set data.data_dir to the folder with the arrays; {layout}"
    assert err(tmp_path / "nope") == f"npz: data.data_dir {tmp_path / 'nope'} is not a folder; {layout}"
    (tmp_path / "empty").mkdir()
    assert (
        err(tmp_path / "empty") == f"npz: {tmp_path / 'empty'} holds neither train.npz/test.npz nor data.npz; {layout}"
    )
    half = tmp_path / "half"
    half.mkdir()
    np.savez(half / "train.npz", x=x_train, y=y_train)
    assert err(half) == f"npz: {half / 'test.npz'} does not exist; {layout}"
    np.savez(half / "test.npz", x=x_test, labels=y_test)
    assert err(half) == f"npz: {half / 'test.npz'} has no array y (it has: x, labels); {layout}"
    single = tmp_path / "single"
    single.mkdir()
    np.savez(single / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test)
    assert err(single) == f"npz: {single / 'data.npz'} has no array y_test (it has: x_train, y_train, x_test); {layout}"
    both = write_split_layout(tmp_path / "both", x_train, y_train, x_test, y_test)
    np.savez(both / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    assert err(both) == f"npz: {both} holds both train.npz/test.npz and data.npz; keep one layout"
    garbage = write_split_layout(tmp_path / "garbage", x_train, y_train, x_test, y_test)
    (garbage / "test.npz").write_bytes(b"not a zip at all")
    assert err(garbage).startswith(f"npz: cannot read {garbage / 'test.npz'} (")
    plain = write_split_layout(tmp_path / "plain", x_train, y_train, x_test, y_test)
    with open(plain / "train.npz", "wb") as f:
        np.save(f, x_train)
    assert err(plain) == f"npz: {plain / 'train.npz'} holds a single .npy array, not an .npz archive; {layout}"
    pickled = write_split_layout(tmp_path / "pickled", x_train, y_train, x_test, y_test)
    np.savez(pickled / "test.npz", x=np.array([{"a": 1}] * 20, dtype=object), y=y_test)
    assert err(pickled).startswith(f"npz: cannot read {pickled / 'test.npz'} (")
    ok = write_split_layout(tmp_path / "ok", x_train, y_train, x_test, y_test)
    assert err(ok, num_classes="3") == "data.options.num_classes: must be a positive integer, got '3'"
    assert err(ok, num_classes=0) == "data.options.num_classes: must be a positive integer, got 0"
    assert err(ok, normalize="yes") == "data.options.normalize: must be true or false, got 'yes'"
    assert err(ok, flatten=True).startswith("dataset 'npz' has no option flatten; its options: data_dir, num_classes")
    float_y = write_split_layout(tmp_path / "float_y", x_train, y_train.astype(float), x_test, y_test)
    assert (
        err(float_y)
        == "dataset 'npz': y_train must be a 1-D array of integer class ids, got dtype float64 and shape (60,)"
    )


# --------------------------------------------------------------------------- import-path datasets


@pytest.mark.parametrize("loader", ["as_tuple", "as_dict", "as_tensors"])
def test_import_path_dataset_returns_arrays(user, loader):
    b = load_dataset(f"{MOD}:{loader}", train_subset=None, test_subset=None, subset_seed=0)
    x_train, y_train, x_test, y_test = user.arrays()
    ref_train, ref_test = standardised(x_train, x_test)
    assert b.name == f"{MOD}:{loader}" and b.num_classes == 4 and b.input_shape == (2, 3)
    assert np.allclose(b.x_train.numpy(), ref_train, atol=1e-5)
    assert np.allclose(b.x_test.numpy(), ref_test, atol=1e-5)
    assert b.y_test.tolist() == y_test.tolist()
    assert b.info["source"] == f"{MOD}:{loader}" and b.info["modality"] is None


def test_import_path_dataset_options_subsets_and_normalize(user):
    a = load_dataset(
        f"{MOD}:as_dict", seed=3, num_classes=6, train_subset=20, test_subset=8, subset_seed=1, normalize=False
    )
    x_train, y_train, _, _ = user.arrays(seed=3)
    assert a.num_classes == 6 and len(a.x_train) == 20 and len(a.x_test) == 8
    assert np.bincount(a.y_train.numpy()).tolist() == [5, 5, 5, 5]
    rows = [next(i for i in range(len(x_train)) if np.allclose(x_train[i], r)) for r in a.x_train.numpy()]
    assert a.y_train.tolist() == [int(y_train[i]) for i in rows]
    assert "normalization" not in a.info
    user.CALLS.clear()
    load_dataset(f"{MOD}:with_dir", data_dir="/some/where")
    assert user.CALLS == [{"data_dir": "/some/where"}]


def test_import_path_dataset_returns_a_bundle(user):
    b = load_dataset(f"{MOD}:as_bundle", train_subset=20, test_subset=None, subset_seed=0)
    ref = user.as_bundle()
    assert b.x_train.dtype == torch.int64  # token ids stay ids; a bundle is not standardised
    assert len(b.x_train) == 20 and np.bincount(b.y_train.numpy()).tolist() == [5, 5, 5, 5]
    assert torch.equal(b.x_test, ref.x_test) and torch.equal(b.y_test, ref.y_test)
    assert b.model_args() == {"vocab_size": 9, "pad_id": 0}
    assert b.info["modality"] == "text" and b.info["n_train"] == 20 and "normalization" not in b.info
    full = load_dataset(f"{MOD}:as_bundle")
    assert torch.equal(full.x_train, ref.x_train)


@pytest.mark.parametrize(
    "kind, message",
    [
        (
            "list",
            "must return a DataBundle, a tuple (x_train, y_train, x_test, y_test) or a dict with those keys; got list",
        ),
        (
            "three",
            "must return a DataBundle, a tuple (x_train, y_train, x_test, y_test) or a dict with those keys; "
            "got a tuple of 3",
        ),
        (
            "none",
            "must return a DataBundle, a tuple (x_train, y_train, x_test, y_test) or a dict with those keys; "
            "got NoneType",
        ),
        (
            "dict-missing",
            ": the returned dict lacks y_test; keys: x_train, y_train, x_test, y_test and optionally num_classes",
        ),
        (
            "dict-extra",
            ": the returned dict has unknown key(s) classes; "
            "keys: x_train, y_train, x_test, y_test and optionally num_classes",
        ),
        ("float-labels", ": y_train must be a 1-D array of integer class ids, got dtype float32 and shape (40,)"),
        ("2d-labels", ": y_train must be a 1-D array of integer class ids, got dtype int64 and shape (40, 1)"),
        ("nan", ": x_test holds 2 non-finite values (NaN or inf)"),
        ("shapes", ": train inputs have shape (2, 3) per sample but test inputs (2, 2)"),
        ("lengths", ": train split has 40 inputs but 39 labels"),
        ("python-list", ": x_train must be a torch tensor or a numpy array, got list"),
        ("strings", ": x_train must hold real numbers, got dtype <U"),
        ("1d-inputs", ": x_train must have shape (N, features...), got (40,)"),
        ("negative-label", r": train labels must lie in [0, 4), found -1..3"),
        ("empty-test", ": the test split is empty"),
        ("bad-num-classes", ": num_classes must be a positive integer, got 2.5"),
        ("bundle-float-labels", ": y_train must be a 1-D array of integer class ids, got dtype float32"),
    ],
)
def test_import_path_dataset_bad_returns(user, kind, message):
    with pytest.raises(InputError) as e:
        load_dataset(f"{MOD}:bad", kind=kind, train_subset=None, test_subset=None, subset_seed=0)
    text = str(e.value)
    assert text.startswith(f"dataset '{MOD}:bad'") and message in text and "\n" not in text


@pytest.mark.parametrize(
    "name, options, error, message",
    [
        (
            f"{MOD}:as_tuple",
            {"flatten": True},
            SpecError,
            f"dataset '{MOD}:as_tuple' has no option flatten; its options: seed, normalize",
        ),
        (
            f"{MOD}:as_tuple",
            {"data_dir": "/x"},
            SpecError,
            f"dataset '{MOD}:as_tuple' has no option data_dir; its options: seed, normalize",
        ),
        (f"{MOD}:needs", {}, SpecError, f"dataset '{MOD}:needs' needs option(s) required (data.options)"),
        (f"{MOD}:raises", {}, InputError, f"dataset '{MOD}:raises' fails to load (OSError: disk gone)"),
        (f"{MOD}:as_tuple", {"normalize": 1}, SpecError, "data.options.normalize: must be true or false, got 1"),
        (f"{MOD}:NOT_CALLABLE", {}, SpecError, f"data.name '{MOD}:NOT_CALLABLE': '{MOD}:NOT_CALLABLE' is not callable"),
        (f"{MOD}:missing", {}, SpecError, f"data.name '{MOD}:missing': module '{MOD}' has no attribute 'missing'"),
        (
            "nosuchpkg.data:load",
            {},
            SpecError,
            "data.name 'nosuchpkg.data:load': cannot import module 'nosuchpkg.data' (No module named 'nosuchpkg')",
        ),
        ("nosuch", {}, SpecError, "unknown dataset 'nosuch'"),
    ],
)
def test_import_path_dataset_errors(user, name, options, error, message):
    with pytest.raises(error) as e:
        load_dataset(name, **options)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)
