"""Audio architectures: the M5 1-D CNN for raw waveforms.

M5 (Dai et al. 2017, "Very deep convolutional neural networks for raw waveforms") reads the
waveform directly: a long first kernel (80 samples, stride 4) acts as a learned filter bank,
then short-kernel conv blocks with max pooling shrink time by 4 each, and a global average
over time gives a fixed-size feature whatever the clip length.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from ..errors import SpecError
from .base import MODELS

FIRST_KERNEL = 80
POOL = 4


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise SpecError(f"model.kwargs.{name}: must be a positive integer, got {value!r}")
    return int(value)


def m5_channels(width: int, depth: int) -> list[int]:
    """Channels of the first conv and each of the ``depth`` blocks: w, w, 2w, 2w, 4w, 4w, ...

    ``width=32, depth=3`` gives the usual 32, 32, 64, 64.
    """
    return [width] + [width * 2 ** (i // 2) for i in range(1, depth + 1)]


def m5_time_steps(length: int, stride: int, depth: int) -> int:
    """Time steps left after the first conv+pool and ``depth`` blocks (0 if the input is too short)."""
    if length < FIRST_KERNEL:
        return 0
    steps = (length - FIRST_KERNEL) // stride + 1
    for _ in range(depth + 1):
        steps //= POOL
    return steps


class M5(nn.Module):
    """conv(80, stride)-BN-ReLU-maxpool(4), ``depth`` × [conv(3)-BN-ReLU-maxpool(4)], mean over time, linear."""

    def __init__(self, in_channels: int, num_classes: int, width: int, stride: int, depth: int) -> None:
        super().__init__()
        chans = m5_channels(width, depth)
        blocks: list[nn.Module] = [
            nn.Sequential(
                nn.Conv1d(in_channels, chans[0], FIRST_KERNEL, stride=stride, bias=False),
                nn.BatchNorm1d(chans[0]),
                nn.ReLU(),
                nn.MaxPool1d(POOL),
            )
        ]
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            blocks.append(
                nn.Sequential(
                    nn.Conv1d(c_in, c_out, 3, padding=1, bias=False),
                    nn.BatchNorm1d(c_out),
                    nn.ReLU(),
                    nn.MaxPool1d(POOL),
                )
            )
        self.features = nn.Sequential(*blocks)
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.head = nn.Linear(chans[-1], num_classes)
        self.in_channels = in_channels
        # each conv block's pooled output, then the time-averaged feature fed to the head
        self.feature_layers = tuple(f"features.{i}" for i in range(len(blocks))) + ("pooled",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or not x.is_floating_point():
            raise SpecError(
                f"model 'm5' needs float waveforms N×{self.in_channels}×T, "
                f"got a {x.dtype} tensor of shape {tuple(x.shape)}"
            )
        return self.head(self.pooled(self.features(x)))


@MODELS.register("m5")
def m5(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 32,
    stride: int = 4,
    depth: int = 3,
) -> nn.Module:
    """M5 for raw waveforms of shape C×T (usually 1×T); ``width`` = channels of the first conv."""
    if len(input_shape) != 2:
        raise SpecError(f"model 'm5' needs raw waveforms C×T (tensors N×1×T), got inputs of shape {tuple(input_shape)}")
    width = _positive_int("width", width)
    stride = _positive_int("stride", stride)
    depth = _positive_int("depth", depth)
    channels, length = input_shape
    if m5_time_steps(length, stride, depth) < 1:
        raise SpecError(
            f"model 'm5': waveforms of length {length} are too short for stride={stride} and "
            f"depth={depth} (no time step left after the last block); lower stride or depth"
        )
    return M5(int(channels), num_classes, width, stride, depth)
