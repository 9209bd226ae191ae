"""The audit spec's schema: pydantic models of every section, with field-level validation.

Types, ranges, allowed values and the consistency of fields with one another are checked here;
whether the named datasets and models exist is checked where specs are loaded
(:func:`kdaudit.config.loader.validate_spec`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Condition = Literal["siddo", "kd", "ls", "rcd-uniform", "rcd-gaussian"]
CONDITIONS: tuple[Condition, ...] = ("siddo", "kd", "ls", "rcd-uniform", "rcd-gaussian")
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
    """An architecture: a registered name or an import path ``package.module:Callable``, and its
    options. Options may also be written next to ``name`` (``student: {name: mlp, width: 0.5}``);
    they are moved into ``kwargs``, and the model's factory rejects unknown ones."""

    name: str = "mlp"
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            extra = {k: v for k, v in raw.items() if k not in ("name", "kwargs")}
            if extra:
                kwargs = dict(raw.get("kwargs") or {})
                twice = sorted(set(extra) & set(kwargs))
                if twice:
                    raise ValueError(f"{', '.join(twice)} given both beside name and in kwargs")
                raw = {k: v for k, v in raw.items() if k in ("name", "kwargs")}
                raw["kwargs"] = {**kwargs, **extra}
        return raw


class TeacherSpec(_Strict):
    """The teacher, where it differs from the students: another architecture (standard
    distillation), fewer or more epochs (teachers of rising quality), or a trained checkpoint
    (safetensors) audited as given instead of training one. ``snapshots`` (epochs ≥ 1, each at most
    the teacher's epochs unless those are one of them) makes the teacher the state at its epochs of
    one run to the last snapshot, saved during that run (see :func:`kdaudit.plan.jobs.build_plan`)."""

    model: ModelSpec | None = None  # None: the audit's model
    epochs: int | None = Field(default=None, ge=1)  # None: train.epochs
    checkpoint: str | None = None  # a safetensors file of the teacher's weights
    # epochs at which the teacher's one training run saves its state: the teacher is then the
    # snapshot at its epochs of one run to max(epochs, snapshots), shared by a teacher.epochs sweep
    snapshots: list[int] | None = None

    @field_validator("snapshots")
    @classmethod
    def _snapshots(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one epoch ≥ 1 (or be null: no snapshots)")
        bad = [e for e in v if e < 1]
        if bad:
            raise ValueError("every snapshot epoch must be ≥ 1 (epoch 1: the state after the first epoch)")
        if len(set(v)) != len(v):
            raise ValueError("lists an epoch twice")
        return sorted(v)


class HintSpec(_Strict):
    """Feature-map matching (FitNets-style hint): weight × MSE(r(f_s), f_t) added to the KD loss,
    f_s and f_t read by forward hooks from the named layers, r a learned 1×1 conv / linear map
    when the shapes differ. RCD students match a fixed per-sample noise feature table instead."""

    weight: float = Field(gt=0)
    student_layer: str
    teacher_layer: str | None = None  # default: the student layer's name
    max_table_mb: float = Field(default=2048, gt=0)  # cap on a cached feature / noise table


class TrainSpec(_Strict):
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["constant", "cosine", "step"] = "constant"
    step_epochs: list[int] = Field(default_factory=list)
    step_gamma: float = Field(default=0.1, gt=0)
    warmup_epochs: int = Field(default=0, ge=0)
    grad_clip: float | None = Field(default=None, gt=0)
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=128, ge=1)
    eval_batch_size: int = Field(default=2048, ge=1)
    threads: int | None = Field(default=None, ge=1)
    # auto: the first CUDA device when torch sees one, else the CPU. Only the device's class
    # (cpu / cuda / mps) is part of a job's key, not its index: cuda:0 and cuda:1 give one key.
    device: str = "auto"
    # fp32 (default); bf16: bf16 autocast; fp16: fp16 autocast with a gradient scaler
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    tf32: bool = False  # CUDA: TF32 matrix products and convolutions (part of the key when on)
    deterministic: bool = True  # CUDA: deterministic algorithms and cuBLAS workspace
    channels_last: bool = False
    compile: bool = False
    checkpoint_every: int | None = Field(default=None, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v

    @model_validator(mode="after")
    def _schedule(self) -> TrainSpec:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})")
        bad = [e for e in self.step_epochs if e <= 0]  # one past the last epoch is never reached
        if bad:
            raise ValueError(f"step_epochs must be positive epoch numbers, got {bad}")
        return self

    def path_label(self) -> str:
        """How the models are trained, as stated in records and reports."""
        parts = [self.precision] + (["tf32"] if self.tf32 else []) + (["channels_last"] if self.channels_last else [])
        return "+".join(parts + (["compile"] if self.compile else []))


