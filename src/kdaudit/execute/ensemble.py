"""Students trained together: K jobs of one architecture as one vectorised ensemble (torch.func).

What is vectorised. The K members share the model, the ``train`` settings and the hint configuration;
seeds, α, temperatures, KD losses and soft targets may differ. Their weights and buffers are stacked
along a leading axis of length K, and one copy of the model on the ``meta`` device runs them by
:func:`torch.func.functional_call` under :func:`torch.func.vmap`: one forward and one backward pass
per step train all K. Each member reads its own batch (the batch order of its own seed), and has its
own loss; the K losses are summed and differentiated once. One optimizer updates the stacked tensors:
SGD (momentum, weight decay), Adam and AdamW act element by element, so that is every member's own
update; ``grad_clip`` is per member (the norm over its slice of every gradient). BatchNorm buffers
are stacked and vmapped: each member's running statistics and ``num_batches_tracked`` are updated
from its own batch. Hints read the student layer by a forward hook inside the vmapped function (the
features are returned from it), with a per-member regressor initialised as in ``train_model``.

Why the numbers equal sequential training. Each member sees the batches, M0, loss and optimizer
arithmetic :func:`~kdaudit.execute.train.train_model` gives it, and the members cannot influence each
other: member k's gradient is that of member k's loss alone. Equal within float tolerance, not bit for
bit: batched products (a vmapped linear layer is a batched matmul) sum in another order. Nothing
depends on K or on a member's position beyond that rounding. Evaluation loads each member's final
state into the model and calls ``predict``, as sequential training does. ``TrainResult.seconds`` is
the group's wall time shared equally among its members.

Precision. fp32. ``bf16`` is refused while autocast does not reach the vectorised forward: with torch
2.11 (CUDA) and 2.13 (CPU), a vmapped linear layer or convolution under ``torch.autocast`` returns
float32 where the model's own returns bfloat16, and on CUDA a vmapped BatchNorm's backward under
autocast fails. :func:`why_not` probes this, so a torch that fixes it lets bf16 groups through.
fp16 (a gradient scaler) is not vectorised; the step keeps loss, backward, clipping and optimizer
step apart so that a scaler fits in.

What is refused (:func:`why_not`). Dropout: K members under vmap cannot draw the masks that K
sequential runs draw from their seeded global RNG. ``train.compile``, optimizers that are not
element-wise, fp16, bf16 (above), teacher checkpoints, snapshots and poisoned training sets, and any
model whose vmapped forward and backward pass on 2 members fails or differs from its own (an LSTM has
no batching rule; a model that reassigns a buffer would lose the update). ``train.channels_last`` is a
memory layout only: the ensemble keeps the default layout.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ..data.base import DataBundle
from ..errors import TrainingError
from ..models.base import _one_line, resolve_module
from ..objectives.hints import capture
from ..objectives.stacked import StackedLoss
from .device import Batches, autocast, configure, on_device
from .train import (
    BatchLoss,
    TrainResult,
    _batch_loss,
    _check_targets,
    _hint_regressor,
    _lr_factor,
    _optimizer,
    _result,
    batch_order,
    make_model,
)

Tensors = dict[str, torch.Tensor]

# train settings that do not change the numbers a job trains to
_IGNORED_TRAIN = frozenset({"threads", "eval_batch_size", "checkpoint_every", "device"})
_ELEMENTWISE = ("sgd", "adam", "adamw")
_PRECISIONS = ("fp32", "bf16")
_PROBE_ROWS = 4
_PROBES: dict[str, str | None] = {}


@dataclass
class Member:
    """One job of an ensemble: what :func:`~kdaudit.execute.train.train_model` would get."""

    params: dict
    target_logits: torch.Tensor | None = None
    hint_targets: torch.Tensor | None = None
    name: str = "job"
    keep_train_logits: bool = False


def _group_fields(params: dict) -> dict:
    train = {k: v for k, v in params["train"].items() if k not in _IGNORED_TRAIN}
    return {"model": params["model"], "train": train, "hint": params.get("hint"), "data": params.get("data")}


def group_key(params: dict) -> str:
    """Members with equal keys may train together: the same model, ``train`` settings (but for
    threads, eval_batch_size, checkpoint_every and device), hint configuration and data. Seed, α,
    condition, temperature, kd_loss and t2_scaling may differ."""
    return json.dumps(_group_fields(params), sort_keys=True, default=str)


def _first_difference(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """The first dotted field at which ``a`` and ``b`` differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            found = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if found is not None:
                return found
        return None
    same = json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    return None if same else (path, a, b)


