"""Image architectures: shapes, gradients, parameter counts against independent formulas,
feature-layer hooks and bad options."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import n_params
from kdaudit.errors import SpecError
from kdaudit.models import build_model, feature_layers

N = 4
SMALL = {
    "lenet5": {"width": 0.5},
    "resnet18": {"width": 0.125, "blocks": [1, 1, 1, 1]},
    "vgg16-bn": {"width": 0.0625},
    "mobilenetv2": {"width": 0.25, "depth": 0.5},
    "vit": {"dim": 16, "depth": 2, "heads": 2, "patch": 4},
}
SHAPES = [(1, 28, 28), (3, 32, 32)]


def build(name: str, shape: tuple[int, ...], classes: int = 10, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, shape, classes, **{**SMALL[name], **kw})


# --------------------------------------------------------------------------- forward/backward


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(SMALL))
def test_forward_backward_eval(name, shape):
    model = build(name, shape, classes=7)
    x = torch.randn(N, *shape, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 3, 6, 2])
    out = model(x)
    assert out.shape == (N, 7)
    nn.functional.cross_entropy(out, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0

    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
        part = model(x[:2])
    assert torch.equal(a, b)
    # eval mode uses running statistics: a row's output does not depend on the batch
    torch.testing.assert_close(part, a[:2], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(SMALL))
def test_weights_come_from_global_rng(name):
    m1, m2, m3 = (build(name, (1, 28, 28), seed=s) for s in (5, 5, 6))
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)


@pytest.mark.parametrize(
    "name, shape",
    [
        *((n, s) for n in ("lenet5", "resnet18", "vgg16-bn", "mobilenetv2") for s in ((1, 8, 8), (2, 8, 13))),
        ("lenet5", (1, 20, 31)),  # second conv unpadded on one side, padded on the other
        ("vit", (2, 8, 12)),
    ],
)
def test_small_and_odd_inputs(name, shape):
    model = build(name, shape, classes=3)
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 3)


# --------------------------------------------------------------------------- parameter counts


def resnet_count(c_in: int, channels: list[int], blocks: list[int], k: int) -> int:
    total = c_in * channels[0] * 9 + 2 * channels[0]  # stem conv (no bias) + BN
    cin = channels[0]
    for i, (c, n) in enumerate(zip(channels, blocks)):
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            total += cin * c * 9 + 2 * c + c * c * 9 + 2 * c
            if stride != 1 or cin != c:
                total += cin * c + 2 * c  # 1×1 projection + BN
            cin = c
    return total + cin * k + k


def test_resnet18_param_count():
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 32, 32), 10)
    assert n_params(model) == 11_173_962  # the standard CIFAR ResNet-18
    assert resnet_count(3, [64, 128, 256, 512], [2, 2, 2, 2], 10) == 11_173_962
    half = build_model("resnet18", (3, 32, 32), 10, width=0.5)
    assert n_params(half) == resnet_count(3, [32, 64, 128, 256], [2, 2, 2, 2], 10)
    assert abs(n_params(half) / 11_173_962 - 0.25) < 0.01
    r10 = build_model("resnet18", (1, 28, 28), 10, width=0.25, blocks=[1, 1, 1, 1])
    assert n_params(r10) == resnet_count(1, [16, 32, 64, 128], [1, 1, 1, 1], 10)


VGG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg_count(cfg: list, c_in: int, width: float, k: int) -> int:
    total, cin = 0, c_in
    for v in cfg:
        if v == "M":
            continue
        c = max(4, round(v * width))
        total += cin * c * 9 + c + 2 * c  # conv weight + bias, BN weight + bias
        cin = c
    return total + cin * k + k


def test_vgg_param_count():
    model = build_model("vgg16-bn", (3, 32, 32), 10)
    assert n_params(model) == 14_728_266
    assert vgg_count(VGG[16], 3, 1.0, 10) == 14_714_688 + 8_448 + 5_130  # conv, BN, head
    assert vgg_count(VGG[16], 3, 1.0, 10) == 14_728_266
    for depth, width, shape in [(16, 0.25, (1, 28, 28)), (11, 1.0, (3, 32, 32)), (11, 0.125, (1, 8, 8))]:
        m = build_model("vgg16-bn", shape, 10, width=width, depth=depth)
        assert n_params(m) == vgg_count(VGG[depth], shape[0], width, 10), (depth, width)


def test_vgg_skips_pools_at_size_one():
    def pools(shape):
        m = build_model("vgg16-bn", shape, 10, width=0.0625)
        return [type(mod).__name__ for mod in m.modules() if isinstance(mod, nn.MaxPool2d)]

    assert len(pools((3, 32, 32))) == 5
    assert len(pools((1, 28, 28))) == 4  # 28 → 14 → 7 → 3 → 1
    assert len(pools((1, 8, 8))) == 3


MBV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def div8(v: float) -> int:
    new = max(8, int(v + 4) // 8 * 8)
    return new + 8 if new < 0.9 * v else new


def mobilenetv2_count(c_in: int, width: float, depth: float, k: int) -> int:
    """Paper/torchvision MobileNetV2: no expansion conv when t = 1; BN after every conv;
    strides do not change the count. (kuangliu's CIFAR port differs: it keeps the 1×1
    expansion at t = 1 and adds projection shortcuts, 2,296,922 parameters.)"""
    cin = div8(32 * width)
    total = c_in * cin * 9 + 2 * cin
    for t, c, n, _ in MBV2:
        cout = div8(c * width)
        for _ in range(math.ceil(n * depth)):
            hid = cin * t
            if t != 1:
                total += cin * hid + 2 * hid
            total += hid * 9 + 2 * hid + hid * cout + 2 * cout
            cin = cout
    last = div8(1280 * max(1.0, width))
    return total + cin * last + 2 * last + last * k + k


def test_mobilenetv2_param_count():
    model = build_model("mobilenetv2", (3, 32, 32), 10)
    assert n_params(model) == 2_236_682
    assert mobilenetv2_count(3, 1.0, 1.0, 10) == 2_236_682
    for width, depth in [(0.25, 0.5), (0.5, 1.0), (1.4, 1.0), (0.75, 0.34)]:
        m = build_model("mobilenetv2", (1, 28, 28), 10, width=width, depth=depth)
        assert n_params(m) == mobilenetv2_count(1, width, depth, 10), (width, depth)


def test_mobilenetv2_residuals_and_strides():
    full = build_model("mobilenetv2", (3, 32, 32), 10)
    blocks = [mod for mod in full.modules() if type(mod).__name__ == "InvertedResidual"]
    assert sum(b.use_residual for b in blocks) == 10  # the paper's: repeats minus one per stage
    m = build_model("mobilenetv2", (3, 32, 32), 10, width=0.25)
    blocks = [mod for mod in m.modules() if type(mod).__name__ == "InvertedResidual"]
    # at width 0.25 the stem and first two stages all round to 8 channels: two more residuals
    assert sum(b.use_residual for b in blocks) == 12
    feats = {}
    for name in feature_layers(m):
        m.get_submodule(name).register_forward_hook(lambda _m, _i, o, name=name: feats.setdefault(name, o))
    with torch.no_grad():
        m(torch.randn(2, 3, 16, 16))
    sizes = [feats[f"features.{i}"].shape[-1] for i in range(1, 9)]
    assert sizes == [16, 16, 8, 4, 4, 2, 2, 2]  # CIFAR strides: stem and second stage at 1


def lenet_count(c_in: int, k: int) -> int:
    return (c_in * 25 * 6 + 6) + (6 * 25 * 16 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * k + k)


def test_lenet5_param_count():
    m32 = build_model("lenet5", (1, 32, 32), 10)
    m28 = build_model("lenet5", (1, 28, 28), 10)
    assert n_params(m32) == lenet_count(1, 10) == 61_706
    assert n_params(m28) == 61_706
    assert m32.features[0].padding == (0, 0) and m28.features[0].padding == (2, 2)
    wide = build_model("lenet5", (3, 32, 32), 10, width=2.0)
    c1, c2, f1, f2 = 12, 32, 240, 168
    expected = (3 * 25 * c1 + c1) + (c1 * 25 * c2 + c2) + (c2 * 25 * f1 + f1) + (f1 * f2 + f2) + (f2 * 10 + 10)
    assert n_params(wide) == expected
    tanh = build_model("lenet5", (1, 28, 28), 10, activation="tanh", pool="avg")
    assert any(isinstance(mod, nn.Tanh) for mod in tanh.modules())
    assert any(isinstance(mod, nn.AvgPool2d) for mod in tanh.modules())
    assert not any(isinstance(mod, (nn.ReLU, nn.MaxPool2d)) for mod in tanh.modules())


def vit_count(c: int, h: int, w: int, k: int, patch=4, dim=64, depth=4, mlp_ratio=2.0) -> int:
    tokens = (h // patch) * (w // patch)
    hid = round(dim * mlp_ratio)
    block = 2 * (2 * dim) + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (dim * hid + hid) + (hid * dim + dim)
    embed = c * patch * patch * dim + dim + dim + (tokens + 1) * dim
    return embed + depth * block + 2 * dim + dim * k + k


def test_vit_param_count():
    assert n_params(build_model("vit", (3, 32, 32), 10)) == vit_count(3, 32, 32, 10)
    m = build_model("vit", (1, 28, 28), 10, patch=7, dim=48, depth=2, heads=6, mlp_ratio=3.0)
    assert n_params(m) == vit_count(1, 28, 28, 10, patch=7, dim=48, depth=2, mlp_ratio=3.0)


def test_vit_attention_matches_torch_multihead():
    torch.manual_seed(0)
    model = build_model("vit", (1, 8, 8), 3, dim=16, heads=4, depth=1)
    attn = model.blocks[0].attn
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.qkv.weight)
        ref.in_proj_bias.copy_(attn.qkv.bias)
        ref.out_proj.weight.copy_(attn.proj.weight)
        ref.out_proj.bias.copy_(attn.proj.bias)
    x = torch.randn(3, 5, 16)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- feature layers


@pytest.mark.parametrize("name", list(SMALL))
def test_feature_layers_hooks(name):
    shape = (1, 28, 28)
    model = build(name, shape).eval()
    layers = feature_layers(model)
    assert len(layers) >= 2
    modules = dict(model.named_modules())
    assert all(layer in modules for layer in layers)
    seen: list[tuple[str, torch.Tensor]] = []
    for layer in layers:
        modules[layer].register_forward_hook(lambda _m, _i, out, layer=layer: seen.append((layer, out)))
    x = torch.randn(N, *shape)
    with torch.no_grad():
        logits = model(x)
        assert [s[0] for s in seen] == list(layers)
        assert all(out.shape[0] == N for _, out in seen)
        last = seen[-1][1]
        assert last.dim() == 2
        torch.testing.assert_close(model.head(last), logits, rtol=1e-5, atol=1e-6)


def test_feature_layer_shapes():
    x = torch.randn(N, 1, 28, 28)

    def shapes(model):
        out = []
        for layer in feature_layers(model):
            model.get_submodule(layer).register_forward_hook(lambda _m, _i, o: out.append(tuple(o.shape)))
        with torch.no_grad():
            model(x)
        return out

    assert shapes(build("resnet18", (1, 28, 28))) == [
        (N, 8, 28, 28),
        (N, 16, 14, 14),
        (N, 32, 7, 7),
        (N, 64, 4, 4),
        (N, 64),
    ]
    assert shapes(build("vgg16-bn", (1, 28, 28))) == [
        (N, 4, 14, 14),
        (N, 8, 7, 7),
        (N, 16, 3, 3),
        (N, 32, 1, 1),
        (N, 32, 1, 1),
        (N, 32),
    ]
    assert shapes(build("lenet5", (1, 28, 28))) == [(N, 3, 14, 14), (N, 8, 5, 5), (N, 60), (N, 42)]
    assert shapes(build("vit", (1, 28, 28), patch=7)) == [(N, 17, 16), (N, 17, 16), (N, 16)]


def test_dropout_knobs_act_in_train_mode_only():
    for name, kw in [("mobilenetv2", {"dropout": 0.5}), ("vit", {"dropout": 0.5})]:
        model = build(name, (1, 8, 8), **kw)
        x = torch.randn(N, 1, 8, 8)
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        assert not torch.allclose(a, model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    "name, shape, kw, match",
    [
        ("lenet5", (1, 28, 28), {"width": -1.0}, "width"),
        ("resnet18", (1, 28, 28), {"width": -0.5}, "width"),
        ("vgg16-bn", (1, 28, 28), {"width": 0}, "width"),
        ("mobilenetv2", (1, 28, 28), {"width": -1}, "width"),
        ("mobilenetv2", (1, 28, 28), {"depth": 0.0}, "depth"),
        ("mobilenetv2", (1, 28, 28), {"dropout": 1.0}, "dropout"),
        ("resnet18", (1, 28, 28), {"blocks": [2, 2, 2]}, "blocks"),
        ("resnet18", (1, 28, 28), {"blocks": [2, 0, 2, 2]}, "blocks"),
        ("vgg16-bn", (1, 28, 28), {"depth": 15}, "depth"),
        ("lenet5", (1, 28, 28), {"activation": "sigmoid"}, "activation"),
        ("lenet5", (1, 28, 28), {"pool": "median"}, "pool"),
        ("lenet5", (1, 6, 28), {}, "H, W >= 8"),
        ("vit", (1, 28, 28), {"dim": 30, "heads": 4}, "divisible by heads"),
        ("vit", (1, 28, 28), {"patch": 5}, "must divide"),
        ("vit", (1, 28, 28), {"patch": 0}, "patch"),
        ("vit", (1, 28, 28), {"depth": 2.5}, "depth"),
        ("vit", (1, 28, 28), {"mlp_ratio": -2.0}, "mlp_ratio"),
        ("lenet5", (784,), {}, "C×H×W"),
        ("resnet18", (784,), {}, "C×H×W"),
        ("vgg16-bn", (28, 28), {}, "C×H×W"),
        ("mobilenetv2", (784,), {}, "C×H×W"),
        ("vit", (784,), {}, "C×H×W"),
        ("resnet18", (1, 28, 28), {"width": "wide"}, "width"),
    ],
)
def test_bad_options(name, shape, kw, match):
    with pytest.raises(SpecError, match=match) as err:
        build_model(name, shape, 10, **kw)
    assert "\n" not in str(err.value)


def test_unknown_option_names_allowed_ones():
    with pytest.raises(SpecError, match="allowed: width, blocks"):
        build_model("resnet18", (3, 32, 32), 10, depth=18)
