"""The poisoned teacher's training data, from the ``backdoor`` slice of its job parameters, and
the students' triggered transfer set, from the ``transfer_poison`` slice of theirs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from ..config.schema import AuditSpec
from ..data.base import DataBundle
from ..errors import SpecError
from ..execute.train import make_model, predict
from ..store import JobStore
from .backdoor import poison, poison_transfer
from .triggers import Trigger, make_trigger


def trigger_for(data: DataBundle, params: dict) -> Trigger:
    """The backdoor trigger of ``params`` (``trigger``, ``size``, ``value``, ``seed``) for ``data``."""
    try:
        return make_trigger(
            data.info,
            data.input_shape,
            kind=params.get("trigger"),
            size=params.get("size"),
            value=params.get("value"),
            seed=int(params.get("seed", 0)),
            reference=data.x_train,
        )
    except ValueError as exc:
        raise SpecError(f"security.backdoor: {exc}") from None


def check_security(spec: AuditSpec, data: DataBundle) -> None:
    """Fail before anything trains when the security options do not fit the data."""
    sec = spec.security
    if sec.backdoor.enabled:
        bd = sec.backdoor
        if bd.target >= data.num_classes:
            raise SpecError(
                f"security.backdoor.target: {bd.target} is not a class of {data.name} (0..{data.num_classes - 1})"
            )
        trigger_for(data, {**bd.model_dump(mode="json"), "seed": sec.seed})
        if bd.transfer_poison > 0:
            if spec.protocol.hint is not None:
                raise SpecError(
                    "security.backdoor.transfer_poison cannot go with protocol.hint (the hint "
                    "targets are the teacher's features on the clean inputs)"
                )
            transfer_bundle(
                data,
                {
                    "rate": bd.transfer_poison,
                    "target": bd.target,
                    "trigger": bd.trigger,
                    "size": bd.size,
                    "value": bd.value,
                    "seed": sec.seed,
                },
            )
    adv = sec.adversarial
    if adv.enabled and adv.targeted and adv.target is not None and adv.target >= data.num_classes:
        raise SpecError(
            f"security.adversarial.target: {adv.target} is not a class of {data.name} (0..{data.num_classes - 1})"
        )


def _target_and_trigger(data: DataBundle, params: dict) -> tuple[int, Trigger]:
    target = int(params["target"])
    if not 0 <= target < data.num_classes:
        raise SpecError(f"security.backdoor.target: {target} is not a class of {data.name} (0..{data.num_classes - 1})")
    return target, trigger_for(data, params)


def poisoned_bundle(data: DataBundle, params: dict) -> DataBundle:
    """A copy of ``data`` whose training split carries the trigger on a ``rate`` share of the
    non-target samples, relabelled as ``target`` (dirty-label poisoning); the test split is clean."""
    target, trigger = _target_and_trigger(data, params)
    try:
        x, y, idx = poison(
            data.x_train,
            data.y_train,
            trigger,
            rate=float(params["rate"]),
            target=target,
            seed=int(params.get("seed", 0)),
        )
    except ValueError as exc:
        raise SpecError(f"security.backdoor: {exc}") from None
    info = {**data.info, "poisoned": {"n": int(len(idx)), "trigger": trigger.describe(), "target": target}}
    return dataclasses.replace(data, x_train=x, y_train=y, info=info)


def transfer_bundle(data: DataBundle, params: dict) -> DataBundle:
    """A copy of ``data`` whose training split is the students' transfer set with triggered inputs:
    ``round(rate·N)`` samples not of class ``target`` carry the trigger of ``params`` (the teacher's,
    see :func:`kdaudit.security.backdoor.poison_transfer`); labels and the test split are untouched.
    ``info["transfer_poisoned"]`` states the rate, the count and the sorted triggered rows."""
    target, trigger = _target_and_trigger(data, params)
    try:
        x, idx = poison_transfer(
            data.x_train,
            data.y_train,
            trigger,
            rate=float(params["rate"]),
            target=target,
            seed=int(params.get("seed", 0)),
        )
    except ValueError as exc:
        raise SpecError(f"security.backdoor: {exc}") from None
    info = {
        **data.info,
        "transfer_poisoned": {
            "rate": float(params["rate"]),
            "n_triggered": int(len(idx)),
            "n_train": int(len(x)),
            "selection": f"samples not of class {target}",
            "trigger": trigger.describe(),
            "indices": idx,
        },
    }
    return dataclasses.replace(data, x_train=x, info=info)


_TEACHER_TRANSFER_LOGITS: dict[tuple, np.ndarray] = {}


def teacher_train_logits(
    store: JobStore, teacher_key: str, data: DataBundle, transfer: dict | None, eval_batch_size: int = 2048
) -> np.ndarray:
    """The soft targets of a KD student: the teacher's logits on the student's training inputs.

    Without ``transfer`` (a ``transfer_poison`` slice): the teacher's stored ``train_logits``, on
    the clean inputs. With it: the same table, except that the rows of the triggered samples are
    the teacher's logits on the *triggered* inputs, predicted here from the teacher's saved weights
    (the clean rows of the transfer set are the clean inputs, so their stored logits stand). The
    table is computed once per teacher and transfer slice in this process (one held at a time);
    the teacher's own job and outputs are untouched.
    """
    if transfer is None:
        return store.load_outputs(teacher_key)["train_logits"]
    cache_key = (teacher_key, json.dumps(transfer, sort_keys=True, default=str), data.fingerprint())
    if cache_key not in _TEACHER_TRANSFER_LOGITS:
        logits = np.array(store.load_outputs(teacher_key)["train_logits"], dtype=np.float32, copy=True)
        triggered = transfer_bundle(data, transfer)
        idx = triggered.info["transfer_poisoned"]["indices"]
        if len(idx):
            teacher = make_model(store.load_record(teacher_key)["params"], data)
            teacher.load_state_dict(store.load_weights(teacher_key))
            x = triggered.x_train[torch.from_numpy(idx)]
            logits[idx] = predict(teacher, x, eval_batch_size).astype(np.float32)
        _TEACHER_TRANSFER_LOGITS.clear()  # hold one table at a time
        _TEACHER_TRANSFER_LOGITS[cache_key] = logits
    return _TEACHER_TRANSFER_LOGITS[cache_key]
