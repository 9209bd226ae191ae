"""Training: a plain function of one job (no CLI, no YAML).

Determinism: on CPU in fp32 the same job gives the same numbers. The data order of every
epoch comes from a generator seeded with the job's seed, and the global torch RNG (dropout) is
seeded with it too, so the students that share a seed see exactly the same batches and the
same dropout masks (paired design); only the loss differs. RCD noise tables are drawn once per
run from the seed and indexed by training-sample index, so each sample keeps one fixed
"teacher output" across epochs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.base import DataBundle
from ..errors import SpecError, TrainingError
from ..faults import failpoint
from ..models import build_model
from ..models.base import resolve_module
from ..objectives import OBJECTIVES
from ..objectives.hints import NOISE_CODES, HintRegressor, capture, feature_shape, hint_loss
from ..objectives.losses import soft_target_table
from .checkpoint import Checkpointer
from .device import Batches, autocast, configure, grad_scaler

EpochCallback = Callable[[int, int, float], None]
SnapshotCallback = Callable[[int, "TrainResult"], None]


@dataclass
class TrainResult:
    state: dict[str, torch.Tensor]
    test_logits: np.ndarray
    test_labels: np.ndarray
    train_logits: np.ndarray | None = None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def make_model(params: dict, data: DataBundle) -> nn.Module:
    m = params["model"]
    return build_model(m["name"], data.input_shape, data.num_classes, data.model_args(), **m.get("kwargs", {}))


def init_weights(params: dict, data: DataBundle) -> dict[str, torch.Tensor]:
    """M0: the initial weights drawn once from ``init_seed``."""
    torch.manual_seed(int(params["init_seed"]))
    model = make_model(params, data)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def noise_table(kind: str, seed: int, n: int, num_classes: int) -> torch.Tensor:
    """The RCD "teacher": Z ∈ R^{n×C}, U[0,1) or N(0,1), drawn once per run from ``seed``."""
    if kind not in NOISE_CODES:
        raise ValueError(f"unknown noise kind {kind!r}")
    rng = np.random.default_rng([int(seed), NOISE_CODES[kind]])
    z = rng.random((n, num_classes)) if kind == "rcd-uniform" else rng.standard_normal((n, num_classes))
    return torch.from_numpy(z.astype(np.float32))


def label_smoothing_table(
    labels: np.ndarray | torch.Tensor, num_classes: int, a: float, temperature: float = 1.0
) -> torch.Tensor:
    """The label-smoothing control's "teacher": per sample, probability ``a`` on the true class and
    (1 − a)/(C − 1) on every other class, as logits T·log p, so that the KD loss's softmax at
    temperature T gives back exactly p."""
    if not 1.0 / num_classes < a < 1.0:
        raise SpecError(
            f"protocol.ls.a must lie in (1/C, 1) = ({1.0 / num_classes:.4g}, 1) so that the true "
            f"class is the virtual teacher's top class, got {a}"
        )
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    p = torch.full((len(y), num_classes), (1.0 - a) / (num_classes - 1), dtype=torch.float64)
    p[torch.arange(len(y)), y] = a
    return (temperature * torch.log(p)).to(torch.float32)


def teacher_top_probability(train_logits: np.ndarray, temperature: float = 1.0) -> float:
    """The teacher's mean top probability over the training set at temperature T (float64)."""
    z = np.asarray(train_logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return float((p.max(axis=1) / p.sum(axis=1)).mean())


def batch_order(seed: int, n: int, epochs: int, batch_size: int) -> list[list[torch.Tensor]]:
    """The batches of every epoch: index tensors from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    order = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        order.append(list(torch.split(perm, batch_size)))
    return order


def _optimizer(train: dict, params) -> torch.optim.Optimizer:
    kind = train["optimizer"]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=train["lr"], momentum=train["momentum"], weight_decay=train["weight_decay"])
    if kind == "adam":
        return torch.optim.Adam(params, lr=train["lr"], weight_decay=train["weight_decay"])
    return torch.optim.AdamW(params, lr=train["lr"], weight_decay=train["weight_decay"])


def _lr_factor(train: dict, epoch: int) -> float:
    """The learning-rate multiplier of ``epoch`` (0-based), set at the start of each epoch.

    ``warmup_epochs`` W: epochs 0..W-1 ramp linearly, (e + 1) / W; the schedule (cosine over
    the remaining epochs, or steps at the given epochs) follows.
    """
    warm = int(train.get("warmup_epochs", 0))
    if epoch < warm:
        return (epoch + 1) / warm
    if train["schedule"] == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (epoch - warm) / (train["epochs"] - warm)))
    if train["schedule"] == "step":
        return train["step_gamma"] ** sum(1 for e in train["step_epochs"] if epoch >= e)
    return 1.0


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 2048) -> np.ndarray:
    """The model's logits on ``x`` (eval mode, batches moved to the model's device), as float64."""
    model.eval()
    dev = next(iter(model.parameters()), torch.empty(0)).device
    outs = [model(x[i : i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(outs).double().numpy() if outs else np.zeros((0, 0))


def train_model(
    params: dict,
    data: DataBundle,
    init_state: dict[str, torch.Tensor],
    *,
    target_logits: torch.Tensor | None = None,
    hint_targets: torch.Tensor | None = None,
    keep_train_logits: bool = False,
    train_logits_inputs: torch.Tensor | None = None,
    eval_batch_size: int = 2048,
    on_epoch: EpochCallback | None = None,
    name: str = "job",
    checkpoint: Checkpointer | None = None,
    snapshots: Sequence[int] = (),
    on_snapshot: SnapshotCallback | None = None,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train one model from ``init_state`` per ``params`` (a job's spec slice).

    ``target_logits`` (N_train×C) are the soft targets of the KD loss: the teacher's training
    logits, or an RCD noise table; ``None`` with α = 0 is plain cross-entropy.
    ``hint_targets`` (N_train×feature) are the fixed per-sample targets of the hint loss when
    ``params`` has a ``hint`` (:mod:`kdaudit.objectives.hints`).
    ``keep_train_logits`` returns the trained model's logits on ``train_logits_inputs``
    (default: the training inputs; a poisoned teacher gives them on the clean ones).

    Fast path: inputs are batched by index from preloaded tensors, targets are indexed from a
    table computed once. ``device``: where the model, the training set (when it fits; else
    pinned batches), the target and hint tables live (:mod:`kdaudit.execute.device`). Opt-in
    ``train.precision`` bf16 (autocast) or fp16 (autocast and a gradient scaler),
    ``train.channels_last`` and ``train.compile``; fp32 is the default. With ``checkpoint`` the job saves its state
    every few epochs and, if a checkpoint exists, resumes from it with identical results.
    ``on_snapshot(epoch, result)`` receives the model's state and outputs (as returned at the end)
    after each epoch in ``snapshots`` before the last; evaluating in between changes nothing of the
    training (eval mode, no random numbers drawn). Snapshots due before a resumed checkpoint's epoch
    are not taken again: the caller keeps them where the checkpoint survives.
    """
    start = time.perf_counter()
    train = params["train"]
    alpha = float(params.get("alpha", 0.0))
    seed = int(params["seed"])
    _check_targets(name, alpha, target_logits, data)
    dev = torch.device(device)
    configure(dev, train)
    torch.manual_seed(seed)
    model = make_model(params, data)
    model.load_state_dict(init_state)
    model = model.to(dev)
    channels_last = bool(train.get("channels_last", False)) and data.x_train.dim() == 4
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    hint = params.get("hint") if hint_targets is not None else None
    regressor, s_layer = None, None
    if hint is not None and hint_targets is not None:
        hint_targets = hint_targets.to(dev)
        s_layer, regressor = _hint_regressor(model, hint["student_layer"], hint_targets, data, seed, channels_last)
    trainable = list(model.parameters()) + (list(regressor.parameters()) if regressor is not None else [])
    opt = _optimizer(train, trainable)
    # what a mid-run checkpoint holds: the model, and the hint regressor when there is one
    saved = nn.ModuleDict({"model": model, "hint": regressor}) if regressor is not None else model
    history: list[dict] = []
    first_epoch = 0
    precision = str(train.get("precision", "fp32"))
    scaler = grad_scaler(dev, precision)
    if checkpoint is not None:
        resumed = checkpoint.load(saved, opt, scaler)
        if resumed is not None:
            first_epoch, history = resumed
    batches = batch_order(seed, len(data.x_train), train["epochs"], train["batch_size"])
    x_train = data.x_train.contiguous(memory_format=torch.channels_last) if channels_last else data.x_train
    step = _Step(
        forward=torch.compile(model) if train.get("compile", False) else model,
        opt=opt,
        saved=saved,
        x_train=Batches(x_train, dev),
        y_train=data.y_train.to(dev),
        loss=_batch_loss(params, alpha, None if target_logits is None else target_logits.to(dev)),
        autocast=lambda: autocast(dev, precision),
        clip=train.get("grad_clip"),
        name=name,
        scaler=scaler,
    )
    logits_on = data.x_train if train_logits_inputs is None else train_logits_inputs
    snap_at = {int(e) for e in snapshots if int(e) < train["epochs"]}  # the last one is the result
    hooked: AbstractContextManager[dict] = capture(s_layer) if s_layer is not None else nullcontext({})
    with hooked as features:  # the student's hint layer, read by a forward hook
        if hint is not None and hint_targets is not None and regressor is not None:
            step.hint = (features, hint_targets, regressor, float(hint["weight"]))
        for epoch in range(first_epoch, train["epochs"]):
            for group in opt.param_groups:
                group["lr"] = train["lr"] * _lr_factor(train, epoch)
            model.train()
            mean_loss = step.epoch(batches[epoch], epoch)
            history.append({"epoch": epoch + 1, "train_loss": mean_loss})
            if on_epoch is not None:
                on_epoch(epoch + 1, train["epochs"], mean_loss)
            if on_snapshot is not None and epoch + 1 in snap_at:  # before the checkpoint that passes it
                snap = _result(
                    model, data, logits_on, keep_train_logits, eval_batch_size, list(history), start, first_epoch, name
                )
                on_snapshot(epoch + 1, snap)
            failpoint("train.epoch")
            if checkpoint is not None and checkpoint.due(epoch + 1, train["epochs"]):
                checkpoint.save(epoch + 1, saved, opt, history, scaler)
    return _result(model, data, logits_on, keep_train_logits, eval_batch_size, history, start, first_epoch, name)


