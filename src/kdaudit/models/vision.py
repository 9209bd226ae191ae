"""Image architectures: LeNet-5, CIFAR-style ResNet-18, VGG-BN and MobileNetV2 (a small ViT: :mod:`.vit`).

All take ``N×C×H×W`` float inputs with any channel count (1×28×28 Fashion-MNIST, 3×32×32
CIFAR, 1×32×32 log-mel spectrograms) and have width/depth knobs so that CPU presets stay
small. Weights are drawn from the global torch RNG only (the caller seeds it).

Every model exposes ``head`` (the final ``nn.Linear``) and ``feature_layers``: module names
of its main blocks from input to output, the last one being the penultimate representation
(an ``N×D`` tensor) such that ``head(feature) == model(x)`` in eval mode.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from ..errors import SpecError
from .base import MODELS
from .checks import dropout_rate, image_dims, one_of, positive_float

# --------------------------------------------------------------------------- validation


def _scaled(channels: int, width: float, minimum: int) -> int:
    """``channels × width`` rounded, at least ``minimum`` (tiny widths stay usable)."""
    return max(minimum, int(round(channels * width)))


class PoolFlatten(nn.Module):
    """Global average pooling to an ``N×C`` tensor: the penultimate feature of conv nets."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


# --------------------------------------------------------------------------- LeNet-5


