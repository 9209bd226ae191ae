"""The plan: a spec expands into a DAG of jobs, M0 → teacher → students.

Each job is keyed by a content hash of everything that determines its result: its slice of
the spec, the keys of the jobs it depends on, and the code-relevant versions. Two audits that
need the same model therefore share one job directory, and a changed spec never reuses a
stale result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..config.schema import AuditSpec
from ..errors import SpecError

# Bump when a change to training code changes numbers: old records are then never reused.
CODE_VERSION = "1"


def device_class(name: str) -> str:
    """The class of ``train.device`` a job's key records: ``cpu``, ``cuda`` or ``mps``. A named
    device is taken at its word (a plan for a GPU cluster may be made on a machine without one);
    ``auto`` is CUDA when torch sees a CUDA device here, else the CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name).type


def job_device_class(job: Job) -> str:
    """The device class ``job`` was planned for, as its key records it (``cpu`` where it says none)."""
    if "train" in job.params:
        return str(job.params["train"].get("device", "cpu"))
    return str(job.params.get("device", "cpu"))


def train_identity(spec: AuditSpec) -> dict:
    """The training settings that make a job's result what it is: the spec's ``train`` section
    without its execution details (threads, evaluation batch, checkpoints, the device's index,
    CUDA determinism). The device's class and TF32 enter only where they are not the CPU's
    default, so CPU jobs keep the keys they always had."""
    exclude = {"threads", "eval_batch_size", "checkpoint_every", "device", "deterministic", "tf32"}
    train = spec.train.model_dump(mode="json", exclude=exclude)
    if spec.train.tf32:
        train["tf32"] = True
    device = device_class(spec.train.device)
    if device != "cpu":
        train["device"] = device
    return train


