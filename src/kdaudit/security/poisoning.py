"""The poisoned teacher's training data, from the ``backdoor`` slice of its job parameters."""

from __future__ import annotations

import dataclasses

from ..data.base import DataBundle
from ..errors import SpecError


def trigger_for(data: DataBundle, params: dict):
    """The backdoor trigger of ``params`` (``trigger``, ``size``, ``value``, ``seed``) for ``data``."""
    from .backdoor import make_trigger

    try:
        return make_trigger(
            data.info, data.input_shape, kind=params.get("trigger"), size=params.get("size"),
            value=params.get("value"), seed=int(params.get("seed", 0)), reference=data.x_train,
        )
    except ValueError as exc:
        raise SpecError(f"security.backdoor: {exc}") from None


def check_security(spec, data: DataBundle) -> None:
    """Fail before anything trains when the security options do not fit the data."""
    sec = spec.security
    if sec.backdoor.enabled:
        bd = sec.backdoor
        if bd.target >= data.num_classes:
            raise SpecError(f"security.backdoor.target: {bd.target} is not a class of {data.name} "
                            f"(0..{data.num_classes - 1})")
        trigger_for(data, {**bd.model_dump(mode="json"), "seed": sec.seed})
    adv = sec.adversarial
    if adv.enabled and adv.targeted and adv.target is not None and adv.target >= data.num_classes:
        raise SpecError(f"security.adversarial.target: {adv.target} is not a class of {data.name} "
                        f"(0..{data.num_classes - 1})")


def poisoned_bundle(data: DataBundle, params: dict) -> DataBundle:
    """A copy of ``data`` whose training split carries the trigger on a ``rate`` share of the
    non-target samples, relabelled as ``target`` (dirty-label poisoning); the test split is clean."""
    from .backdoor import poison

    target = int(params["target"])
    if not 0 <= target < data.num_classes:
        raise SpecError(f"security.backdoor.target: {target} is not a class of {data.name} "
                        f"(0..{data.num_classes - 1})")
    trigger = trigger_for(data, params)
    try:
        x, y, idx = poison(data.x_train, data.y_train, trigger, rate=float(params["rate"]),
                           target=target, seed=int(params.get("seed", 0)))
    except ValueError as exc:
        raise SpecError(f"security.backdoor: {exc}") from None
    info = {**data.info, "poisoned": {"n": int(len(idx)), "trigger": trigger.describe(), "target": target}}
    return dataclasses.replace(data, x_train=x, y_train=y, info=info)