class LabelSmoothingSpec(_Strict):
    """The label-smoothing control's virtual teacher: probability ``a`` on the true class and
    (1 − a)/(C − 1) on every other class, fixed per sample. ``a: null`` matches the teacher's mean
    top probability on the training set (at the distillation temperature); the record states it."""

    a: float | None = Field(default=None, gt=0, lt=1)


class ProtocolSpec(_Strict):
    conditions: list[Condition] = Field(default_factory=lambda: list(CONDITIONS))
    # shared: one noise table for all seeds, as one teacher is shared by all KD students (the
    # predecessor paper's choice); per_seed: one table per seed
    rcd_noise: Literal["shared", "per_seed"] = "shared"
    ls: LabelSmoothingSpec = Field(default_factory=LabelSmoothingSpec)
    alphas: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9])
    temperature: float = Field(default=1.0, gt=0)
    seeds: int = Field(default=10, ge=1)
    init_seed: int = Field(default=0, ge=0)
    teacher_seed: int = Field(default=0, ge=0)
    kd_loss: Literal["ce", "kl"] = "ce"
    t2_scaling: bool = False
    hint: HintSpec | None = None

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
    """How the verdicts are decided (PROTOCOL §5; see :mod:`kdaudit.analysis.hypotheses`)."""

    level: float = Field(default=0.05, gt=0, lt=1)
    correction: Literal["holm", "bh", "none"] = "holm"  # the primary family (H1–H4 per α)
    secondary_correction: Literal["holm", "bh", "none"] = "bh"  # every other test, exploratory
    paired: bool = False  # Wilcoxon signed-rank by seed instead of Mann–Whitney for the primary tests
    method: Literal["auto", "exact", "asymptotic", "permutation"] = "auto"  # how p-values are computed
    standard: Literal["kdaudit", "paper"] = "kdaudit"  # paper: per-test Mann–Whitney, no correction
    bootstrap: int = Field(default=10_000, ge=0)  # resamples of the 95 % intervals (0: none)
    seed: int = Field(default=0, ge=0)  # bootstrap and Monte-Carlo permutation randomness
    permutations: int = Field(default=100_000, ge=100)  # Monte-Carlo permutations where enumeration is too big


class OutputSpec(_Strict):
    dir: str | None = None
    store: str | None = None


class ExecutionSpec(_Strict):
    """Where the plan's jobs run. Never part of a job's key: every executor gives the same numbers."""

    executor: Literal["local", "dask"] = "local"
    # local: worker processes training jobs at once; dask: processes of the LocalCluster.
    # None: one per core (local: only for grids big enough to gain from it).
    workers: int | None = Field(default=None, ge=1)
    threads_per_worker: int | None = Field(default=None, ge=1)
    scheduler: str | None = None
    # on CUDA: worker processes per visible GPU (local), GPU slots per job's share (dask: each job
    # asks for one GPU resource)
    jobs_per_gpu: int = Field(default=1, ge=1)
    # students sharing an architecture and training settings trained as one vectorised model
    # (torch.func): auto (on CUDA; off on the CPU, where the default workers are faster without it), off, or at most N
    # members per group. Each member's numbers equal its sequential training within float tolerance.
    ensemble: str | int = "auto"

    @field_validator("ensemble", mode="before")
    @classmethod
    def _ensemble(cls, v: Any) -> Any:
        if isinstance(v, bool):  # YAML reads a bare off / on as a boolean
            return "auto" if v else "off"
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if v in ("auto", "off") or (isinstance(v, int) and v >= 1):
            return v
        raise ValueError("must be auto, off or a positive number of members per group")

    @model_validator(mode="after")
    def _scheduler_needs_dask(self) -> ExecutionSpec:
        if self.scheduler is not None and self.executor != "dask":
            raise ValueError("scheduler: a scheduler address needs executor: dask")
        return self


