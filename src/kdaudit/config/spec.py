"""The audit spec: YAML → validated pydantic models.

Unknown keys and bad values are rejected before anything trains, with one line naming the
field and what is allowed (:class:`SpecError`, exit code 2 at the CLI).
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import SpecError

CONDITIONS = ("siddo", "kd", "rcd-uniform", "rcd-gaussian")
DEFAULT_SETUP = "fashion-mnist-mlp"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSpec(_Strict):
    name: str = "fashion-mnist"
    data_dir: str | None = None
    train_subset: int | None = Field(default=None, gt=0)
    test_subset: int | None = Field(default=None, gt=0)
    subset_seed: int = Field(default=0, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(_Strict):
    name: str = "mlp"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TrainSpec(_Strict):
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["constant", "cosine", "step"] = "constant"
    step_epochs: list[int] = Field(default_factory=list)
    step_gamma: float = Field(default=0.1, gt=0)
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    eval_batch_size: int = Field(default=2048, ge=1)
    threads: int | None = Field(default=None, ge=1)
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    compile: bool = False
    checkpoint_every: int | None = Field(default=None, ge=1)

    def path_label(self) -> str:
        """How the models are trained, as stated in records and reports."""
        parts = [self.precision] + (["channels_last"] if self.channels_last else [])
        return "+".join(parts + (["compile"] if self.compile else []))


class ProtocolSpec(_Strict):
    conditions: list[Literal["siddo", "kd", "rcd-uniform", "rcd-gaussian"]] = Field(
        default_factory=lambda: list(CONDITIONS)
    )
    alphas: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9])
    temperature: float = Field(default=1.0, gt=0)
    seeds: int = Field(default=10, ge=1)
    init_seed: int = Field(default=0, ge=0)
    teacher_seed: int = Field(default=0, ge=0)
    kd_loss: Literal["ce", "kl"] = "ce"
    t2_scaling: bool = False

    @field_validator("conditions")
    @classmethod
    def _conditions(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError(f"must name at least one of {', '.join(CONDITIONS)}")
        if len(set(v)) != len(v):
            raise ValueError("lists a condition twice")
        return v

    @field_validator("alphas")
    @classmethod
    def _alphas(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("must list at least one α in (0, 1]")
        bad = [a for a in v if not 0.0 < a <= 1.0]
        if bad:
            raise ValueError(f"every α must lie in (0, 1] (α = 0 is the siddo condition), got {bad}")
        if len(set(v)) != len(v):
            raise ValueError("lists an α twice")
        return sorted(float(a) for a in v)

    def seed_list(self) -> list[int]:
        return list(range(1, self.seeds + 1))


class AnalysisSpec(_Strict):
    level: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["holm", "bh", "none"] = "holm"
    paired: bool = False


class OutputSpec(_Strict):
    dir: str | None = None
    store: str | None = None


class ExecutionSpec(_Strict):
    """Where the plan's jobs run. Never part of a job's key: every executor gives the same numbers."""

    executor: Literal["local", "dask"] = "local"
    workers: int = Field(default=2, ge=1)
    threads_per_worker: int | None = Field(default=None, ge=1)
    scheduler: str | None = None

    @model_validator(mode="after")
    def _scheduler_needs_dask(self) -> "ExecutionSpec":
        if self.scheduler is not None and self.executor != "dask":
            raise ValueError("scheduler: a scheduler address needs executor: dask")
        return self


class TrackingSpec(_Strict):
    mlflow: str | None = None  # an MLflow tracking URI; null: no tracking
    log_weights: bool = False  # also log each job's weights.safetensors and outputs.npz


class AuditSpec(_Strict):
    name: str = DEFAULT_SETUP
    description: str = ""
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @model_validator(mode="after")
    def _registered(self) -> "AuditSpec":
        from ..data.base import DATASETS
        from ..data import digits, fashion_mnist  # noqa: F401
        from ..models import MODELS

        if self.data.name not in DATASETS:
            raise ValueError("data.name: " + DATASETS.unknown_message(self.data.name))
        if self.model.name not in MODELS:
            raise ValueError("model.name: " + MODELS.unknown_message(self.model.name))
        return self

    def n_models(self) -> int:
        n = 1
        for c in self.protocol.conditions:
            n += self.protocol.seeds * (1 if c == "siddo" else len(self.protocol.alphas))
        return n


def _format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
        parent = _field_names(err["loc"][:-1])
        if parent:
            msg += f"; allowed: {', '.join(parent)}"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    got = err.get("input")
    shown = "" if kind in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"spec: {loc + ': ' if loc else ''}{msg}{shown}{more}"


def _field_names(loc: tuple) -> list[str]:
    model: type[BaseModel] = AuditSpec
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


def validate_spec(raw: dict) -> AuditSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"spec: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return AuditSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_error(exc)) from None


def setup_names() -> list[str]:
    root = resources.files("kdaudit.config") / "setups"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_setup_raw(name: str) -> dict:
    root = resources.files("kdaudit.config") / "setups"
    path = root / f"{name}.yaml"
    if not path.is_file():
        import difflib

        names = setup_names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(f"unknown setup {name!r}{hint}; known: {', '.join(names)}")
    return yaml.safe_load(path.read_text())


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


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``--set a.b.c=value`` overrides (value parsed as YAML) to a raw spec dict."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected key=value, e.g. train.epochs=3")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise SpecError(f"--set {item!r}: empty key")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
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


def resolve_spec(source: str | None, overrides: list[str] | None = None) -> AuditSpec:
    """A setup name, a YAML path, or None (the default setup), plus ``--set`` overrides."""
    if source is None:
        raw = load_setup_raw(DEFAULT_SETUP)
    elif source.endswith((".yaml", ".yml")) or Path(source).exists():
        path = Path(source)
        if not path.exists():
            raise SpecError(f"spec file not found: {path}")
        raw = read_yaml(path)
        base = raw.pop("setup", None) if isinstance(raw, dict) else None
        if base is not None:
            raw = _merge(load_setup_raw(str(base)), raw)
    else:
        raw = load_setup_raw(source)
    return validate_spec(apply_overrides(raw, overrides or []))


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