def content_hash(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def result_versions() -> dict:
    """The versions that can change a trained model's numbers; part of every job key."""
    return {"code": CODE_VERSION, "torch": torch.__version__.split("+")[0]}


def versions() -> dict:
    """What a record states it was produced with: the result versions and kdaudit's own."""
    return {"kdaudit": __version__, **result_versions()}


@dataclass(frozen=True)
class Job:
    key: str
    kind: str  # "init" | "teacher" | "student"
    run_id: str
    condition: str  # "init", "teacher", "siddo", "kd", "ls", "rcd-uniform", "rcd-gaussian"
    alpha: float
    seed: int  # data-order seed; for init, the init seed
    deps: tuple[str, ...] = ()
    params: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def trains(self) -> bool:
        return self.kind != "init"

    @property
    def teacher_run(self) -> bool:
        """The one training run whose snapshots are the teachers (``teacher.snapshots``): trained,
        but not one of the audit's models."""
        return self.kind == "teacher" and "snapshots" in self.params


@dataclass
class Plan:
    jobs: list[Job]  # topological order

    def by_key(self) -> dict[str, Job]:
        return {j.key: j for j in self.jobs}

    @property
    def init(self) -> Job:
        """The students' M0."""
        return next(j for j in self.jobs if j.kind == "init" and j.run_id == "m0")

    @property
    def teacher(self) -> Job:
        """The audit's teacher (with ``teacher.snapshots``: its snapshot, not the run)."""
        return next(j for j in self.jobs if j.kind == "teacher" and not j.teacher_run)

    @property
    def students(self) -> list[Job]:
        return [j for j in self.jobs if j.kind == "student"]

    @property
    def trained(self) -> list[Job]:
        """The audit's models: teacher and students (not M0, not a teacher run of snapshots)."""
        return [j for j in self.jobs if j.trains and not j.teacher_run]


def _fmt_alpha(a: float) -> str:
    return f"{a:g}"


def checkpoint_digest(path: str | Path) -> str:
    """SHA-256 of a teacher checkpoint file: part of the teacher's key, so a changed file retrains."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SpecError(f"teacher.checkpoint: file not found: {p}")
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _init_job(data: dict, model: dict, init_seed: int, ver: dict, run_id: str) -> Job:
    params = {"data": data, "model": model, "init_seed": init_seed}
    return Job(
        key=content_hash({"kind": "init", **params, "versions": ver}),
        kind="init",
        run_id=run_id,
        condition="init",
        alpha=0.0,
        seed=init_seed,
        params=params,
    )


def _teacher_run(t_params: dict, snapshots: list[int], t_deps: tuple[str, ...], ver: dict) -> Job:
    """``teacher.snapshots``: the teacher's one training run, to the last snapshot (or further, to
    the teacher's own epochs), saving its state at every snapshot epoch. Its key depends on the run's
    length and the snapshot list, not on which snapshot a point reads, so every point of a
    ``teacher.epochs`` sweep with the same snapshots shares it."""
    epochs = max(int(t_params["train"]["epochs"]), max(snapshots))
    params = {**t_params, "train": {**t_params["train"], "epochs": epochs}, "snapshots": list(snapshots)}
    return Job(
        key=content_hash({"kind": "teacher", **params, "deps": list(t_deps), "versions": ver}),
        kind="teacher",
        run_id="teacher-run",
        condition="teacher",
        alpha=0.0,
        seed=int(t_params["seed"]),
        deps=t_deps,
        params=params,
    )


def _student_extras(spec: AuditSpec, t_model: dict) -> dict[str, Any]:
    """The students' parameters that come from the security and hint sections (None when off)."""
    bd_spec = spec.security.backdoor
    transfer = None
    if bd_spec.enabled and bd_spec.transfer_poison > 0:  # every student's inputs carry the trigger
        transfer = {
            "rate": bd_spec.transfer_poison,
            "target": bd_spec.target,
            "trigger": bd_spec.trigger,
            "size": bd_spec.size,
            "value": bd_spec.value,
            "seed": spec.security.seed,
        }
    hint = None
    h = spec.protocol.hint
    if h is not None:
        hint = {
            "weight": h.weight,
            "student_layer": h.student_layer,
            "teacher_layer": h.teacher_layer or h.student_layer,
            "teacher_model": t_model,
        }
    return {"transfer": transfer, "hint": hint}


def _student_job(
    spec: AuditSpec,
    cond: str,
    alpha: float,
    seed: int,
    base: dict[str, Any],
    shared: dict[str, Any],
    init: Job,
    teacher: Job,
    ver: dict[str, str],
) -> Job:
    """One student: its parameters (what its key is made of), dependencies and run id."""
    proto = spec.protocol
    p: dict[str, Any] = {**base, "seed": seed, "condition": cond, "alpha": alpha}
    deps: tuple[str, ...] = (init.key,)
    if cond != "siddo":
        p.update(temperature=proto.temperature, kd_loss=proto.kd_loss, t2_scaling=proto.t2_scaling)
        if shared["hint"] is not None and cond != "ls":  # the virtual teacher has no features
            p["hint"] = shared["hint"]
    if cond.startswith("rcd-") and proto.rcd_noise == "shared":
        p["rcd_noise"] = "shared"  # per_seed keeps the keys it always had
    if cond == "ls":
        p["ls"] = {"a": proto.ls.a}
    if shared["transfer"] is not None:  # absent at 0: the keys stay as they were
        p["transfer_poison"] = dict(shared["transfer"])
    if cond == "kd" or (cond == "ls" and proto.ls.a is None):  # a from the teacher's outputs
        deps = (init.key, teacher.key)
    run_id = f"{cond}-s{seed:02d}" if cond == "siddo" else f"{cond}-a{_fmt_alpha(alpha)}-s{seed:02d}"
    return Job(
        key=content_hash({"kind": "student", **p, "deps": list(deps), "versions": ver}),
        kind="student",
        run_id=run_id,
        condition=cond,
        alpha=float(alpha),
        seed=seed,
        deps=deps,
        params=p,
    )


def build_plan(spec: AuditSpec) -> Plan:
    """M0 (one per architecture) → teacher → students.

    Self-distillation: teacher and students start from one M0. Standard distillation (another
    student architecture, or a teacher given as a checkpoint): the students start from their own
    M0 and the teacher from its own (or from nothing, when it is loaded).

    ``teacher.snapshots``: M0 → teacher run ("teacher-run", trained once to the last snapshot,
    saving its state at each) → teacher (a snapshot job: the run's state at the teacher's epochs,
    read from the run's directory, nothing trained) → students. Without it the keys are unchanged.
    """
    ver = result_versions()
    data = spec.data.model_dump(mode="json")
    s_model = spec.student_model.model_dump(mode="json")
    t_model = spec.teacher_model.model_dump(mode="json")
    # execution details that do not change a result are not part of its identity
    train = train_identity(spec)
    proto = spec.protocol

    init = _init_job(data, s_model, proto.init_seed, ver, "m0")
    jobs = [init]
    t_params: dict = {"data": data, "model": t_model, "seed": proto.teacher_seed, "condition": "teacher", "alpha": 0.0}
    if spec.teacher.checkpoint is not None:
        t_params["checkpoint"] = {"sha256": checkpoint_digest(spec.teacher.checkpoint)}
        if device_class(spec.train.device) != "cpu":  # its logits are computed there: part of its key
            t_params["device"] = device_class(spec.train.device)
        t_deps: tuple[str, ...] = ()
    else:
        t_train = dict(train)
        if spec.teacher.epochs is not None:
            t_train["epochs"] = spec.teacher.epochs
        t_params["train"] = t_train
        if spec.self_distillation:
            t_deps = (init.key,)
        else:
            t_init = _init_job(data, t_model, proto.init_seed, ver, "teacher-m0")
            jobs.append(t_init)
            t_deps = (t_init.key,)
        if spec.security.backdoor.enabled:  # a poisoned teacher: its key (and the KD students') differ
            # transfer_poison concerns the students' data only: the teacher's key is the same
            bd = spec.security.backdoor.model_dump(mode="json", exclude={"enabled", "transfer_poison"})
            t_params["backdoor"] = {**bd, "seed": spec.security.seed}
    if spec.teacher.snapshots is not None:  # the teacher is a snapshot of one longer run
        run = _teacher_run(t_params, spec.teacher.snapshots, t_deps, ver)
        jobs.append(run)
        t_params = {
            **t_params,
            "snapshot_of": {"epochs": run.params["train"]["epochs"], "at": t_params["train"]["epochs"]},
        }
        t_deps = (run.key,)
    teacher = Job(
        key=content_hash({"kind": "teacher", **t_params, "deps": list(t_deps), "versions": ver}),
        kind="teacher",
        run_id="teacher",
        condition="teacher",
        alpha=0.0,
        seed=proto.teacher_seed,
        deps=t_deps,
        params=t_params,
    )
    if spec.teacher.checkpoint is not None:  # where to read it; not part of its identity
        teacher.params["checkpoint"]["path"] = str(Path(spec.teacher.checkpoint).expanduser().resolve())
    jobs.append(teacher)
    base = {"data": data, "model": s_model, "train": train}
    shared = _student_extras(spec, t_model)
    for cond in proto.conditions:
        alphas = [0.0] if cond == "siddo" else proto.alphas
        for alpha in alphas:
            for seed in proto.seed_list():
                jobs.append(_student_job(spec, cond, alpha, seed, base, shared, init, teacher, ver))
    return Plan(jobs)
