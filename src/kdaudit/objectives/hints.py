"""Feature-map matching (hints): a student layer is pulled towards a teacher layer.

    L_hint = weight · mean((r(f_s) − f_t)²)

f_s is read from the student's named layer by a forward hook (no model rewrite), f_t is a
fixed per-sample target: the teacher's feature on that training sample (computed once, in
eval mode) or, for the RCD control, a noise feature table drawn once per run. r is a learned
map when the shapes differ: a 1×1 convolution for C×H×W maps (after average-pooling the larger
spatial size down to the smaller), a linear map on the last axis for vectors and sequences,
and a linear map of the flattened feature otherwise; the identity when the shapes match.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError

# RCD noise kinds and the code that separates their random streams (logit and feature tables)
NOISE_CODES = {"rcd-uniform": 1, "rcd-gaussian": 2}


def layer_output(output) -> torch.Tensor:
    """A module's output as one tensor (the first element of a tuple, e.g. an LSTM's)."""
    while isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise SpecError(f"protocol.hint: the layer returns {type(output).__name__}, not a tensor")
    return output


@contextmanager
def capture(module: nn.Module) -> Iterator[dict]:
    """A forward hook on ``module`` for the duration of the block: ``box["out"]`` is its last output."""
    box: dict = {}

    def hook(_m, _inp, out) -> None:
        box["out"] = layer_output(out)

    handle = module.register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def feature_shape(model: nn.Module, module: nn.Module, example: torch.Tensor) -> tuple[int, ...]:
    """The per-sample shape of ``module``'s output for inputs like ``example`` (one eval forward)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(module) as box:
            model(example[:2])
    finally:
        model.train(was)
    if "out" not in box:
        raise SpecError("protocol.hint: the layer is never called in the model's forward pass")
    return tuple(box["out"].shape[1:])


def target_shape(student: tuple[int, ...], teacher: tuple[int, ...]) -> tuple[int, ...]:
    """The shape both sides are compared in: the teacher's, with C×H×W maps pooled to the smaller
    spatial size of the two."""
    if len(student) == 3 and len(teacher) == 3:
        return (teacher[0], min(student[1], teacher[1]), min(student[2], teacher[2]))
    return tuple(teacher)


def pool_to(feat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Average-pool a N×C×H×W batch to ``shape``'s spatial size (no-op when it already has it)."""
    if feat.dim() == 4 and tuple(feat.shape[2:]) != tuple(shape[1:]):
        return F.adaptive_avg_pool2d(feat, cast(tuple[int, int], tuple(shape[1:])))
    return feat


class HintRegressor(nn.Module):
    """r: student feature → the target shape (see the module docstring)."""

    def __init__(self, student: tuple[int, ...], teacher: tuple[int, ...]) -> None:
        super().__init__()
        self.student, self.target = tuple(student), target_shape(student, teacher)
        s, t = self.student, self.target
        self.mode = "identity"
        self.map: nn.Module | None = None
        if len(s) == 3 and len(t) == 3:
            self.mode = "conv"
            if s[0] != t[0]:
                self.map = nn.Conv2d(s[0], t[0], kernel_size=1, bias=False)
        elif s == t:
            pass
        elif len(s) == len(t) and s[:-1] == t[:-1]:
            self.mode = "linear"
            self.map = nn.Linear(s[-1], t[-1], bias=False)
        else:
            self.mode = "flat"
            self.map = nn.Linear(math.prod(s), math.prod(t), bias=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.mode == "conv":
            f = pool_to(f, self.target)
        if self.map is None:  # the identity, or a conv map between equal channel counts
            return f
        if self.mode == "flat":
            return self.map(f.flatten(1)).view(len(f), *self.target)
        return self.map(f)


def hint_loss(student_feat: torch.Tensor, target: torch.Tensor, regressor: nn.Module, weight: float) -> torch.Tensor:
    """weight · mean over every element of (r(f_s) − f_t)²."""
    return weight * F.mse_loss(regressor(student_feat.float()), target)


def check_table_size(n: int, shape: tuple[int, ...], max_mb: float, what: str) -> None:
    mb = n * math.prod(shape) * 4 / 2**20
    if mb > max_mb:
        raise SpecError(
            f"protocol.hint: the {what} table would take {mb:,.0f} MB ({n} samples × {shape}), above "
            f"protocol.hint.max_table_mb = {max_mb:g}; hint a later (smaller) layer, use data.train_subset, "
            "or raise the cap"
        )


@torch.inference_mode()
def teacher_feature_table(
    model: nn.Module, module: nn.Module, x: torch.Tensor, shape: tuple[int, ...], batch_size: int = 1024
) -> torch.Tensor:
    """The teacher's feature at ``module`` for every row of ``x`` (eval mode), pooled to ``shape``."""
    model.eval()
    out = torch.empty((len(x), *shape), dtype=torch.float32)
    with capture(module) as box:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size])
            out[i : i + batch_size] = pool_to(box["out"].float(), shape)
    return out


def noise_feature_table(kind: str, seed: int, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The RCD analogue of a teacher's feature map: U[0,1) or N(0,1) per element, drawn once per
    run from ``seed`` and indexed by training-sample index (fixed per sample across epochs)."""
    if kind not in NOISE_CODES:
        raise ValueError(f"unknown noise kind {kind!r}")
    rng = np.random.default_rng([int(seed), NOISE_CODES[kind], 7])
    size = (n, *shape)
    z = rng.random(size, dtype=np.float32) if kind == "rcd-uniform" else rng.standard_normal(size, dtype=np.float32)
    return torch.from_numpy(z)
