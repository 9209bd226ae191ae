"""Loading audit specs: named setups and their presets, YAML files, ``--set`` overrides, sweeps.

A spec is validated against :mod:`kdaudit.config.schema`, then its dataset and model names are
checked against the registries. Unknown keys and bad values are rejected before anything trains,
with one line naming the field, what is allowed and, for a misspelt key or value, the closest
allowed one (:class:`SpecError`, exit code 2 at the CLI).
"""

from __future__ import annotations

import copy
import difflib
import re
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import SpecError
from ..registry import import_object, is_import_path
from .schema import DEFAULT_SETUP, AuditSpec
from .sweep import Sweep, build_sweep

DEFAULT_PRESET = "cpu"


def _format_error(exc: ValidationError) -> str:
    """Pydantic's first error (an unknown key first) as one line: the field, what is wrong, what is
    allowed, and the closest allowed key or value where one is close."""
    errors = exc.errors()
    # an unknown key first: a misspelt key is also why the field it meant is missing
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    kind = err["type"]
    got = err.get("input")
    shown = "" if kind == "missing" or isinstance(got, dict) else f" (got {got!r})"
    if kind == "extra_forbidden":
        msg, shown = "unknown key", ""
        parent = _field_names(err["loc"][:-1])
        if parent:
            msg += f"; allowed: {', '.join(parent)}"
            msg += _did_you_mean(str(err["loc"][-1]), parent, under=".".join(str(p) for p in err["loc"][:-1]))
    elif kind in ("literal_error", "enum") and "expected" in err.get("ctx", {}):
        allowed = _quoted(str(err["ctx"]["expected"]))
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))  # a list's item: the list
        msg, shown = f"unknown value {got!r}; allowed: {', '.join(allowed)}", ""
        msg += _did_you_mean(got, allowed) if isinstance(got, str) else ""
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"spec: {loc + ': ' if loc else ''}{msg}{shown}{more}"


def _did_you_mean(word: str, allowed: list[str], under: str = "") -> str:
    """``"; did you mean 'x'?"`` for the allowed word closest to ``word`` (as a dotted key of the
    section ``under``, if given), or "" where none is close."""
    close = difflib.get_close_matches(word, allowed, n=1)
    if not close:
        return ""
    return f"; did you mean {(under + '.' if under else '') + close[0]!r}?"


def _quoted(expected: str) -> list[str]:
    """The values of pydantic's ``expected`` text (``"'sgd', 'adam' or 'adamw'"``)."""
    return re.findall(r"'((?:[^'\\]|\\.)*)'", expected) or [expected]


def _field_names(loc: tuple) -> list[str]:
    """The fields of the section at ``loc`` (e.g. ``("train",)``), or [] where it is no section."""
    model: type[BaseModel] = AuditSpec
    for part in loc:
        field = model.model_fields.get(str(part))
        section = _section(field.annotation) if field is not None else None
        if section is None:
            return []
        model = section
    return list(model.model_fields)


def _section(annotation: object) -> type[BaseModel] | None:
    """The model of a section's annotation (``TrainSpec``, ``HintSpec | None``), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def check_registered(spec: AuditSpec) -> None:
    """Raise :class:`SpecError` unless the spec's dataset and models are registered names or
    import paths that import."""
    from ..data.base import DATASETS
    from ..models.base import MODELS, check_model_kwargs, resolve_model_factory

    if is_import_path(spec.data.name):  # a user's loader: it must import (SpecError otherwise)
        import_object(spec.data.name, "data.name")
    elif spec.data.name not in DATASETS:
        raise SpecError("spec: data.name: " + DATASETS.unknown_message(spec.data.name))
    for where, m in (("model", spec.model), ("student", spec.student), ("teacher.model", spec.teacher.model)):
        if m is None:
            continue
        if is_import_path(m.name):
            resolve_model_factory(m.name)
        elif m.name not in MODELS:
            raise SpecError(f"spec: {where}.name: " + MODELS.unknown_message(m.name))
        check_model_kwargs(m.name, dict(m.kwargs))


def validate_spec(raw: dict) -> AuditSpec:
    """A raw spec dict as a validated :class:`AuditSpec` whose dataset and models exist."""
    if not isinstance(raw, dict):
        raise SpecError(f"spec: the top level must be a mapping, got {type(raw).__name__}")
    try:
        spec = AuditSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_error(exc)) from None
    check_registered(spec)
    return spec


def expand(raw: dict) -> Sweep:
    """The sweep of a raw (unvalidated) spec: its axes and one validated spec per point."""
    return build_sweep(raw, validate_spec)


def setup_names() -> list[str]:
    root = resources.files("kdaudit.config") / "setups"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def setup_file_raw(name: str) -> dict:
    """A named setup's YAML as written: the common fields plus its ``presets`` overlays."""
    root = resources.files("kdaudit.config") / "setups"
    path = root / f"{name}.yaml"
    if not path.is_file():
        names = setup_names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(f"unknown setup {name!r}{hint}; known: {', '.join(names)}")
    return yaml.safe_load(path.read_text())


