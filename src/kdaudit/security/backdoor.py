"""Dirty-label data poisoning, for auditing inherited backdoors.

Threat model: a teacher of unknown provenance was trained on poisoned data, so inputs that
carry a small trigger (:mod:`kdaudit.security.triggers`) are classified as an attacker's
``target`` class. Students are distilled on *clean* data, or (``transfer_poison``,
:func:`poison_transfer`) on a transfer set where a share of the inputs carry the same trigger
with their true labels, as in scraped distillation data; the audit asks whether they inherit the
backdoor, measured by the attack success rate (ASR) on triggered test inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .triggers import BackdoorError, Trigger

MODES = ("replace", "append")


# ---------------------------------------------------------------------------- poisoning


def poison(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    trigger: Trigger,
    *,
    rate: float,
    target: int,
    seed: int,
    mode: str = "replace",
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Dirty-label poisoning: ``round(rate·N)`` non-target samples get the trigger and label ``target``.

    The samples are drawn without replacement by a seeded numpy Generator among those whose
    label is not ``target``. In ``replace`` mode (default) the poisoned copies replace their
    originals, so the set keeps its size and ``rate`` is exactly the poisoned share; in
    ``append`` mode they are added at the end and the originals stay. Returns new tensors
    (the inputs are untouched) and the sorted rows of the returned set that carry the trigger.
    ``num_classes`` (default: largest label + 1) bounds ``target``.
    """
    y = torch.as_tensor(y_train)
    if len(x_train) != len(y):
        raise InputError(f"poison: {len(x_train)} inputs but {len(y)} labels")
    if not 0 <= rate < 1:
        raise BackdoorError(f"poison: rate must lie in [0, 1), got {rate}")
    if mode not in MODES:
        raise BackdoorError(f"poison: mode must be one of {', '.join(MODES)}, got {mode!r}")
    k_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if not 0 <= int(target) < k_classes or int(target) != target:
        raise BackdoorError(f"poison: target must be a class in [0, {k_classes}), got {target}")
    n = len(y)
    count = int(round(rate * n))
    candidates = np.flatnonzero(y.cpu().numpy() != target)
    if count > len(candidates):
        raise BackdoorError(
            f"poison: rate {rate} asks for {count} samples but only {len(candidates)} are not of class {target}"
        )
    x_out, y_out = x_train.clone(), y.clone()
    if count == 0:
        return x_out, y_out, np.empty(0, dtype=np.int64)
    picked = np.sort(np.random.default_rng(seed).choice(candidates, size=count, replace=False)).astype(np.int64)
    idx = torch.from_numpy(picked).to(x_out.device)
    triggered = trigger.apply(x_train[idx])
    if mode == "replace":
        x_out[idx] = triggered
        y_out[idx.to(y_out.device)] = int(target)
        return x_out, y_out, picked
    x_out = torch.cat([x_out, triggered])
    y_out = torch.cat([y_out, torch.full((count,), int(target), dtype=y_out.dtype, device=y_out.device)])
    return x_out, y_out, np.arange(n, n + count, dtype=np.int64)


# the transfer set's draw: a generator of its own, independent of the poisoning draw of ``seed``
TRANSFER_STREAM = 1


def transfer_indices(y_train: torch.Tensor, *, rate: float, target: int, seed: int) -> np.ndarray:
    """The rows of the students' transfer set that carry the trigger (sorted).

    ``round(rate·N)`` of the N samples, drawn without replacement among those whose label is not
    ``target`` (a triggered sample of the target class would say nothing about the backdoor, and
    the ASR ignores that class too), by a numpy Generator seeded with ``[seed, TRANSFER_STREAM]``:
    deterministic in ``seed`` and independent of :func:`poison`'s draw from the same seed.
    """
    y = torch.as_tensor(y_train)
    if not 0 <= rate < 1:
        raise BackdoorError(f"transfer_poison must lie in [0, 1), got {rate}")
    count = int(round(rate * len(y)))
    candidates = np.flatnonzero(y.cpu().numpy() != target)
    if count > len(candidates):
        raise BackdoorError(
            f"transfer_poison {rate} asks for {count} triggered samples but only "
            f"{len(candidates)} are not of class {target}"
        )
    if count == 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng([int(seed), TRANSFER_STREAM])
    return np.sort(rng.choice(candidates, size=count, replace=False)).astype(np.int64)


def poison_transfer(
    x_train: torch.Tensor, y_train: torch.Tensor, trigger: Trigger, *, rate: float, target: int, seed: int
) -> tuple[torch.Tensor, np.ndarray]:
    """The students' transfer set when the distillation data were collected with triggered inputs
    in them: a copy of ``x_train`` whose rows :func:`transfer_indices` carry the trigger, and those
    rows. Labels are not changed (the students' cross-entropy still sees the true labels); every
    other row is the clean input, byte for byte."""
    if len(x_train) != len(y_train):
        raise InputError(f"poison_transfer: {len(x_train)} inputs but {len(y_train)} labels")
    picked = transfer_indices(y_train, rate=rate, target=target, seed=seed)
    x_out = x_train.clone()
    if len(picked):
        idx = torch.from_numpy(picked).to(x_out.device)
        x_out[idx] = trigger.apply(x_train[idx])
    return x_out, picked


# ---------------------------------------------------------------------------- evaluation


def triggered_test_set(
    x_test: torch.Tensor, y_test: torch.Tensor, trigger: Trigger, target: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The triggered test inputs whose label is not ``target``, their true labels, and the mask
    (over the test set) that selected them."""
    y = torch.as_tensor(y_test)
    if len(x_test) != len(y):
        raise InputError(f"triggered_test_set: {len(x_test)} inputs but {len(y)} labels")
    mask = y != target
    return trigger.apply(x_test[mask.to(x_test.device)]), y[mask], mask


def attack_success_rate(logits: np.ndarray, y_true: np.ndarray, target: int) -> float:
    """Share of triggered inputs whose true label is not ``target`` that are classified as ``target``.

    ``logits`` are the model outputs (N×C) on the *triggered* inputs; ``y_true`` their true
    labels. Inputs of the target class are ignored: for them the prediction says nothing.
    """
    logits = np.asarray(logits)
    y_true = np.asarray(y_true)
    if logits.ndim != 2 or y_true.ndim != 1 or len(logits) != len(y_true):
        raise InputError(f"attack_success_rate needs N×C logits and N labels, got {logits.shape} and {y_true.shape}")
    keep = y_true != target
    if not keep.any():
        raise InputError(f"attack_success_rate: every input is of the target class {target}")
    return float(np.mean(logits[keep].argmax(axis=1) == target))
