"""Model registry and the built-in architectures (MLP, small CNN).

Every factory has the signature ``factory(input_shape, num_classes, **kwargs) -> nn.Module``
and constructs its weights from the global torch RNG, so the caller seeds it (M0 is drawn
once from ``init_seed`` and saved). Data-dependent arguments (``vocab_size`` for token
inputs) come from the dataset (:meth:`DataBundle.model_args`), passed to factories that
declare them.

Every model names its intermediate layers in ``feature_layers`` (module names as in
``named_modules()``), the points a forward hook can read for feature-map distillation.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from ..errors import SpecError
from ..registry import Registry

MODELS: Registry = Registry("model")

# Modules whose import fills MODELS with the built-in architectures.
BUILTIN_MODULES = ("vision", "audio", "sequence")
DATA_ARGS = ("vocab_size", "pad_id")


def load_builtin() -> None:
    import importlib

    for mod in BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{mod}")


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    data_args: dict | None = None,
    **kwargs,
) -> nn.Module:
    load_builtin()
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    reserved = sorted(set(kwargs) & set(DATA_ARGS))
    if reserved:
        raise SpecError(
            f"model.kwargs: {', '.join(reserved)} come(s) from the dataset and cannot be set"
        )
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        allowed = [p for p in params if p not in ("input_shape", "num_classes", *DATA_ARGS)]
        raise SpecError(
            f"model.kwargs: unknown option(s) {', '.join(unknown)} for model {name!r}; "
            f"allowed: {', '.join(allowed)}"
        )
    extra = {k: v for k, v in (data_args or {}).items() if k in params}
    needed = [k for k in DATA_ARGS if k in params and params[k].default is inspect.Parameter.empty and k not in extra]
    if needed:
        raise SpecError(
            f"model {name!r} needs token inputs (a dataset that provides {', '.join(needed)}), "
            f"got inputs of shape {tuple(input_shape)}"
        )
    try:
        return factory(input_shape=tuple(input_shape), num_classes=num_classes, **extra, **kwargs)
    except (TypeError, ValueError) as exc:  # an option of the wrong type, e.g. hidden: [a]
        raise SpecError(f"model.kwargs: bad option value for model {name!r} ({exc})") from None


def feature_layers(model: nn.Module) -> tuple[str, ...]:
    """The named intermediate layers of a built-in model (hook points)."""
    return tuple(getattr(model, "feature_layers", ()))


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for i, width in enumerate(hidden):
            layers += [nn.Linear(prev, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)
        # the output of each hidden block's activation (ReLU), then the logits
        self.feature_layers = tuple(
            f"features.{i}" for i, m in enumerate(self.features) if isinstance(m, nn.ReLU)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("mlp")
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: list[int] | tuple[int, ...] = (256,),
    dropout: float = 0.0,
) -> nn.Module:
    if any(int(h) <= 0 for h in hidden):
        raise SpecError(f"model.kwargs.hidden: widths must be positive, got {list(hidden)}")
    if not 0.0 <= dropout < 1.0:
        raise SpecError(f"model.kwargs.dropout: must lie in [0, 1), got {dropout}")
    return MLP(math.prod(input_shape), [int(h) for h in hidden], num_classes, float(dropout))


class SmallCNN(nn.Module):
    """Two conv blocks (conv-BN-ReLU-maxpool) and a linear head; ``width`` scales channels."""

    def __init__(self, in_channels: int, spatial: tuple[int, int], num_classes: int, width: int) -> None:
        super().__init__()
        c1, c2 = width, 2 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        h, w = spatial[0] // 4, spatial[1] // 4
        self.head = nn.Linear(c2 * h * w, num_classes)
        self.feature_layers = ("features.3", "features.7")  # after each pooled block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("small-cnn")
def small_cnn(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> nn.Module:
    if len(input_shape) != 3:
        raise SpecError(
            f"model 'small-cnn' needs image inputs C×H×W, got {input_shape}; "
            "set data.options.flatten=false"
        )
    if width <= 0:
        raise SpecError(f"model.kwargs.width: must be positive, got {width}")
    return SmallCNN(input_shape[0], (input_shape[1], input_shape[2]), num_classes, int(width))