def apply_preset(raw: dict, preset: str | None, origin: str) -> dict:
    """Merge the chosen preset (default ``cpu``) of ``raw["presets"]`` into the spec.

    A named setup carries a ``cpu`` preset (sizes that finish here in minutes) and a ``paper``
    preset (the paper's model sizes and recipes, for a GPU); the preset's fields override the
    common ones. A spec without presets accepts no ``--preset``.
    """
    raw = copy.deepcopy(raw)
    raw.pop("measured", None)  # a setup's wall times per preset, shown by `kdaudit setups`; no spec field
    presets = raw.pop("presets", None)
    if presets is None:
        if preset is not None:
            raise SpecError(f"{origin} has no presets; --preset {preset} does not apply")
        return raw
    if not isinstance(presets, dict) or not presets:
        raise SpecError(f"{origin}: presets must map preset names to spec fields")
    chosen = preset or (DEFAULT_PRESET if DEFAULT_PRESET in presets else next(iter(presets)))
    if chosen not in presets:
        raise SpecError(f"{origin} has no preset {chosen!r}; its presets: {', '.join(presets)}")
    over = presets[chosen] or {}
    if not isinstance(over, dict):
        raise SpecError(f"{origin}: preset {chosen!r} must be a mapping of spec fields")
    merged = _merge(raw, over)
    merged["preset"] = chosen
    return merged


def load_setup_raw(name: str, preset: str | None = None) -> dict:
    """A named setup with its preset applied (default ``cpu``), ready for validation."""
    return apply_preset(setup_file_raw(name), preset, f"setup {name!r}")


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"spec {path}: invalid YAML{where}") from None
    return raw if raw is not None else {}


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], value parsed as YAML, or the text where it is no YAML)."""
    if "=" not in item:
        raise SpecError(f"--set {item!r}: expected key=value, e.g. train.epochs=3")
    key, value = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError(f"--set {item!r}: empty key")
    try:
        return parts, yaml.safe_load(value)
    except yaml.YAMLError:
        return parts, value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``--set a.b.c=value`` overrides (value parsed as YAML) to a raw spec dict."""
    out = copy.deepcopy(raw)
    for item in overrides:
        parts, parsed = parse_override(item)
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise SpecError(f"--set {item!r}: {p} is not a section")
            node = nxt
        node[parts[-1]] = parsed
    return out


def resolve_spec(source: str | None, overrides: list[str] | None = None, preset: str | None = None) -> AuditSpec:
    """One audit's spec (see :func:`resolve_raw`); a spec that sweeps fields is an error here
    (:func:`expand` gives its points)."""
    sweep = expand(resolve_raw(source, overrides, preset))
    if sweep.is_sweep:
        axes = ", ".join(f"{k} ({len(v)} values)" for k, v in sweep.axes.items())
        raise SpecError(f"spec: sweeps {axes}; this needs one audit, e.g. `kdaudit run` runs the sweep")
    return sweep.points[0].spec


def resolve_raw(source: str | None, overrides: list[str] | None = None, preset: str | None = None) -> dict:
    """A setup name, a YAML path, or None (the default setup), a preset, and ``--set`` overrides,
    as a raw spec dict (not validated; it may sweep fields).

    A YAML file may start from a named setup (``setup: NAME``); its own fields override the
    setup's, and the preset (``--preset``, else ``preset:`` in the file, else ``cpu``) picks
    that setup's sizes.
    """
    if source is None:
        raw = load_setup_raw(DEFAULT_SETUP, preset)
    elif source.endswith((".yaml", ".yml")) or Path(source).exists():
        path = Path(source)
        if not path.exists():
            raise SpecError(f"spec file not found: {path}")
        raw = read_yaml(path)
        if not isinstance(raw, dict):
            raise SpecError(f"spec {path}: the top level must be a mapping, got {type(raw).__name__}")
        raw.pop("versions", None)  # an audit's spec.yaml records the versions that ran it: no spec field
        base = raw.pop("setup", None)
        wanted = preset or raw.pop("preset", None)
        if base is not None:
            raw = _merge(load_setup_raw(str(base), wanted), raw)
        elif "presets" in raw or preset is not None:
            raw = apply_preset(raw, wanted, f"spec {path}")
        elif wanted is not None:  # e.g. an audit's own spec.yaml, presets already applied
            raw["preset"] = wanted
    else:
        raw = load_setup_raw(source, preset)
    return apply_overrides(raw, overrides or [])


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def dump_spec(spec: AuditSpec, extra: dict | None = None) -> str:
    data = spec.model_dump(mode="json")
    if extra:
        data = {**extra, **data}
    return yaml.safe_dump(data, sort_keys=False)
