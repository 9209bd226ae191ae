"""A small VGG-like net for fast CIFAR-10 training, after the airbench recipes.

The shape follows the airbench CIFAR-10 speed-run nets: a 2×2 stem conv without padding (where
airbench puts a fixed patch-whitening layer; here it is learned), then three blocks of
``conv3×3 → maxpool2 → BN → GELU → conv3×3 → BN → GELU`` at widths 64/256/256, a global
max-pool and a bias-free linear head whose logits are scaled by 1/9. BatchNorm updates its
running statistics with momentum 0.4 (PyTorch's convention; the default is 0.1), so they settle
within the few dozen large-batch steps of a short run. As in airbench, every 3×3 conv starts with
its first ``min(C_in, C_out)`` output channels as the identity (a Dirac kernel), the others drawn
as usual. No dropout.

Same conventions as :mod:`.vision`: ``N×C×H×W`` float inputs with any channel count, weights from
the global torch RNG only, ``head`` the final linear layer (its 1/9 scaling included) and
``feature_layers`` the main blocks, the last one the ``N×D`` penultimate feature with
``head(feature) == model(x)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SpecError
from .base import MODELS
from .checks import image_dims, positive_float

#: PyTorch's BatchNorm momentum: the weight of each batch in the running statistics.
BN_MOMENTUM = 0.4
#: The factor on the logits (airbench's 1/9).
HEAD_SCALE = 1 / 9


def _pool_kernel(h: int, w: int) -> tuple[int, int]:
    """A 2×2 max-pool, 1 along a side that is already 1 pixel."""
    return (2 if h > 1 else 1), (2 if w > 1 else 1)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    """A bias-free 3×3 conv whose first ``min(cin, cout)`` output channels start as the identity."""
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(cin, cout)])
    return conv


class ConvGroup(nn.Module):
    """conv3×3 → maxpool (halves H, W) → BN → GELU → conv3×3 → BN → GELU."""

    def __init__(self, cin: int, cout: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout)
        self.pool: nn.Module = nn.MaxPool2d(pool) if pool != (1, 1) else nn.Identity()
        self.norm1 = nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)
        self.act1 = nn.GELU()
        self.conv2 = _conv(cout, cout)
        self.norm2 = nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)
        self.act2 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.pool(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(x)))


class GlobalMaxPool(nn.Module):
    """The maximum over H and W: an ``N×C`` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


class ScaledLinear(nn.Linear):
    """A linear layer whose output is multiplied by a fixed ``scale``."""

    def __init__(self, in_features: int, out_features: int, scale: float) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:.4g}"


class AirbenchNet(nn.Module):
    """The stem (2×2 conv, ``2·C·4`` channels, GELU), one :class:`ConvGroup` per width, global
    max-pool, scaled head."""

    def __init__(self, in_channels: int, spatial: tuple[int, int], num_classes: int, widths: list[int]) -> None:
        super().__init__()
        stem = 2 * in_channels * 4  # airbench's whitening width: twice the values of a 2×2 patch
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 2), nn.GELU())
        h, w = spatial[0] - 1, spatial[1] - 1
        cin = stem
        for i, cout in enumerate(widths):
            pool = _pool_kernel(h, w)
            self.add_module(f"block{i + 1}", ConvGroup(cin, cout, pool))
            h, w, cin = h // pool[0], w // pool[1], cout
        self.blocks = [f"block{i + 1}" for i in range(len(widths))]
        self.pool = GlobalMaxPool()
        self.head = ScaledLinear(cin, num_classes, HEAD_SCALE)
        self.feature_layers = ("stem", *self.blocks, "pool")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.blocks:
            x = getattr(self, name)(x)
        return self.head(self.pool(x))


@MODELS.register("airbench")
def airbench(
    input_shape: tuple[int, ...],
    num_classes: int,
    widths: list[int] | tuple[int, ...] = (64, 256, 256),
    width: float = 1.0,
) -> nn.Module:
    """The airbench-style CIFAR-10 net (1,972,792 parameters on 3×32×32 with 10 classes);
    ``widths`` are the channels of its blocks, each scaled by ``width`` to
    ``max(1, round(w × width))``. Inputs need H, W >= 2 (the 2×2 stem)."""
    c, h, w = image_dims("airbench", input_shape, min_size=2)
    if (
        not isinstance(widths, (list, tuple))
        or not widths
        or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in widths)
    ):
        raise SpecError(f"model.kwargs.widths: must be a non-empty list of positive integers, got {widths!r}")
    scale = positive_float("width", width)
    channels = [max(1, int(round(v * scale))) for v in widths]
    return AirbenchNet(c, (h, w), num_classes, channels)
