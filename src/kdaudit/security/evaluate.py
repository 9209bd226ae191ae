"""Security metrics of every model of an audit: adversarial transfer and backdoor inheritance.

After the plan's models are trained, :func:`evaluate_security` loads each one from the store and
measures, on the same test samples for all of them:

- **adversarial transfer** (``security.adversarial``): adversarial examples are crafted once on
  the teacher (FGSM or PGD in the model's input space, ε in the data's raw units, clipped to the
  valid range; for token inputs a greedy character/token substitution attack with ε read as the
  number of substitutions). Each student is scored on the *transferable* examples — those the
  teacher classified right and the attack made it get wrong. With T the transferable examples at ε
  and ``n(·)`` a count over T:

  - ``adv_fooled@ε`` = n(student wrong on the adversarial input) / n(T): the student is fooled too,
    whether or not it was already wrong on the clean input;
  - ``adv_follows@ε`` = n(student outputs the teacher's adversarial label) / n(T): the teacher's
    error copied;
  - ``adv_flipped@ε`` = n(student right on the clean input and wrong on the adversarial one) /
    n(student right on the clean input): the attack changed the student's own correct prediction
    (fooling as in Ojha et al., 2023); its clean errors count neither above nor below the line.
    NaN when the student is right on none of T;
  - ``adv_accuracy@ε`` = 1 − ``adv_fooled@ε``.

  All of them are NaN when T is empty. ``whitebox_accuracy@ε`` is the student's accuracy under the
  same attack crafted on itself, a reference for its own robustness.
- **backdoor inheritance** (``security.backdoor``): the teacher was trained on poisoned data
  (:mod:`kdaudit.security.poisoning`) and the students' transfer set is clean or, with
  ``transfer_poison``, partly triggered (``meta["backdoor"]["transfer"]`` says which case and how
  many samples); every model is scored on the triggered test inputs whose
  true class is not the target: ``backdoor_asr`` (classified as the target) and
  ``clean_accuracy`` on the untouched test set.

Results are cached per model under ``<audit>/security/`` keyed by the job and the security spec,
so a rerun or a crash loses nothing already measured. A cached file that lacks one of the metrics
now expected (e.g. written before ``adv_flipped`` existed) is measured again and overwritten: the
cache holds only the per-model rates, from which a new rate cannot be derived.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..analysis.attack_transfer import success_rate, transfer_rates, transferable_mask
from ..config.schema import AuditSpec
from ..data.base import DataBundle, subset_indices
from ..execute.train import make_model, predict
from ..io import write_text
from ..plan.jobs import Job, Plan, content_hash, result_versions
from ..store import JobStore
from .backdoor import attack_success_rate, transfer_indices, triggered_test_set
from .gradient import attack_batched, fgsm, pgd
from .poisoning import trigger_for
from .space import AttackSpace, attack_space
from .substitution import char_substitution

EVAL_BATCH = 512


@dataclass
class SecurityResult:
    runs: pd.DataFrame  # one row per model (teacher first): run_id, role, condition, alpha, seed, metrics
    metrics: list[str]  # the metric columns, in display order
    meta: dict = field(default_factory=dict)  # what was attacked and how, for the report


def eps_label(eps: float) -> str:
    """An ε as it appears in metric names (``adv_fooled@0.1``)."""
    return f"{eps:g}"


def adversarial_metrics(eps_list: list[float], whitebox_eps: float) -> list[str]:
    """The adversarial metric columns for the levels ``eps_list``, in display order."""
    cols = []
    for e in eps_list:
        lab = eps_label(e)
        cols += [f"adv_fooled@{lab}", f"adv_follows@{lab}", f"adv_flipped@{lab}", f"adv_accuracy@{lab}"]
    return cols + [f"whitebox_accuracy@{eps_label(whitebox_eps)}"]


def _load_model(job: Job, store: JobStore, data: DataBundle) -> torch.nn.Module:
    model = make_model(job.params, data)
    model.load_state_dict(store.load_weights(job.key))
    return model.eval()


def _logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    return predict(model, x, EVAL_BATCH)


class _Adversarial:
    """The attack of ``security.adversarial`` on one dataset: crafted on the teacher once."""

    def __init__(self, spec: AuditSpec, data: DataBundle, teacher: torch.nn.Module) -> None:
        adv = spec.security.adversarial
        self.spec = adv
        self.seed = spec.security.seed
        tokens = not torch.is_floating_point(data.x_test)
        n = len(data.x_test)
        self.idx = subset_indices(n, adv.samples, self.seed + 7, labels=data.y_test.numpy())
        self.x = data.x_test[self.idx]
        self.y = data.y_test[self.idx]
        if tokens:
            vocab = int(data.model_args().get("vocab_size", int(data.x_test.max()) + 1))
            # the most frequent real tokens (ids sorted by train frequency; 0 pad, 1 unk)
            self.candidates = torch.arange(2, min(vocab, 2 + 64))
            self.pad_id = int(data.model_args().get("pad_id", 0))
            self.levels = [float(b) for b in range(1, adv.budget + 1)]
            self.whitebox = float(adv.budget)
            self.space: AttackSpace | None = None
            self.how = (
                f"greedy token substitution, up to {adv.budget} substitutions among the "
                f"{len(self.candidates)} most frequent tokens (ε = number of substitutions)"
            )
        else:
            self.space = attack_space(data.info, data.x_test)
            self.levels = list(adv.eps)
            self.whitebox = float(adv.whitebox_eps or max(adv.eps))
            kind = "FGSM" if adv.attack == "fgsm" else f"PGD-{adv.steps}"
            self.how = (
                f"{kind} ({adv.norm.upper()}, {'targeted' if adv.targeted else 'untargeted'}"
                f"{', random start' if adv.attack == 'pgd' and adv.random_start else ''}); "
                f"valid range: {self.space.how}"
            )
        num_classes = data.num_classes
        self.target: torch.Tensor | None = None
        if adv.targeted:
            t = torch.full_like(self.y, adv.target) if adv.target is not None else (self.y + 1) % num_classes
            self.target = t
        self.teacher_clean = _logits(teacher, self.x)
        self.adv_inputs: dict[float, torch.Tensor] = {}
        self.teacher_adv: dict[float, np.ndarray] = {}
        for level in self.levels:
            xa = self.attack(teacher, level)
            self.adv_inputs[level] = xa
            self.teacher_adv[level] = _logits(teacher, xa)

    def attack(self, model: torch.nn.Module, level: float) -> torch.Tensor:
        """The adversarial versions of the attacked samples at ``level``, crafted on ``model``."""
        adv = self.spec
        space = self.space
        if space is None:  # token inputs
            return char_substitution(
                model,
                self.x,
                self.y,
                budget=int(level),
                candidates=self.candidates,
                pad_id=self.pad_id,
                targeted=adv.targeted,
                target=self.target,
            )
        eps = space.eps(level)
        common = dict(norm=adv.norm, targeted=adv.targeted, lo=space.lo, hi=space.hi, target=self.target)
        if adv.attack == "fgsm":
            return attack_batched(fgsm, model, self.x, self.y, EVAL_BATCH, eps=eps, **common)
        step = space.eps(adv.step_size) if adv.step_size else None
        gen = torch.Generator().manual_seed(self.seed)
        return attack_batched(
            pgd,
            model,
            self.x,
            self.y,
            EVAL_BATCH,
            eps=eps,
            steps=adv.steps,
            step_size=step,
            random_start=adv.random_start,
            generator=gen,
            **common,
        )

    def measure(self, model: torch.nn.Module, is_teacher: bool) -> dict[str, float]:
        """The adversarial metrics of one model (the teacher's own adversarial examples for the teacher)."""
        y = self.y.numpy()
        row: dict[str, float] = {}
        clean = self.teacher_clean if is_teacher else _logits(model, self.x)
        for level in self.levels:
            mask = transferable_mask(self.teacher_clean, self.teacher_adv[level], y)
            logits = self.teacher_adv[level] if is_teacher else _logits(model, self.adv_inputs[level])
            r = transfer_rates(logits, self.teacher_adv[level].argmax(1), y, clean, mask=mask)
            lab = eps_label(level)
            row[f"adv_fooled@{lab}"] = r["fooled"]
            row[f"adv_follows@{lab}"] = r["follows_teacher"]
            # over the transferable examples the model got right when clean (NaN if none)
            row[f"adv_flipped@{lab}"] = r["fooled_of_correct"]
            row[f"adv_accuracy@{lab}"] = r["adv_accuracy"]
        xw = (
            self.adv_inputs[self.whitebox]
            if is_teacher and self.whitebox in self.adv_inputs
            else self.attack(model, self.whitebox)
        )
        row[f"whitebox_accuracy@{eps_label(self.whitebox)}"] = 1.0 - success_rate(_logits(model, xw), y)
        return row

    def facts(self) -> dict:
        """What was attacked and how, for the report."""
        y = self.y.numpy()
        correct = self.teacher_clean.argmax(1) == y
        return {
            "attack": self.how,
            "levels": self.levels,
            "whitebox_level": self.whitebox,
            "n_attacked": int(len(y)),
            "teacher_clean_accuracy": float(correct.mean()),
            "teacher_success": {
                eps_label(e): float((self.teacher_adv[e].argmax(1)[correct] != y[correct]).mean())
                if correct.any()
                else math.nan
                for e in self.levels
            },
            "n_transferable": {
                eps_label(e): int(((self.teacher_adv[e].argmax(1) != y) & correct).sum()) for e in self.levels
            },
        }


class _Backdoor:
    """The backdoor of ``security.backdoor``: the poisoned teacher's trigger on the test inputs."""

    def __init__(self, plan: Plan, data: DataBundle) -> None:
        params = plan.teacher.params["backdoor"]
        self.target = int(params["target"])
        self.trigger = trigger_for(data, params)
        self.x, self.y_true, _ = triggered_test_set(data.x_test, data.y_test, self.trigger, self.target)
        self.params = params
        # the students' transfer set: clean, or a transfer_poison share triggered (same for all)
        self.transfer = next(
            (j.params["transfer_poison"] for j in plan.students if "transfer_poison" in j.params), None
        )
        self.transfer_facts = {
            "case": "clean",
            "transfer_poison": 0.0,
            "n_triggered": 0,
            "n_train": int(len(data.x_train)),
            "description": "Students were distilled on the clean training data.",
        }
        if self.transfer is not None:
            r = float(self.transfer["rate"])
            n = len(transfer_indices(data.y_train, rate=r, target=self.target, seed=int(self.transfer["seed"])))
            self.transfer_facts = {
                "case": "transfer_poison",
                "transfer_poison": r,
                "n_triggered": n,
                "n_train": int(len(data.x_train)),
                "selection": f"samples not of class {self.target}",
                "description": (
                    f"Students were distilled on a transfer set where {n} of {len(data.x_train)} "
                    f"inputs (transfer_poison = {r:g}, drawn among samples not of class "
                    f"{self.target}) carry the trigger with their true labels; the KD students' "
                    "soft targets on them are the poisoned teacher's outputs on the triggered "
                    "inputs."
                ),
            }

    def measure(self, model: torch.nn.Module, clean_logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Backdoor ASR and clean accuracy of one model."""
        return {
            "backdoor_asr": attack_success_rate(_logits(model, self.x), self.y_true.numpy(), self.target),
            "clean_accuracy": float((clean_logits.argmax(1) == labels).mean()),
        }

    def facts(self) -> dict:
        """The trigger and the transfer set, for the report."""
        return {
            "trigger": self.trigger.describe(),
            "target": self.target,
            "rate": self.params["rate"],
            "n_triggered": int(len(self.x)),
            "transfer": dict(self.transfer_facts),
        }


def _cached(path: Path, metrics: list[str]) -> dict | None:
    """The cached metrics of one model, or None when absent, unreadable or without one of ``metrics``."""
    if not path.exists():
        return None
    try:
        row = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(row, dict) or any(m not in row for m in metrics):
        return None  # an older cache without a metric added since: measure again
    return row


def evaluate_security(
    spec: AuditSpec,
    plan: Plan,
    store: JobStore,
    data: DataBundle,
    out_dir: Path,
    on_model: Callable[[int, int, str], None] | None = None,
) -> SecurityResult | None:
    """Measure every trained model (teacher first); None when ``security`` is not enabled."""
    sec = spec.security
    if not sec.enabled:
        return None
    cache = out_dir / "security"
    cache.mkdir(parents=True, exist_ok=True)
    # transfer_poison changes the students' keys (in the file names) and not the teacher: not in the tag
    tag = content_hash(
        {
            "security": sec.model_dump(mode="json", exclude={"backdoor": {"transfer_poison"}}),
            "data": data.fingerprint(),
            "versions": result_versions(),
        }
    )
    jobs = plan.trained
    teacher = _load_model(plan.teacher, store, data)
    attack = _Adversarial(spec, data, teacher) if sec.adversarial.enabled else None
    backdoor = _Backdoor(plan, data) if sec.backdoor.enabled else None
    metrics: list[str] = []
    if attack is not None:
        metrics += adversarial_metrics(attack.levels, attack.whitebox)
    if backdoor is not None:
        metrics += ["backdoor_asr", "clean_accuracy"]
    rows = []
    for i, job in enumerate(jobs):
        path = cache / f"{job.key}-{tag}.json"
        row = _cached(path, metrics)
        if row is None:
            model = teacher if job.kind == "teacher" else _load_model(job, store, data)
            row = {}
            if attack is not None:
                row.update(attack.measure(model, job.kind == "teacher"))
            if backdoor is not None:
                out = store.load_outputs(job.key)
                row.update(backdoor.measure(model, out["test_logits"], out["test_labels"]))
            write_text(path, json.dumps(row))
        rows.append(
            {
                "run_id": job.run_id,
                "role": "teacher" if job.kind == "teacher" else "student",
                "condition": job.condition,
                "alpha": job.alpha if job.kind == "student" else math.nan,
                "seed": job.seed,
                **row,
            }
        )
        if on_model is not None:
            on_model(i + 1, len(jobs), job.run_id)
    runs = pd.DataFrame(rows)
    meta = {}
    if attack is not None:
        meta["adversarial"] = attack.facts()
    if backdoor is not None:
        meta["backdoor"] = backdoor.facts()
    return SecurityResult(
        runs=runs[["run_id", "role", "condition", "alpha", "seed", *metrics]], metrics=metrics, meta=meta
    )