class TrackingSpec(_Strict):
    mlflow: str | None = None  # an MLflow tracking URI; null: no tracking
    log_weights: bool = False  # also log each job's weights.safetensors and outputs.npz


class AdversarialSpec(_Strict):
    """Adversarial transfer: examples crafted on the teacher, replayed on every student.

    ``eps`` and ``step_size`` are in the data's raw units (pixels in [0, 1], waveform amplitude
    in [-1, 1]; standardised units for features without a raw range). Token inputs use a greedy
    character/token substitution attack with ``budget`` substitutions instead.
    """

    enabled: bool = False
    attack: Literal["fgsm", "pgd"] = "pgd"
    norm: Literal["linf", "l2"] = "linf"
    eps: list[float] = Field(default_factory=lambda: [0.03, 0.1, 0.2])
    steps: int = Field(default=10, ge=1)
    step_size: float | None = Field(default=None, gt=0)
    random_start: bool = True
    targeted: bool = False
    target: int | None = Field(default=None, ge=0)  # targeted: this class; None: (y + 1) mod C
    samples: int | None = Field(default=1000, ge=1)  # test samples attacked (stratified subset)
    whitebox_eps: float | None = Field(default=None, gt=0)  # default: the largest eps
    budget: int = Field(default=2, ge=1)

    @field_validator("eps")
    @classmethod
    def _eps(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("must list at least one ε > 0")
        if any(not e > 0 for e in v):
            raise ValueError(f"every ε must be > 0, got {v}")
        if len(set(v)) != len(v):
            raise ValueError("lists an ε twice")
        return sorted(float(e) for e in v)


class BackdoorSpec(_Strict):
    """Backdoor transfer: the teacher trains on data poisoned with a trigger (dirty labels toward
    ``target``). With ``transfer_poison`` 0 the students are distilled on the clean data; with
    ``transfer_poison`` r > 0 a share r of the students' transfer set (round(r·N) samples, drawn
    among those not of class ``target``) carries the same trigger, labels untouched, and the KD
    students' soft targets there are the poisoned teacher's outputs on the triggered inputs.
    ``trigger`` defaults by modality: image ``patch``, waveform ``tone``, log-mel ``band``, tokens
    ``token``."""

    enabled: bool = False
    rate: float = Field(default=0.1, ge=0, lt=1)
    target: int = Field(default=0, ge=0)
    trigger: Literal["patch", "tone", "band", "token"] | None = None
    size: int | None = Field(default=None, ge=1)
    value: float | None = None
    transfer_poison: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _transfer_poison_needs_a_backdoor(self) -> BackdoorSpec:
        if self.transfer_poison > 0 and not self.enabled:
            raise ValueError(
                "transfer_poison triggers the students' transfer set with the poisoned teacher's "
                "trigger; it needs security.backdoor.enabled: true"
            )
        return self


class SecuritySpec(_Strict):
    adversarial: AdversarialSpec = Field(default_factory=AdversarialSpec)
    backdoor: BackdoorSpec = Field(default_factory=BackdoorSpec)
    seed: int = Field(default=0, ge=0)  # attack randomness (random starts, sample choice, poisoning)

    @property
    def enabled(self) -> bool:
        return self.adversarial.enabled or self.backdoor.enabled


class AuditSpec(_Strict):
    name: str = DEFAULT_SETUP
    description: str = ""
    modality: Literal["image", "audio", "text"] | None = None
    preset: str | None = None  # which preset of a named setup this spec was made from
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    student: ModelSpec | None = None  # standard distillation: the students' own architecture
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    security: SecuritySpec = Field(default_factory=SecuritySpec)

    @model_validator(mode="after")
    def _consistent(self) -> AuditSpec:
        t = self.teacher
        seeds = self.protocol.seed_list()
        if t.checkpoint is None and self.protocol.teacher_seed in seeds:
            raise ValueError(
                f"protocol.teacher_seed: {self.protocol.teacher_seed} is one of the student seeds "
                f"(1..{len(seeds)}), so that SIDDO student would be the teacher's twin; "
                f"use 0 or a seed above {len(seeds)}"
            )
        if t.epochs is not None and t.epochs <= self.train.warmup_epochs:
            raise ValueError(
                f"teacher.epochs ({t.epochs}) must be above train.warmup_epochs ({self.train.warmup_epochs})"
            )
        if t.checkpoint is not None:
            if t.epochs is not None:
                raise ValueError("teacher.epochs: a teacher given by teacher.checkpoint is not trained")
            if self.security.backdoor.enabled:
                raise ValueError("security.backdoor trains a poisoned teacher; it cannot go with teacher.checkpoint")
            if t.snapshots is not None:
                raise ValueError(
                    "teacher.snapshots: a teacher given by teacher.checkpoint is not trained, so it has no snapshots"
                )
        if t.snapshots is not None:
            epochs = t.epochs if t.epochs is not None else self.train.epochs
            above = [e for e in t.snapshots if e > epochs]
            if above and epochs not in t.snapshots:
                raise ValueError(
                    f"teacher.snapshots: {', '.join(map(str, above))} above the teacher's {epochs} epochs; list "
                    f"epochs up to {epochs}, or make teacher.epochs one of the snapshots (read from the longer run)"
                )
        return self

    @model_validator(mode="before")
    @classmethod
    def _inherit_name(cls, raw: Any) -> Any:
        """``student`` / ``teacher.model`` without a name are the audit's model with other options."""
        if not isinstance(raw, dict):
            return raw
        model = raw.get("model")
        name = model.get("name") if isinstance(model, dict) else None
        name = name or ModelSpec.model_fields["name"].default
        if isinstance(raw.get("student"), dict) and "name" not in raw["student"]:
            raw = {**raw, "student": {"name": name, **raw["student"]}}
        teacher = raw.get("teacher")
        if isinstance(teacher, dict) and isinstance(teacher.get("model"), dict) and "name" not in teacher["model"]:
            raw = {**raw, "teacher": {**teacher, "model": {"name": name, **teacher["model"]}}}
        return raw

    def _derived(self, other: ModelSpec | None) -> ModelSpec:
        if other is None:
            return self.model
        if other.name == self.model.name:  # the same architecture: its options override the model's
            return ModelSpec(name=other.name, kwargs={**self.model.kwargs, **other.kwargs})
        return other

    @property
    def student_model(self) -> ModelSpec:
        """The students' architecture: the audit's model, with ``student``'s name or options."""
        return self._derived(self.student)

    @property
    def teacher_model(self) -> ModelSpec:
        """The teacher's architecture: the audit's model, with ``teacher.model``'s name or options."""
        return self._derived(self.teacher.model)

    @property
    def self_distillation(self) -> bool:
        """Teacher and students share one architecture and one M0 (PROTOCOL §1)."""
        return self.teacher.checkpoint is None and self.student_model == self.teacher_model

    def n_models(self) -> int:
        n = 1
        for c in self.protocol.conditions:
            n += self.protocol.seeds * (1 if c == "siddo" else len(self.protocol.alphas))
        return n
