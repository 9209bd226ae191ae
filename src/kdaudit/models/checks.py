"""Checks of the options (``model.kwargs``) of the image models: each returns the value or
raises a one-line :class:`SpecError` naming the option."""

from __future__ import annotations

import math
from numbers import Real
from typing import cast

from ..errors import SpecError


def image_dims(name: str, input_shape: tuple[int, ...], min_size: int = 1) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image input, or a one-line SpecError saying what is needed."""
    if len(input_shape) != 3:
        raise SpecError(
            f"model {name!r} needs image inputs C×H×W, got {tuple(input_shape)}; set data.options.flatten=false"
        )
    c, h, w = (int(s) for s in input_shape)
    if c < 1 or h < min_size or w < min_size:
        raise SpecError(f"model {name!r} needs at least 1 channel and H, W >= {min_size}, got {tuple(input_shape)}")
    return c, h, w


def positive_float(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise SpecError(f"model.kwargs.{key}: must be a positive number, got {value!r}")
    return float(value)


def positive_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"model.kwargs.{key}: must be a positive integer, got {value!r}")
    return int(value)


def dropout_rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= cast(float, value) < 1.0:
        raise SpecError(f"model.kwargs.dropout: must lie in [0, 1), got {value!r}")
    return float(value)


def one_of(key: str, value: object, allowed: tuple) -> object:
    if value not in allowed:
        raise SpecError(f"model.kwargs.{key}: must be one of {', '.join(map(str, allowed))}, got {value!r}")
    return value