def _check_targets(name: str, alpha: float, target_logits: torch.Tensor | None, data: DataBundle) -> None:
    if alpha > 0 and target_logits is None:
        raise ValueError(f"{name}: α = {alpha} needs target logits")
    if target_logits is not None and target_logits.shape != (len(data.x_train), data.num_classes):
        raise ValueError(
            f"{name}: target logits have shape {tuple(target_logits.shape)}, expected "
            f"{(len(data.x_train), data.num_classes)}"
        )


def _hint_regressor(
    model: nn.Module, layer: str, hint_targets: torch.Tensor, data: DataBundle, seed: int, channels_last: bool
) -> tuple[nn.Module, HintRegressor]:
    """The student's hint layer and the regressor from its features to the hint targets."""
    s_layer = resolve_module(model, layer)
    dev = hint_targets.device
    s_shape = feature_shape(model, s_layer, data.x_train[:2].to(dev))
    with torch.random.fork_rng(devices=[]):  # the dropout stream stays that of the paired students
        torch.manual_seed(seed)
        regressor = HintRegressor(s_shape, tuple(hint_targets.shape[1:])).to(dev)
    if channels_last:
        regressor = regressor.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return s_layer, regressor


BatchLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _batch_loss(params: dict, alpha: float, target_logits: torch.Tensor | None) -> BatchLoss:
    """``loss(logits, labels, idx)``: the job's objective on one batch of training samples ``idx``."""
    temperature = float(params.get("temperature", 1.0))
    kd_loss = params.get("kd_loss", "ce")
    t2_scaling = bool(params.get("t2_scaling", False))
    objective = OBJECTIVES.get("ce" if alpha == 0.0 else "kd")  # α = 0: the teacher and SIDDO
    # the targets' softmax at temperature T, once per job instead of once per batch (row-wise:
    # the same numbers either way)
    soft = None if target_logits is None or alpha == 0.0 else soft_target_table(target_logits, temperature, kd_loss)

    def loss(logits: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return objective(
            logits,
            labels,
            None,
            alpha=alpha,
            temperature=temperature,
            kd_loss=kd_loss,
            t2_scaling=t2_scaling,
            soft_targets=None if soft is None else tuple(t.index_select(0, idx) for t in soft),
        )

    return loss


@dataclass
class _Step:
    """One optimisation step per batch, and one epoch of them."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    saved: nn.Module
    x_train: Batches
    y_train: torch.Tensor
    loss: BatchLoss
    autocast: Callable[[], AbstractContextManager]
    clip: float | None
    name: str
    scaler: torch.amp.GradScaler | None = None
    hint: tuple[dict, torch.Tensor, nn.Module, float] | None = None
    """The hook's box, the hint targets, the regressor and the hint weight."""

    def epoch(self, batches: list[torch.Tensor], epoch: int) -> float:
        """Train on ``batches`` in order; the mean training loss per sample.

        On the CPU each step's loss is read at once (the run stops at the first non-finite one);
        on a GPU the losses are summed on the device (in float64, the same sum) and read once per
        epoch, so the GPU never waits for the host between steps."""
        dev = self.y_train.device
        on_host = dev.type != "cuda"
        total, count = 0.0, 0
        total_dev = torch.zeros((), dtype=torch.float64, device=dev) if not on_host else None
        for idx_cpu in batches:
            idx = idx_cpu if dev.type == "cpu" else idx_cpu.to(dev, non_blocking=True)
            # index_select: the same rows as x[idx], without advanced indexing's overhead
            with self.autocast():
                logits = self.forward(self.x_train.take(idx))
            loss = self.loss(logits.float(), self.y_train.index_select(0, idx), idx)
            if self.hint is not None:
                features, targets, regressor, weight = self.hint
                loss = loss + hint_loss(features["out"], targets.index_select(0, idx), regressor, weight)
            if total_dev is None:
                value = float(loss.detach())
                self._check(value, epoch)
                total += value * len(idx)
            else:
                total_dev += loss.detach().double() * len(idx)
            count += len(idx)
            self._update(loss)
        if total_dev is not None:
            total = float(total_dev)
            self._check(total, epoch)
        return total / max(count, 1)

    def _check(self, value: float, epoch: int) -> None:
        if not math.isfinite(value):
            raise TrainingError(
                f"{self.name}: the training loss became {value} at epoch {epoch + 1}; lower train.lr or check the data"
            )

    def _update(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            if self.clip is not None:
                torch.nn.utils.clip_grad_norm_(self.saved.parameters(), self.clip)
            self.opt.step()
            return
        self.scaler.scale(loss).backward()
        if self.clip is not None:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.saved.parameters(), self.clip)
        self.scaler.step(self.opt)  # skipped when a gradient overflowed; the scale then shrinks
        self.scaler.update()


def _result(
    model: nn.Module,
    data: DataBundle,
    logits_on: torch.Tensor,
    keep_train_logits: bool,
    eval_batch_size: int,
    history: list[dict],
    start: float,
    first_epoch: int,
    name: str,
) -> TrainResult:
    """The model's state, its test logits and (``keep_train_logits``) its logits on ``logits_on``."""
    test_logits = predict(model, data.x_test, eval_batch_size)
    if not np.isfinite(test_logits).all():
        raise TrainingError(f"{name}: the test logits are not finite")
    train_logits = predict(model, logits_on, eval_batch_size) if keep_train_logits else None
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return TrainResult(
        state=state,
        test_logits=test_logits.astype(np.float32),
        test_labels=data.y_test.numpy().astype(np.int64),
        train_logits=None if train_logits is None else train_logits.astype(np.float32),
        history=history,
        seconds=time.perf_counter() - start,
        resumed_from_epoch=first_epoch,
    )


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file of weights, or a one-line error saying why it cannot be read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise SpecError(f"teacher.checkpoint: file not found: {path}") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise SpecError(f"teacher.checkpoint: {path} is not a readable safetensors file ({exc})") from None


def check_checkpoint(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, num_classes: int) -> None:
    """The checkpoint must fit the model exactly: the same tensor names and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        raise SpecError(f"teacher.checkpoint {path} does not match teacher model's tensors: {'; '.join(parts)}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            hint = ""
            if v.dim() >= 1 and v.shape[0] == num_classes and state[k].shape[0] != num_classes:
                hint = f" (a head for {state[k].shape[0]} classes; the dataset has {num_classes})"
            raise SpecError(
                f"teacher.checkpoint {path}: {k} has shape {tuple(state[k].shape)} in the checkpoint but "
                f"{tuple(v.shape)} in the teacher model{hint}"
            )


def load_teacher(
    params: dict, data: DataBundle, eval_batch_size: int = 2048, device: torch.device | str = "cpu"
) -> TrainResult:
    """A teacher given as trained weights: its test and training logits (computed on ``device``),
    nothing trained."""
    start = time.perf_counter()
    path = params["checkpoint"]["path"]
    model = make_model(params, data)
    state = read_checkpoint(path)
    check_checkpoint(model, state, path, data.num_classes)
    model.load_state_dict(state)
    model = model.to(torch.device(device))
    test_logits = predict(model, data.x_test, eval_batch_size)
    if not np.isfinite(test_logits).all():
        raise TrainingError(f"teacher.checkpoint {path}: the teacher's test logits are not finite")
    train_logits = predict(model, data.x_train, eval_batch_size)
    return TrainResult(
        state={k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
        test_logits=test_logits.astype(np.float32),
        test_labels=data.y_test.numpy().astype(np.int64),
        train_logits=train_logits.astype(np.float32),
        seconds=time.perf_counter() - start,
    )
