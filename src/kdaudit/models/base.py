"""Model registry and the built-in architectures (MLP, small CNN).

Every factory has the signature ``factory(input_shape, num_classes, **kwargs) -> nn.Module``
and constructs its weights from the global torch RNG, so the caller seeds it (M0 is drawn
once from ``init_seed`` and saved). Data-dependent arguments (``vocab_size`` for token
inputs) come from the dataset (:meth:`DataBundle.model_args`), passed to factories that
declare them.

A model may also be named by an import path ``package.module:Callable`` (a class or a
function): it gets the same arguments, those its signature declares (:func:`build_model`), and
:func:`check_model_output` tells whether its logits fit the dataset.

Every model names its intermediate layers in ``feature_layers`` (module names as in
``named_modules()``), the points a forward hook can read for feature-map distillation.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from numbers import Real

import torch
from torch import nn

from ..errors import KdauditError, SpecError
from ..registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry(
    "model", builtins=tuple(f"kdaudit.models.{m}" for m in ("vision", "vit", "fast", "audio", "sequence"))
)
DATA_ARGS = ("vocab_size", "pad_id")


def resolve_model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory of a registered model, or the class/function an import path names."""
    return MODELS.resolve(name, field="model.name")


def _keyword_parameters(name: str, factory: Callable) -> tuple[dict[str, inspect.Parameter], bool]:
    """The parameters a factory takes by keyword, and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        raise SpecError(f"model.name {name!r}: cannot read the signature of {name!r}") from None
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = {p.name: p for p in params if p.kind in by_keyword}
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def check_model_kwargs(
    name: str,
    kwargs: dict,
    params: dict[str, inspect.Parameter] | None = None,
    var_kw: bool | None = None,
) -> None:
    """One-line errors for ``model.kwargs`` that the factory of ``name`` does not take (with the
    closest option) or that come from the dataset; run when a spec is loaded and again when the
    model is built."""
    if params is None or var_kw is None:
        params, var_kw = _keyword_parameters(name, resolve_model_factory(name))
    reserved = sorted(set(kwargs) & {"input_shape", "num_classes", *DATA_ARGS})
    if reserved:
        raise SpecError(f"model.kwargs: {', '.join(reserved)} come(s) from the dataset and cannot be set")
    unknown = [] if var_kw else sorted(set(kwargs) - set(params))
    if unknown:
        allowed = [p for p in params if p not in ("input_shape", "num_classes", *DATA_ARGS)]
        close = [m for u in unknown for m in difflib.get_close_matches(u, allowed, n=1)]
        raise SpecError(
            f"model.kwargs: unknown option(s) {', '.join(unknown)} for model {name!r}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
            + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
        )


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    /,
    data_args: dict | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model, or the class/function named ``package.module:Callable``.

    The factory gets ``kwargs`` (``model.kwargs``) plus whichever of ``input_shape``,
    ``num_classes`` and the dataset's ``data_args`` (``vocab_size``, ``pad_id``) its signature
    declares; all of them when it takes ``**kwargs``.
    """
    factory = resolve_model_factory(name)
    params, var_kw = _keyword_parameters(name, factory)
    check_model_kwargs(name, kwargs, params, var_kw)
    given = {"input_shape": tuple(input_shape), "num_classes": num_classes, **(data_args or {})}
    extra = {k: v for k, v in given.items() if var_kw or k in params}
    missing = [k for k, p in params.items() if p.default is p.empty and k not in extra and k not in kwargs]
    needed = [k for k in missing if k in DATA_ARGS]
    if needed:
        raise SpecError(
            f"model {name!r} needs token inputs (a dataset that provides {', '.join(needed)}), "
            f"got inputs of shape {tuple(input_shape)}"
        )
    if missing:
        raise SpecError(f"model {name!r} needs model.kwargs: {', '.join(missing)} (parameters without a default)")
    try:
        model = factory(**extra, **kwargs)
    except (TypeError, ValueError) as exc:  # an option of the wrong type, e.g. hidden: [a]
        raise SpecError(f"model.kwargs: bad option value for model {name!r} ({exc})") from None
    except KdauditError:
        raise
    except Exception as exc:
        if name in MODELS:
            raise
        raise SpecError(f"model {name!r} fails to build ({_one_line(exc)})") from exc
    if not isinstance(model, nn.Module):
        raise SpecError(f"model {name!r} returns {type(model).__name__}, not a torch.nn.Module")
    return model


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def check_model_output(
    model: nn.Module,
    input_shape: tuple[int, ...],
    num_classes: int,
    input_dtype: torch.dtype = torch.float32,
    vocab_size: int | None = None,
    *,
    name: str | None = None,
) -> None:
    """Run one eval-mode forward on a zero batch of 2 inputs; the logits must be 2 × classes.

    Token inputs (integer ``input_dtype``) are zeros too, a valid id for any ``vocab_size``.
    Each module's train/eval mode is restored afterwards. ``name`` (default: the class name)
    is the model named in the :class:`SpecError` raised when the forward fails or returns
    anything but a float tensor of shape ``(2, num_classes)``.
    """
    label = name or type(model).__qualname__
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros((2, *input_shape), dtype=input_dtype, device=device)
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise SpecError(f"model {label!r} fails on a batch of shape {tuple(x.shape)} ({_one_line(exc)})") from exc
    finally:
        for m, training in modes.items():
            m.training = training
    if not isinstance(out, torch.Tensor):
        raise SpecError(f"model {label!r} returns {type(out).__name__}, not a tensor of logits")
    if tuple(out.shape) != (2, num_classes):
        raise SpecError(
            f"model {label!r} returns logits of shape {tuple(out.shape)} "
            f"but the dataset has {num_classes} classes (expected (2, {num_classes}) for 2 inputs)"
        )
    if not out.is_floating_point():
        raise SpecError(f"model {label!r} returns logits of dtype {out.dtype}, not floating point")