def _dropout_reason(p: float) -> str:
    return f"its model has dropout (p = {p:g}): the members' dropout masks could not equal those of sequential training"


def _static_reason(params: dict) -> str | None:
    """Why the job's settings keep it out of an ensemble (no model is built)."""
    train = params["train"]
    if "checkpoint" in params:
        return "a teacher checkpoint: the teacher is read, not trained"
    if params.get("snapshots") or "snapshot_of" in params:
        return "teacher snapshots: taken during one sequential teacher run"
    if "backdoor" in params or "transfer_poison" in params:
        return "a poisoned or triggered training set: trained on its own"
    if train.get("compile", False):
        return "train.compile: a compiled model trains on its own"
    if train.get("optimizer") not in _ELEMENTWISE:
        return f"train.optimizer {train.get('optimizer')!r}: only {', '.join(_ELEMENTWISE)} update element by element"
    if train.get("precision", "fp32") not in _PRECISIONS:
        return f"train.precision {train.get('precision')!r}: only {' and '.join(_PRECISIONS)} are vectorised"
    p = params["model"].get("kwargs", {}).get("dropout", 0.0)
    if isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0:
        return _dropout_reason(float(p))
    return None


def _dropout_in(model: nn.Module) -> float:
    """The largest dropout probability of any module of ``model`` that draws masks in training."""
    found = [0.0]
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            found.append(float(m.p))
        elif isinstance(m, nn.RNNBase):  # between stacked layers only
            found.append(float(m.dropout) if m.num_layers > 1 else 0.0)
        else:  # e.g. an attention module's dropout probability
            found += [
                v for a in ("dropout", "dropout_p", "attn_dropout") if isinstance(v := getattr(m, a, None), float)
            ]
    return max(found)


def why_not(params: dict, data: DataBundle) -> str | None:
    """None when the job can train as an ensemble member; else the reason in words (see the module
    docstring). The model's probe (a vmapped forward and backward pass of 2 members on one batch,
    compared with the model's own) is cached per model name, kwargs and input shape."""
    reason = _static_reason(params)
    if reason is not None:
        return reason
    m, precision = params["model"], params["train"].get("precision", "fp32")
    inputs = [list(data.input_shape), str(data.x_train.dtype), data.model_args()]
    key = json.dumps([m["name"], m.get("kwargs", {}), *inputs, precision], sort_keys=True, default=str)
    if key not in _PROBES:
        _PROBES[key] = _probe(params, data)
    return _PROBES[key]


def _probe(params: dict, data: DataBundle) -> str | None:
    with torch.random.fork_rng(devices=[]):  # building models draws weights: the caller's RNG stays
        model = make_model(params, data)
        p = _dropout_in(model)
        if p > 0:
            return _dropout_reason(p)
        precision = params["train"].get("precision", "fp32")
        if precision != "fp32" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            # torch's vmapped batch norm under CUDA autocast fails in the backward pass
            # (running_mean kept in fp32 against bf16 inputs)
            return f"train.precision {precision} with BatchNorm: vectorised batch norm under autocast fails on CUDA"
        x = data.x_train[:_PROBE_ROWS]
        ref = copy.deepcopy(model).train()
        try:
            want = ref(x)
            want.float().sum().backward()
            net = _Stack(model, 2, torch.device("cpu"), None)
            got, _ = net.forward(torch.stack([x, x]))
            got.float().sum().backward()
        except Exception as exc:
            return f"a vectorised forward and backward pass of 2 members fails ({_one_line(exc)})"
        if not _probe_agrees(net, ref, got, want):
            return "its vectorised forward and backward pass differs from the model's own (outputs, gradients, buffers)"
        if precision == "bf16":
            return _probe_bf16(model, x)
    return None