class LeNet5(nn.Module):
    """LeNet-5: conv 6@5×5, pool, conv 16@5×5, pool, fc 120, fc 84, fc classes.

    The first conv pads by 2 along a side shorter than 32 (so 28×28 yields the classic 5×5
    map before the fc layers); the second conv pads by 2 when its input is under 10 pixels
    (inputs below 20, e.g. 8×8), so every H, W >= 8 leaves a non-empty map.
    """

    def __init__(
        self,
        in_channels: int,
        spatial: tuple[int, int],
        num_classes: int,
        width: float,
        activation: str,
        pool: str,
    ) -> None:
        super().__init__()
        c1, c2 = _scaled(6, width, 1), _scaled(16, width, 1)
        f1, f2 = _scaled(120, width, 1), _scaled(84, width, 1)
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        pool_cls = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pool]
        pad1 = cast(tuple[int, int], tuple(2 if s < 32 else 0 for s in spatial))
        after1 = tuple((s + 2 * p - 4) // 2 for s, p in zip(spatial, pad1, strict=True))
        pad2 = cast(tuple[int, int], tuple(2 if s < 10 else 0 for s in after1))
        after2 = tuple((s + 2 * p - 4) // 2 for s, p in zip(after1, pad2, strict=True))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=pad1),
            act(),
            pool_cls(2),
            nn.Conv2d(c1, c2, 5, padding=pad2),
            act(),
            pool_cls(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Linear(c2 * after2[0] * after2[1], f1), act(), nn.Linear(f1, f2), act())
        self.head = nn.Linear(f2, num_classes)
        self.feature_layers = ("features.2", "features.5", "classifier.1", "classifier.3")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.classifier(self.features(x)))


@MODELS.register("lenet5")
def lenet5(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    activation: str = "relu",
    pool: str = "max",
) -> nn.Module:
    """LeNet-5 (61,706 parameters at width 1 on 1×32×32 with 10 classes)."""
    c, h, w = image_dims("lenet5", input_shape, min_size=8)
    width = positive_float("width", width)
    one_of("activation", activation, ("relu", "tanh"))
    one_of("pool", pool, ("max", "avg"))
    return LeNet5(c, (h, w), num_classes, width, activation, pool)


# --------------------------------------------------------------------------- ResNet-18


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity or 1×1 conv-BN shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3×3 stride-1 stem without max-pool, four BasicBlock stages."""

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, in_channels: int, num_classes: int, channels: list[int], blocks: list[int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(),
        )
        cin = channels[0]
        for i, (cout, n) in enumerate(zip(channels, blocks, strict=False)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(BasicBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
        self.pool = PoolFlatten()
        self.head = nn.Linear(cin, num_classes)
        self.feature_layers = ("layer1", "layer2", "layer3", "layer4", "pool")
        for m in self.modules():  # as torchvision's ResNet
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(self.pool(x))


@MODELS.register("resnet18")
def resnet18(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    blocks: list[int] | tuple[int, ...] = (2, 2, 2, 2),
) -> nn.Module:
    """ResNet-18 for small images; ``width`` scales the 64/128/256/512 stage channels
    (each at least 4), ``blocks`` sets the BasicBlocks per stage ([1, 1, 1, 1]: ResNet-10)."""
    c, _, _ = image_dims("resnet18", input_shape)
    width = positive_float("width", width)
    if (
        not isinstance(blocks, (list, tuple))
        or len(blocks) != 4
        or any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in blocks)
    ):
        raise SpecError(f"model.kwargs.blocks: must be 4 positive integers, got {blocks!r}")
    channels = [_scaled(ch, width, 4) for ch in (64, 128, 256, 512)]
    return ResNet(c, num_classes, channels, [int(b) for b in blocks])


# --------------------------------------------------------------------------- VGG-BN

VGG_CFGS: dict[int, list[list[int]]] = {
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


class VGG(nn.Module):
    """VGG with batch norm: five blocks of 3×3 conv (with bias)-BN-ReLU, each ending in a 2×2
    max-pool, then global average pooling and a single linear head.

    The head is the CIFAR one (a single ``Linear(last_channels, classes)``; 14,728,266
    parameters for VGG-16-BN with 10 classes) rather than ImageNet's 4096-4096 classifier on
    a 7×7 map; on 32×32 inputs the final map is 1×1, so pooling changes nothing there. A
    max-pool is skipped along a side that is already 1 (and left out when both are), so
    28×28 and 8×8 inputs work.
    """

    def __init__(
        self, in_channels: int, spatial: tuple[int, int], num_classes: int, cfg: list[list[int]], width: float
    ) -> None:
        super().__init__()
        blocks = []
        cin, (h, w) = in_channels, spatial
        for stage in cfg:
            layers: list[nn.Module] = []
            for ch in stage:
                cout = _scaled(ch, width, 4)
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
            kh, kw = (2 if h > 1 else 1), (2 if w > 1 else 1)
            if (kh, kw) != (1, 1):
                layers.append(nn.MaxPool2d((kh, kw)))
                h, w = h // kh, w // kw
            blocks.append(nn.Sequential(*layers))
        self.features = nn.Sequential(*blocks)
        self.pool = PoolFlatten()
        self.head = nn.Linear(cin, num_classes)
        self.feature_layers = (*(f"features.{i}" for i in range(len(blocks))), "pool")
        for m in self.modules():  # as torchvision's VGG
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


@MODELS.register("vgg16-bn")
def vgg16_bn(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, depth: int = 16) -> nn.Module:
    """VGG-BN with the 11/13/16/19-layer configurations; ``width`` scales channels (each >= 4)."""
    c, h, w = image_dims("vgg16-bn", input_shape)
    width = positive_float("width", width)
    one_of("depth", depth, tuple(VGG_CFGS))
    return VGG(c, (h, w), num_classes, VGG_CFGS[int(depth)], width)


# --------------------------------------------------------------------------- MobileNetV2

# (expansion t, channels c, repeats n, stride s); the second row has stride 1 instead of 2
# (and the stem stride 1 instead of 2), as in the common CIFAR ports.
MOBILENETV2_TABLE: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to a multiple of ``divisor`` (at least ``divisor``), never more than 10% down."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """1×1 expansion (omitted when t = 1), 3×3 depthwise, linear 1×1 projection; residual
    when the stride is 1 and the channel count is unchanged (as in the paper)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(cin, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 with CIFAR strides; ``features.1`` … ``features.7`` are the table's stages
    and ``features.8`` the final 1×1 conv."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: float,
        depth: float,
        dropout: float,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        cin = make_divisible(32 * width)
        last = make_divisible(1280 * max(1.0, width))
        stages: list[nn.Module] = [_conv_bn_relu6(in_channels, cin, 3, stem_stride)]
        for t, c, n, s in MOBILENETV2_TABLE:
            cout = make_divisible(c * width)
            blocks = []
            for j in range(math.ceil(n * depth)):
                blocks.append(InvertedResidual(cin, cout, s if j == 0 else 1, t))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        stages.append(_conv_bn_relu6(cin, last, 1))
        self.features = nn.Sequential(*stages)
        self.pool = PoolFlatten()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(last, num_classes)
        n_stages = len(MOBILENETV2_TABLE)
        self.feature_layers = (*(f"features.{i}" for i in range(1, n_stages + 2)), "pool")
        for m in self.modules():  # as torchvision's MobileNetV2
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.features(x))))


@MODELS.register("mobilenetv2")
def mobilenetv2(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: float = 1.0,
    depth: float = 1.0,
    dropout: float = 0.0,
    stem_stride: int = 1,
) -> nn.Module:
    """MobileNetV2 (2,236,682 parameters at width 1 with 10 classes); ``width`` scales channels
    (multiples of 8, at least 8), ``depth`` the repeats per stage (rounded up), ``dropout``
    applies before the head. ``stem_stride: 2`` (ImageNet-style stem) quarters the cost of
    every layer on small images, for CPU-sized runs; the parameters are unchanged."""
    c, _, _ = image_dims("mobilenetv2", input_shape)
    width = positive_float("width", width)
    depth = positive_float("depth", depth)
    if stem_stride not in (1, 2):
        raise SpecError(f"model.kwargs.stem_stride: must be 1 or 2, got {stem_stride!r}")
    return MobileNetV2(c, num_classes, width, depth, dropout_rate(dropout), int(stem_stride))