def model_param_count(model: nn.Module) -> int:
    """The number of parameter values (a parameter shared between modules counts once)."""
    return sum(p.numel() for p in model.parameters())


def feature_layers(model: nn.Module) -> tuple[str, ...]:
    """The named intermediate layers of a built-in model (hook points)."""
    return tuple(getattr(model, "feature_layers", ()))


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` in ``model.named_modules()``; a SpecError if there is none."""
    modules = {n: m for n, m in model.named_modules() if n}
    if name in modules:
        return modules[name]
    hooks = feature_layers(model)
    listed = f"its feature layers: {', '.join(hooks)}; " if hooks else ""
    shown = list(modules)[:8]
    more = f", ... ({len(modules)} in all)" if len(modules) > len(shown) else ""
    names = ", ".join(shown) + more if shown else "(none)"
    raise SpecError(f"layer {name!r} is not a module of {type(model).__qualname__}; {listed}modules: {names}")


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)
        # the output of each hidden block's activation (ReLU), then the logits
        self.feature_layers = tuple(f"features.{i}" for i, m in enumerate(self.features) if isinstance(m, nn.ReLU))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@MODELS.register("mlp")
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: list[int] | tuple[int, ...] = (256,),
    dropout: float = 0.0,
    width: float = 1.0,
) -> nn.Module:
    """Fully connected ReLU net; ``width`` scales each hidden width to ``max(1, round(h * width))``."""
    if any(int(h) <= 0 for h in hidden):
        raise SpecError(f"model.kwargs.hidden: widths must be positive, got {list(hidden)}")
    if not 0.0 <= dropout < 1.0:
        raise SpecError(f"model.kwargs.dropout: must lie in [0, 1), got {dropout}")
    if isinstance(width, bool) or not isinstance(width, Real) or not 0 < width < math.inf:
        raise SpecError(f"model.kwargs.width: must be a positive number, got {width!r}")
    widths = [max(1, int(round(int(h) * width))) for h in hidden]
    return MLP(math.prod(input_shape), widths, num_classes, float(dropout))


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
            f"model 'small-cnn' needs image inputs C×H×W, got {input_shape}; set data.options.flatten=false"
        )
    if width <= 0:
        raise SpecError(f"model.kwargs.width: must be positive, got {width}")
    return SmallCNN(input_shape[0], (input_shape[1], input_shape[2]), num_classes, int(width))
