"""Where an attack lives: the valid box and budget in model input space, and the model it runs on.

kdaudit models read standardised inputs: a float dataset was mapped ``x = (raw - mean) / std``
with one scalar mean/std (``info["normalization"]``), and ``info["raw_range"]`` records the
valid raw range (images [0, 1], waveforms [-1, 1]). Attacks run on the standardised tensors;
:func:`attack_space` turns a budget given in raw units into model units (``ε_model = ε_raw /
std``; one scalar std, so this holds for L∞ and L2 alike) and maps the raw range into the
valid model-space box. Without a raw range (log-mel features) the box is the observed test
range and ε is in standardised units.

Every attack runs its model in eval mode (:class:`EvalMode` restores each module's own mode
afterwards) on the model's device (:func:`model_device`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError

__all__ = ["AttackSpace", "EvalMode", "TokenInputsError", "attack_space", "model_device"]


class TokenInputsError(InputError, ValueError):
    """Token (integer) inputs have no gradient attack space; use ``char_substitution``."""


@dataclass(frozen=True)
class AttackSpace:
    """Where an attack lives in model input space.

    ``scale`` turns a user budget into model units (``eps_model = eps_raw * scale``);
    ``lo``/``hi`` bound every adversarial input (None: unbounded); ``how`` says where the
    bounds came from, for reports.
    """

    scale: float
    lo: float | None
    hi: float | None
    how: str

    def eps(self, eps_raw: float) -> float:
        """A budget in raw units (e.g. 8/255 for images) converted to model units."""
        return float(eps_raw) * self.scale


def attack_space(info: dict, x_test: torch.Tensor) -> AttackSpace:
    """The attack space of a dataset, from its DataBundle ``info`` and test inputs.

    With ``info["raw_range"] = [lo, hi]`` the box is the raw range mapped through the
    standardisation and ``scale = 1 / std``. Without it (e.g. log-mel features) the box is the
    observed min/max of ``x_test`` (a documented choice: no valid range is known) and ε is
    read in standardised units (``scale = 1``). Integer (token) inputs raise
    :class:`TokenInputsError` (a ValueError): they are attacked with ``char_substitution``.
    """
    if not torch.is_floating_point(x_test):
        raise TokenInputsError("token (integer) inputs have no gradient attack space; use char_substitution")
    if x_test.numel() == 0:
        raise InputError("attack_space: the test inputs are empty")
    norm = info.get("normalization") or {}
    mean = float(norm.get("mean", 0.0))
    std = float(norm.get("std", 1.0))
    if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
        raise InputError(f"attack_space: bad normalization mean={mean}, std={std}")
    raw = info.get("raw_range")
    if raw is not None:
        if len(raw) != 2 or not float(raw[0]) < float(raw[1]):
            raise InputError(f"attack_space: raw_range must be [lo, hi] with lo < hi, got {raw}")
        rlo, rhi = float(raw[0]), float(raw[1])
        how = f"raw range [{rlo:g}, {rhi:g}] mapped through the standardisation"
        if norm:
            how += f" (mean {mean:.4g}, std {std:.4g})"
        return AttackSpace(scale=1.0 / std, lo=(rlo - mean) / std, hi=(rhi - mean) / std, how=how)
    lo, hi = float(x_test.min()), float(x_test.max())
    return AttackSpace(
        scale=1.0,
        lo=lo,
        hi=hi,
        how="observed test range (no raw_range); eps in standardised units",
    )


class EvalMode:
    """Put every module in eval mode; restore each module's own mode on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, training in self.modes:
            m.training = training


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter (``fallback`` for a model without any)."""
    for p in model.parameters():
        return p.device
    return fallback