def _probe_bf16(model: nn.Module, x: torch.Tensor) -> str | None:
    """Whether bf16 autocast reaches the vmapped forward (and its backward runs), as it does the
    model's own forward."""
    cpu = torch.device("cpu")
    try:
        with autocast(cpu, "bf16"):
            want = copy.deepcopy(model).train()(x)
            got, _ = _Stack(model, 2, cpu, None).forward(torch.stack([x, x]))
        got.float().sum().backward()
    except Exception as exc:
        return f"train.precision bf16: a vectorised forward and backward pass under autocast fails ({_one_line(exc)})"
    if got.dtype != want.dtype:
        return (
            f"train.precision bf16: autocast does not reach the vectorised forward (its logits come out "
            f"{got.dtype}, the model's own {want.dtype}), so the members would not train in bf16"
        )
    return None


def _probe_agrees(net: _Stack, ref: nn.Module, got: torch.Tensor, want: torch.Tensor) -> bool:
    """Both members' outputs, gradients and buffers equal those of the model's own pass."""

    def close(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
        if a is None or b is None:
            return a is None and b is None
        return torch.allclose(a.double(), b.double(), rtol=1e-3, atol=1e-4)

    own, buffers = dict(ref.named_parameters()), dict(ref.named_buffers())
    grads = {n: p.grad for n, p in net.params.items()}
    return all(
        close(got[k], want)
        and all(close(None if g is None else g[k], own[n].grad) for n, g in grads.items())
        and all(close(b[k], buffers[n]) for n, b in net.buffers.items())
        for k in range(2)
    )


def _stack_params(modules: Sequence[nn.Module], device: torch.device) -> Tensors:
    """The stacked parameters of equal modules (without buffers) on ``device``: leaves that require grad."""
    own = [dict(m.named_parameters()) for m in modules]
    return {n: torch.stack([p[n].detach() for p in own]).to(device).requires_grad_() for n in own[0]}


class _Stack:
    """K copies of ``model``'s state as stacked tensors, run by one meta copy of it under vmap."""

    def __init__(self, model: nn.Module, k: int, device: torch.device, hint_layer: str | None) -> None:
        self.params = {
            n: p.detach().to(device).unsqueeze(0).repeat(k, *[1] * p.dim()).requires_grad_()
            for n, p in model.named_parameters()
        }
        self.buffers = {
            n: b.detach().to(device).unsqueeze(0).repeat(k, *[1] * b.dim()) for n, b in model.named_buffers()
        }
        self.base = copy.deepcopy(model).to("meta").train()
        layer = None if hint_layer is None else resolve_module(self.base, hint_layer)

        def one(params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (params, buffers), (x,))

        def with_features(params: Tensors, buffers: Tensors, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            assert layer is not None
            with capture(layer) as box:  # a box of this call: the batched features leave vmap as an output
                out = functional_call(self.base, (params, buffers), (x,))
            return out, box["out"]

        self._plain = vmap(one)
        self._hinted = vmap(with_features) if layer is not None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The K members' logits on their batches ``x`` (K × B × ...), and the hint layer's features."""
        if self._hinted is not None:
            return self._hinted(self.params, self.buffers, x)
        return self._plain(self.params, self.buffers, x), None

    def load_member(self, model: nn.Module, k: int) -> nn.Module:
        """``model`` holding member ``k``'s parameters and buffers."""
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(self.params[n][k])
            for n, b in model.named_buffers():
                b.copy_(self.buffers[n][k])
        return model


@dataclass
class _Hints:
    """The members' hint regressors (stacked), their target tables and the common weight."""

    params: Tensors
    forward: Callable[[Tensors, torch.Tensor], torch.Tensor]
    tables: list[torch.Tensor]
    weight: float

    def losses(self, feats: torch.Tensor, idx: torch.Tensor) -> list[torch.Tensor]:
        """weight · mean((r_k(f_k) − t_k)²) per member k, as :func:`~kdaudit.objectives.hints.hint_loss`."""
        pred = self.forward(self.params, feats)
        return [self.weight * F.mse_loss(pred[k], t.index_select(0, idx[k])) for k, t in enumerate(self.tables)]


def _to_device(tensors: list[torch.Tensor | None], device: torch.device) -> list[torch.Tensor | None]:
    """Each tensor on ``device``, tensors shared between members moved once."""
    moved = {i: t.to(device) for i, t in {id(t): t for t in tensors if t is not None}.items()}
    return [None if t is None else moved[id(t)] for t in tensors]


def _hints(members: list[Member], template: nn.Module, data: DataBundle, device: torch.device) -> _Hints | None:
    hint = members[0].params.get("hint")
    given = [m.hint_targets is not None for m in members]
    if hint is None or not any(given):
        return None  # as in train_model: a hint without targets is no hint
    if not all(given):
        missing = next(m.name for m, g in zip(members, given, strict=True) if not g)
        raise ValueError(f"{missing}: no hint targets, while other members of the group have them")
    shapes = {tuple(m.hint_targets.shape) for m in members if m.hint_targets is not None}
    if len(shapes) > 1:
        raise ValueError(f"the members' hint targets differ in shape: {sorted(shapes)}")
    regressors = []
    for m in members:
        assert m.hint_targets is not None
        _, r = _hint_regressor(template, hint["student_layer"], m.hint_targets, data, int(m.params["seed"]), False)
        regressors.append(r)
    params = _stack_params(regressors, device)
    base = copy.deepcopy(regressors[0]).to("meta")
    forward = vmap(lambda p, f: functional_call(base, p, (f.float(),)))
    tables = [t for t in _to_device([m.hint_targets for m in members], device) if t is not None]
    return _Hints(params, forward, tables, float(hint["weight"]))


def _clip_per_member(grads: list[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` of every member separately: the norm over member k's slice of all grads."""
    if not grads:
        return
    k = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), dim=1) for g in grads], dim=1)
    coef = (max_norm / (torch.linalg.vector_norm(norms, dim=1) + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(k, *[1] * (g.dim() - 1)).to(g.dtype))


@dataclass
class _Trainer:
    """One optimisation step of all members per batch, and one epoch of them."""

    net: _Stack
    hints: _Hints | None
    losses: list[BatchLoss]
    names: list[str]
    x_train: Batches
    y_train: torch.Tensor
    opt: torch.optim.Optimizer
    clip: float | None
    precision: Callable[[], AbstractContextManager]
    stacked: StackedLoss | None = None

    def parameters(self) -> list[torch.Tensor]:
        return list(self.net.params.values()) + (list(self.hints.params.values()) if self.hints else [])

    def member_losses(self, idx: torch.Tensor) -> torch.Tensor:
        """The K members' losses on their batches ``idx`` (K × B), stacked."""
        k, b = idx.shape
        flat = idx.reshape(-1)
        x = self.x_train.take(flat)
        x = x.view(k, b, *x.shape[1:])
        y = self.y_train.index_select(0, flat).view(k, b)
        with self.precision():
            logits, feats = self.net.forward(x)
        if self.stacked is not None:  # all K losses in a few batched kernels
            stacked = self.stacked(logits.float(), y, idx)
            if self.hints is None or feats is None:
                return stacked
            return stacked + torch.stack(self.hints.losses(feats, idx))
        losses = [loss(logits[i].float(), y[i], idx[i]) for i, loss in enumerate(self.losses)]
        if self.hints is not None and feats is not None:
            losses = [a + h for a, h in zip(losses, self.hints.losses(feats, idx), strict=True)]
        return torch.stack(losses)

    def check(self, values: list[float], epoch: int) -> None:
        for name, value in zip(self.names, values, strict=True):
            if not math.isfinite(value):
                raise TrainingError(
                    f"{name}: the training loss became {value} at epoch {epoch + 1}; lower train.lr or check the data"
                )

    def update(self, losses: torch.Tensor) -> None:
        """The backward pass and the optimizer step (a gradient scaler would scale, unscale before
        clipping, and step here)."""
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # the members are independent: each gets its own loss's gradient
        if self.clip is not None:
            _clip_per_member([p.grad for p in self.parameters() if p.grad is not None], float(self.clip))
        self.opt.step()

    def epoch(self, perm: torch.Tensor, batch_size: int, epoch: int) -> list[float]:
        """Train on the members' orders ``perm`` (K × n) in batches; each member's mean loss per sample.

        As in sequential training, the losses are read at every step on the CPU (the run stops at
        the first non-finite one) and summed on a GPU (float64), read once per epoch."""
        k, n = perm.shape
        on_host = perm.device.type != "cuda"
        # float64 sums on a GPU (MPS has no float64: it reads its losses per step, as the CPU does)
        totals = torch.zeros(k, dtype=torch.float64, device=perm.device) if not on_host else None
        host = [0.0] * k
        for start in range(0, n, batch_size):
            idx = perm[:, start : start + batch_size]
            losses = self.member_losses(idx)
            if totals is None:
                values = losses.detach().tolist()  # one read for all members
                self.check(values, epoch)
                host = [t + v * idx.shape[1] for t, v in zip(host, values, strict=True)]
            else:
                totals += losses.detach().double() * idx.shape[1]
            self.update(losses)
        if totals is not None:
            host = totals.tolist()
            self.check(host, epoch)
        return [t / max(n, 1) for t in host]


def _check_group(members: list[Member], data: DataBundle) -> None:
    first = members[0]
    fields = _group_fields(first.params)
    for m in members:
        if group_key(m.params) != group_key(first.params):
            found = _first_difference(fields, _group_fields(m.params), "")
            field, a, b = found if found is not None else ("?", None, None)
            raise ValueError(f"{m.name} cannot train with {first.name}: {field} differs ({a!r} vs {b!r})")
        reason = why_not(m.params, data)
        if reason is not None:
            raise ValueError(f"{m.name} cannot train as an ensemble member: {reason}")
        _check_targets(m.name, float(m.params.get("alpha", 0.0)), m.target_logits, data)


def train_ensemble(
    members: list[Member],
    data: DataBundle,
    init_state: dict[str, torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    eval_batch_size: int = 2048,
    on_epoch: Callable[[int, int, list[float]], None] | None = None,
) -> list[TrainResult]:
    """Train ``members`` from ``init_state`` as one vectorised ensemble; result k equals
    ``train_model(members[k].params, data, init_state, ...)`` within float tolerance.

    Raises ValueError when the members' :func:`group_key` differ or one has a :func:`why_not`.
    ``on_epoch(epoch, epochs, losses)`` receives each member's mean training loss of the epoch.
    """
    start = time.perf_counter()
    if not members:
        return []
    _check_group(members, data)
    dev = torch.device(device)
    params = members[0].params
    train = params["train"]
    configure(dev, train)  # TF32 and determinism on CUDA, as for a job trained on its own
    with torch.random.fork_rng(devices=[]):  # building the model draws weights: the caller's RNG stays
        template = make_model(params, data)
    template.load_state_dict(init_state)
    hints = _hints(members, template, data, dev)
    net = _Stack(template, len(members), dev, params["hint"]["student_layer"] if hints is not None else None)
    targets = _to_device([m.target_logits for m in members], dev)
    trainer = _Trainer(
        net=net,
        hints=hints,
        losses=[
            _batch_loss(m.params, float(m.params.get("alpha", 0.0)), t) for m, t in zip(members, targets, strict=True)
        ],
        names=[m.name for m in members],
        x_train=Batches(data.x_train, dev),
        y_train=on_device(data.y_train, dev),
        opt=_optimizer(train, list(net.params.values()) + (list(hints.params.values()) if hints else [])),
        clip=train.get("grad_clip"),
        precision=lambda: autocast(dev, str(train.get("precision", "fp32"))),
        stacked=StackedLoss.of([m.params for m in members], targets, dev),
    )
    epochs, batch_size, n = int(train["epochs"]), int(train["batch_size"]), len(data.x_train)
    seeds = [int(m.params["seed"]) for m in members]
    orders = {s: batch_order(s, n, epochs, batch_size) for s in dict.fromkeys(seeds)}
    histories: list[list[dict]] = [[] for _ in members]
    for epoch in range(epochs):
        for group in trainer.opt.param_groups:
            group["lr"] = train["lr"] * _lr_factor(train, epoch)
        perm = torch.stack([torch.cat(orders[s][epoch]) for s in seeds]).to(dev)
        means = trainer.epoch(perm, batch_size, epoch)
        for history, mean in zip(histories, means, strict=True):
            history.append({"epoch": epoch + 1, "train_loss": mean})
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs, means)
    template = template.to(dev)  # evaluated where it trained, as a job trained on its own is
    results = []
    for k, m in enumerate(members):
        model = net.load_member(template, k)
        results.append(
            _result(model, data, data.x_train, m.keep_train_logits, eval_batch_size, histories[k], start, 0, m.name)
        )
    seconds = (time.perf_counter() - start) / len(members)  # the group's time, shared
    for r in results:
        r.seconds = seconds
    return results
