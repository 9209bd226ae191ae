"""Sweeps: a spec whose fields take lists expands into one audit spec per value.

A list where the spec expects one value sweeps that field: ``protocol.temperature: [1, 2, 4, 8]``,
``teacher.epochs: [2, 5, 10]``, ``student.width: [0.25, 0.5, 1]`` (a model option whose default
is a single number or string). Fields that already hold lists (``protocol.alphas``,
``model.hidden``…) are swept through an explicit section instead::

    sweep:
      model.hidden: [[64], [256]]

Several swept fields give their Cartesian product. Every point is validated before anything
trains; the points share one job store, so identical jobs (one teacher for a temperature
sweep, one M0 per architecture) are trained once.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ..errors import SpecError
from .schema import AuditSpec, ModelSpec

MAX_POINTS = 256


@dataclass
class SweepPoint:
    label: str  # e.g. "protocol.temperature=2", the point's directory name
    values: dict[str, Any]  # swept path → value
    spec: AuditSpec


@dataclass
class Sweep:
    axes: dict[str, list[Any]]  # swept path → values, in the order written
    points: list[SweepPoint]

    @property
    def is_sweep(self) -> bool:
        return bool(self.axes)


def _accepts_list(annotation: Any) -> bool:
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_list(a) for a in typing.get_args(annotation))
    return False


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for a in typing.get_args(annotation):
            if isinstance(a, type) and issubclass(a, BaseModel):
                return a
    return None


def _scalar_default(model_name: str, option: str) -> bool:
    """Is a model option's default one number/string (so that a list of values sweeps it)?"""
    from ..models.base import resolve_model_factory

    try:
        factory = resolve_model_factory(model_name)
        param = inspect.signature(factory).parameters.get(option)
    except (SpecError, TypeError, ValueError):
        return False
    if param is None or param.default is inspect.Parameter.empty:
        return False
    return isinstance(param.default, (int, float, str, bool))


def _model_axes(raw: dict, path: str, found: dict[str, list], default_name: str) -> None:
    name = raw.get("name", default_name)
    for k, v in list(raw.items()):
        if k == "name":
            continue
        if k == "kwargs" and isinstance(v, dict):
            for kk, vv in v.items():
                if isinstance(vv, list) and _scalar_default(str(name), kk):
                    found[f"{path}.kwargs.{kk}"] = vv
        elif isinstance(v, list) and _scalar_default(str(name), k):
            found[f"{path}.{k}"] = v


def find_axes(
    raw: dict, model: type[BaseModel] = AuditSpec, prefix: str = "", model_name: str | None = None
) -> dict[str, list]:
    """Dotted paths of the fields that hold a list where the spec expects one value."""
    if model_name is None:  # a student / teacher model without a name is the audit's model
        top = raw.get("model")
        model_name = (top.get("name") if isinstance(top, dict) else None) or ModelSpec.model_fields["name"].default
    found: dict[str, list] = {}
    for key, value in raw.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        path = f"{prefix}{key}"
        sub = _submodel(field.annotation)
        if sub is ModelSpec and isinstance(value, dict):
            _model_axes(value, path, found, model_name)
        elif sub is not None and isinstance(value, dict):
            found.update(find_axes(value, sub, path + ".", model_name))
        elif isinstance(value, list) and not _accepts_list(field.annotation):
            found[path] = value
    return found


def _set(raw: dict, path: str, value: Any) -> None:
    node = raw
    parts = path.split(".")
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = node[p] = {}
        node = nxt
    node[parts[-1]] = value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "-".join(_fmt(v) for v in value)
    return str(value).replace("/", "_").replace(",", "_")


def build_sweep(raw: dict, validate: Callable[[dict], AuditSpec]) -> Sweep:
    """The sweep of a raw (unvalidated) spec: its axes and one spec per point, each made by ``validate``
    (see :func:`kdaudit.config.loader.expand`)."""
    raw = copy.deepcopy(raw)
    explicit = raw.pop("sweep", None) or {}
    if not isinstance(explicit, dict):
        raise SpecError("spec: sweep must map dotted field paths to lists of values")
    axes = find_axes(raw)
    for path, values in explicit.items():
        if not isinstance(values, list):
            raise SpecError(f"spec: sweep.{path} must be a list of values, got {values!r}")
        if path in axes:
            raise SpecError(f"spec: {path} is swept twice (a list in the spec and in sweep)")
        axes[str(path)] = values
    for path, values in axes.items():
        if not values:
            raise SpecError(f"spec: {path}: an empty list sweeps nothing")
        if len({repr(v) for v in values}) != len(values):
            raise SpecError(f"spec: {path}: lists a value twice ({values})")
    if not axes:
        return Sweep({}, [SweepPoint("", {}, validate(raw))])
    n = 1
    for values in axes.values():
        n *= len(values)
    if n > MAX_POINTS:
        raise SpecError(f"spec: the sweep has {n} points, more than {MAX_POINTS}; sweep fewer values")
    points = []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo, strict=True))
        point_raw = copy.deepcopy(raw)
        for path, value in values.items():
            _set(point_raw, path, value)
        label = ",".join(f"{path}={_fmt(v)}" for path, v in values.items())
        try:
            spec = validate(point_raw)
        except SpecError as exc:
            raise SpecError(f"{exc} [sweep point {label}]") from None
        points.append(SweepPoint(label, values, spec))
    return Sweep(dict(axes), points)
