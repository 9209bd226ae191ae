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

import torch

from .. import __version__
from ..config.spec import AuditSpec

# Bump when a change to training code changes numbers: old records are then never reused.
CODE_VERSION = "1"


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
    condition: str  # "init", "teacher", "siddo", "kd", "rcd-uniform", "rcd-gaussian"
    alpha: float
    seed: int  # data-order seed; for init, the init seed
    deps: tuple[str, ...] = ()
    params: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def trains(self) -> bool:
        return self.kind != "init"


@dataclass
class Plan:
    jobs: list[Job]  # topological order

    def by_key(self) -> dict[str, Job]:
        return {j.key: j for j in self.jobs}

    @property
    def init(self) -> Job:
        return next(j for j in self.jobs if j.kind == "init")

    @property
    def teacher(self) -> Job:
        return next(j for j in self.jobs if j.kind == "teacher")

    @property
    def students(self) -> list[Job]:
        return [j for j in self.jobs if j.kind == "student"]

    @property
    def trained(self) -> list[Job]:
        return [j for j in self.jobs if j.trains]


def _fmt_alpha(a: float) -> str:
    return f"{a:g}"


def build_plan(spec: AuditSpec) -> Plan:
    ver = result_versions()
    data = spec.data.model_dump(mode="json")
    model = spec.model.model_dump(mode="json")
    # execution details that do not change a result are not part of its identity
    train = spec.train.model_dump(mode="json", exclude={"threads", "eval_batch_size", "checkpoint_every"})
    proto = spec.protocol

    init_params = {"data": data, "model": model, "init_seed": proto.init_seed}
    init = Job(
        key=content_hash({"kind": "init", **init_params, "versions": ver}),
        kind="init", run_id="m0", condition="init", alpha=0.0, seed=proto.init_seed,
        params=init_params,
    )
    base = {"data": data, "model": model, "train": train}
    t_params = {**base, "seed": proto.teacher_seed, "condition": "teacher", "alpha": 0.0}
    if spec.security.backdoor.enabled:  # a poisoned teacher: its key (and the KD students') differ
        bd = spec.security.backdoor.model_dump(mode="json", exclude={"enabled"})
        t_params["backdoor"] = {**bd, "seed": spec.security.seed}
    teacher = Job(
        key=content_hash({"kind": "teacher", **t_params, "deps": [init.key], "versions": ver}),
        kind="teacher", run_id="teacher", condition="teacher", alpha=0.0,
        seed=proto.teacher_seed, deps=(init.key,), params=t_params,
    )
    jobs = [init, teacher]
    for cond in proto.conditions:
        alphas = [0.0] if cond == "siddo" else proto.alphas
        for alpha in alphas:
            for seed in proto.seed_list():
                p = {**base, "seed": seed, "condition": cond, "alpha": alpha}
                deps: tuple[str, ...] = (init.key,)
                if cond != "siddo":
                    p.update(temperature=proto.temperature, kd_loss=proto.kd_loss,
                             t2_scaling=proto.t2_scaling)
                if cond == "kd":
                    deps = (init.key, teacher.key)
                run_id = f"{cond}-s{seed:02d}" if cond == "siddo" else f"{cond}-a{_fmt_alpha(alpha)}-s{seed:02d}"
                jobs.append(Job(
                    key=content_hash({"kind": "student", **p, "deps": list(deps), "versions": ver}),
                    kind="student", run_id=run_id, condition=cond, alpha=float(alpha), seed=seed,
                    deps=deps, params=p,
                ))
    return Plan(jobs)
