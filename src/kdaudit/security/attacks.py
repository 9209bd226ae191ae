"""Adversarial attacks in the model's input space, and rates that measure their transfer.

kdaudit models read standardised inputs: a float dataset was mapped ``x = (raw - mean) / std``
with one scalar mean/std (``info["normalization"]``), and ``info["raw_range"]`` records the
valid raw range (images [0, 1], waveforms [-1, 1]). Attacks run on the standardised tensors;
:func:`attack_space` turns a budget given in raw units into model units (``ε_model = ε_raw /
std``; one scalar std, so this holds for L∞ and L2 alike) and maps the raw range into the
valid model-space box. Without a raw range (log-mel features) the box is the observed test
range and ε is in standardised units.

Gradient attacks (:func:`fgsm`, :func:`pgd`) follow torchattacks' order of operations
(step, project onto the ε-ball, clip to the box), so they agree with ``torchattacks.FGSM`` /
``PGD`` / ``PGDL2`` on the same model. One deliberate difference: the loss is the *sum* of the
per-sample cross-entropies, not their mean, so each sample's step does not depend on how many
other samples share its batch. L∞ sign steps are unaffected; an L2 step divides the gradient
by (‖∇‖ + 1e-10), and under a batch-mean loss that guard shortens the steps of very
confidently classified samples by an amount that depends on the batch size (torchattacks'
behaviour); under the summed loss it is negligible unless a sample's own ‖∇‖ is ~1e-10.
The model's parameters never receive gradients (``torch.autograd.grad`` w.r.t. the input
only) and every module's train/eval mode is restored.

Token inputs are not differentiable: :func:`char_substitution` is a greedy black-box
substitution attack for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import nn

from ..errors import InputError, SpecError

__all__ = [
    "AttackSpace",
    "TokenInputsError",
    "attack_batched",
    "attack_space",
    "char_substitution",
    "fgsm",
    "pgd",
    "success_rate",
    "transfer_rates",
    "transferable_mask",
]

NORMS = ("linf", "l2")
# Added to per-sample gradient norms before dividing (as torchattacks' PGDL2 does).
_DIV_GUARD = 1e-10


class TokenInputsError(InputError, ValueError):
    """Token (integer) inputs have no gradient attack space; use :func:`char_substitution`."""


# --------------------------------------------------------------------------------------
# attack space
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackSpace:
    """Where an attack lives in model input space.

    ``scale`` turns a user budget into model units (``eps_model = eps_raw * scale``);
    ``lo``/``hi`` bound every adversarial input (None: unbounded); ``how`` says where the
    bounds came from, for reports.
    """

    scale: float
    lo: float | None
    hi: float | None
    how: str

    def eps(self, eps_raw: float) -> float:
        """A budget in raw units (e.g. 8/255 for images) converted to model units."""
        return float(eps_raw) * self.scale


def attack_space(info: dict, x_test: torch.Tensor) -> AttackSpace:
    """The attack space of a dataset, from its DataBundle ``info`` and test inputs.

    With ``info["raw_range"] = [lo, hi]`` the box is the raw range mapped through the
    standardisation and ``scale = 1 / std``. Without it (e.g. log-mel features) the box is the
    observed min/max of ``x_test`` (a documented choice: no valid range is known) and ε is
    read in standardised units (``scale = 1``). Integer (token) inputs raise
    :class:`TokenInputsError` (a ValueError): they are attacked with :func:`char_substitution`.
    """
    if not torch.is_floating_point(x_test):
        raise TokenInputsError("token (integer) inputs have no gradient attack space; use char_substitution")
    if x_test.numel() == 0:
        raise InputError("attack_space: the test inputs are empty")
    norm = info.get("normalization") or {}
    mean = float(norm.get("mean", 0.0))
    std = float(norm.get("std", 1.0))
    if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
        raise InputError(f"attack_space: bad normalization mean={mean}, std={std}")
    raw = info.get("raw_range")
    if raw is not None:
        if len(raw) != 2 or not float(raw[0]) < float(raw[1]):
            raise InputError(f"attack_space: raw_range must be [lo, hi] with lo < hi, got {raw}")
        rlo, rhi = float(raw[0]), float(raw[1])
        how = f"raw range [{rlo:g}, {rhi:g}] mapped through the standardisation"
        if norm:
            how += f" (mean {mean:.4g}, std {std:.4g})"
        return AttackSpace(scale=1.0 / std, lo=(rlo - mean) / std, hi=(rhi - mean) / std, how=how)
    lo, hi = float(x_test.min()), float(x_test.max())
    return AttackSpace(
        scale=1.0,
        lo=lo,
        hi=hi,
        how="observed test range (no raw_range); eps in standardised units",
    )


# --------------------------------------------------------------------------------------
# gradient attacks
# --------------------------------------------------------------------------------------


class _EvalMode:
    """Put every module in eval mode; restore each module's own mode on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, training in self.modes:
            m.training = training


def _check_common(
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str,
    targeted: bool,
    target: torch.Tensor | None,
    lo: float | None,
    hi: float | None,
) -> torch.Tensor:
    """Validate the shared arguments; return the labels the loss is computed on."""
    if not torch.is_floating_point(x):
        raise TokenInputsError("gradient attacks need float inputs; token inputs use char_substitution")
    if x.ndim < 1 or y.ndim != 1 or len(y) != len(x):
        raise InputError(f"attack: inputs {tuple(x.shape)} and labels {tuple(y.shape)} do not match")
    if norm not in NORMS:
        raise SpecError(f"attack norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise SpecError(f"attack eps must be a finite number >= 0, got {eps}")
    if lo is not None and hi is not None and lo > hi:
        raise SpecError(f"attack bounds need lo <= hi, got [{lo}, {hi}]")
    if targeted:
        if target is None:
            raise SpecError("a targeted attack needs target class ids")
        if target.shape != y.shape:
            raise InputError(f"attack: targets {tuple(target.shape)} do not match labels {tuple(y.shape)}")
        return target.to(x.device).long()
    return y.to(x.device).long()


def _clip(x: torch.Tensor, lo: float | None, hi: float | None) -> torch.Tensor:
    if lo is None and hi is None:
        return x
    return torch.clamp(x, min=lo, max=hi)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector shaped to broadcast against a batch ``like``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def _l2(v: torch.Tensor) -> torch.Tensor:
    return torch.norm(v.reshape(len(v), -1), p=2, dim=1)


def _grad(model: nn.Module, xa: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Gradient w.r.t. the input of the attack objective (to be ascended).

    Untargeted: the summed cross-entropy of the true labels; targeted: minus the summed
    cross-entropy of the targets.
    """
    xa = xa.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xa), labels, reduction="sum")
        if targeted:
            loss = -loss
        (g,) = torch.autograd.grad(loss, xa, retain_graph=False, create_graph=False)
    return g


def _l2_direction(g: torch.Tensor) -> torch.Tensor:
    return g / _per_sample(_l2(g) + _DIV_GUARD, g)


def _draw(
    like: torch.Tensor,
    generator: torch.Generator | None,
    fill: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """A random tensor shaped like ``like``, drawn on the generator's device and moved over
    (a CPU generator then gives the same start on any device)."""
    dev = like.device if generator is None else generator.device
    return fill(torch.empty(like.shape, dtype=like.dtype, device=dev)).to(like.device)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str = "linf",
    targeted: bool = False,
    target: torch.Tensor | None = None,
    lo: float | None = None,
    hi: float | None = None,
) -> torch.Tensor:
    """One gradient step of size ``eps`` (FGSM for L∞; the fast gradient method for L2).

    L∞: ``x + eps·sign(∇)``; L2: ``x + eps·∇/‖∇‖`` (per-sample norm). The result is clipped
    to ``[lo, hi]`` when given. Untargeted attacks raise the loss of ``y``; targeted ones lower
    the loss of ``target``. ``eps = 0`` returns ``x`` unchanged.
    """
    labels = _check_common(x, y, eps, norm, targeted, target, lo, hi)
    x = x.detach()
    if eps == 0:
        return x.clone()
    with _EvalMode(model):
        g = _grad(model, x, labels, targeted)
    step = g.sign() if norm == "linf" else _l2_direction(g)
    return _clip(x + eps * step, lo, hi).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    targeted: bool = False,
    target: torch.Tensor | None = None,
    lo: float | None = None,
    hi: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al.) in L∞ or L2.

    Each step moves by ``step_size`` (default ``2.5·eps/steps``) along ``sign(∇)`` (L∞) or the
    per-sample normalised gradient (L2), projects the perturbation onto the ε-box / ε-ball
    (L2 norm over all non-batch dims) and clips to ``[lo, hi]`` when given, in that order (as
    torchattacks does). Random start: L∞ uniform in the box; L2 a uniform direction scaled by
    a radius ``eps·U(0, 1)`` (torchattacks' PGDL2 draw: uniform radius, not uniform in the
    ball), both drawn from ``generator`` and then clipped. ``eps = 0`` returns ``x`` unchanged.
    """
    labels = _check_common(x, y, eps, norm, targeted, target, lo, hi)
    if int(steps) != steps or steps < 1:
        raise SpecError(f"pgd steps must be a positive integer, got {steps}")
    alpha = 2.5 * eps / steps if step_size is None else float(step_size)
    if not (math.isfinite(alpha) and alpha >= 0):
        raise SpecError(f"pgd step_size must be a finite number >= 0, got {step_size}")
    x = x.detach()
    if eps == 0:
        return x.clone()
    adv = x.clone()
    if random_start:
        if norm == "linf":
            adv = adv + _draw(adv, generator, lambda t: t.uniform_(-eps, eps, generator=generator))
        else:
            delta = _draw(adv, generator, lambda t: t.normal_(generator=generator))
            n = _per_sample(_l2(delta), adv)
            r = _draw(n, generator, lambda t: t.uniform_(0, 1, generator=generator))
            adv = adv + delta * (r / n * eps)
        adv = _clip(adv, lo, hi)
    with _EvalMode(model):
        for _ in range(int(steps)):
            g = _grad(model, adv, labels, targeted)
            if norm == "linf":
                adv = adv + alpha * g.sign()
                delta = torch.clamp(adv - x, min=-eps, max=eps)
            else:
                adv = adv + alpha * _l2_direction(g)
                delta = adv - x
                factor = torch.clamp(eps / _l2(delta), max=1.0)  # norm 0 -> inf -> 1
                delta = delta * _per_sample(factor, delta)
            adv = _clip(x + delta, lo, hi).detach()
    return adv


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for p in model.parameters():
        return p.device
    return fallback


def attack_batched(
    fn: Callable[..., torch.Tensor],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 512,
    **kw: Any,
) -> torch.Tensor:
    """Run ``fn(model, xb, yb, **kw)`` over ``x`` in chunks of ``batch_size``.

    A ``target`` tensor in ``kw`` is chunked alongside. Chunks are moved to the model's device
    and the result comes back on ``x``'s device. A ``generator`` is shared by the chunks, so a
    seeded run is reproducible for a fixed batch size.
    """
    if batch_size < 1:
        raise SpecError(f"attack batch_size must be >= 1, got {batch_size}")
    if len(y) != len(x):
        raise InputError(f"attack: {len(x)} inputs but {len(y)} labels")
    target = kw.pop("target", None)
    if target is not None and len(target) != len(x):
        raise InputError(f"attack: {len(x)} inputs but {len(target)} targets")
    dev = _model_device(model, x.device)
    out = []
    for s in range(0, len(x), batch_size):
        sl = slice(s, s + batch_size)
        extra = {} if target is None else {"target": target[sl].to(dev)}
        out.append(fn(model, x[sl].to(dev), y[sl].to(dev), **kw, **extra).to(x.device))
    if not out:
        return x.detach().clone()
    return torch.cat(out)


# --------------------------------------------------------------------------------------
# token substitution
# --------------------------------------------------------------------------------------

# A substitution is kept only if it raises the attack score by more than this: a float-noise
# "gain" is not progress.
_MIN_GAIN = 1e-6


@torch.no_grad()
def _scores(
    model: nn.Module,
    tokens: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attack score (higher is better for the attacker) and predicted class, in batches."""
    sc, pred = [], []
    for s in range(0, len(tokens), batch_size):
        logits = model(tokens[s : s + batch_size])
        ce = F.cross_entropy(logits, labels[s : s + batch_size], reduction="none")
        sc.append(-ce if targeted else ce)
        pred.append(logits.argmax(1))
    return torch.cat(sc), torch.cat(pred)


def char_substitution(
    model: nn.Module,
    tokens: torch.Tensor,
    y: torch.Tensor,
    *,
    budget: int = 2,
    candidates: torch.Tensor,
    pad_id: int = 0,
    targeted: bool = False,
    target: torch.Tensor | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Greedy black-box substitution attack on token (character or word id) inputs.

    Up to ``budget`` rounds; in each, every sample not yet fooled tries every single-position
    substitution of a non-pad position (padding = ``pad_id`` in the *original* tokens) by
    every candidate id, and keeps the one that most raises the cross-entropy of ``y`` (or most
    lowers that of ``target`` when targeted), if it raises the score at all. A sample stops
    once it is fooled (prediction != y; == target when targeted) or no substitution helps, so
    at most ``budget`` positions change and padding never does. Candidates equal to
    ``pad_id`` are ignored (that would delete a token). All variants of a group of samples are
    built as one tensor and scored in model batches of ``batch_size``.
    """
    if tokens.ndim != 2 or torch.is_floating_point(tokens):
        raise InputError(
            f"char_substitution needs integer tokens of shape (n, length), got {tokens.dtype} {tuple(tokens.shape)}"
        )
    if y.shape != (len(tokens),):
        raise InputError(f"char_substitution: {len(tokens)} inputs but labels {tuple(y.shape)}")
    if int(budget) != budget or budget < 0:
        raise SpecError(f"char_substitution budget must be an integer >= 0, got {budget}")
    if batch_size < 1:
        raise SpecError(f"char_substitution batch_size must be >= 1, got {batch_size}")
    if targeted and (target is None or target.shape != y.shape):
        raise SpecError("a targeted char_substitution needs one target class id per sample")
    dev = _model_device(model, tokens.device)
    cand = torch.unique(torch.as_tensor(candidates).reshape(-1).long())
    cand = cand[cand != pad_id].to(dev)
    orig = tokens.detach().to(dev).long()
    cur = orig.clone()
    if budget == 0 or len(cand) == 0 or len(orig) == 0:
        return cur.to(tokens.device)
    labels = (target if targeted else y).to(dev).long()
    ytrue = y.to(dev).long()
    n, length = orig.shape
    n_cand = len(cand)
    valid = orig != pad_id

    with _EvalMode(model):
        score, pred = _scores(model, cur, labels, targeted, batch_size)
        fooled = (pred == labels) if targeted else (pred != ytrue)
        active = ~fooled
        # samples per group: keep the variant tensor near 64 model batches
        group = max(1, (64 * batch_size) // max(1, length * n_cand))
        for _ in range(int(budget)):
            idx = torch.nonzero(active).flatten()
            if len(idx) == 0:
                break
            for g0 in range(0, len(idx), group):
                gi = idx[g0 : g0 + group]
                rows, pos = torch.nonzero(valid[gi], as_tuple=True)  # (sample-in-group, pos)
                if len(rows) == 0:
                    active[gi] = False
                    continue
                k = len(rows)
                var = cur[gi[rows]].unsqueeze(1).expand(k, n_cand, length).clone()
                var[torch.arange(k, device=dev), :, pos] = cand.expand(k, n_cand)
                var = var.reshape(k * n_cand, length)
                vlab = labels[gi[rows]].repeat_interleave(n_cand)
                vscore, _ = _scores(model, var, vlab, targeted, batch_size)
                table = torch.full((len(gi), length, n_cand), -math.inf, dtype=vscore.dtype, device=dev)
                table[rows, pos] = vscore.view(k, n_cand)
                best, flat = table.view(len(gi), -1).max(1)
                better = best > score[gi] + _MIN_GAIN
                take = gi[better]
                bpos, bcand = flat[better] // n_cand, flat[better] % n_cand
                cur[take, bpos] = cand[bcand]
                active[gi[~better]] = False
            changed = torch.nonzero(active).flatten()
            if len(changed):
                s, p = _scores(model, cur[changed], labels[changed], targeted, batch_size)
                score[changed] = s
                now_fooled = (p == labels[changed]) if targeted else (p != ytrue[changed])
                active[changed[now_fooled]] = False
    return cur.to(tokens.device)


# --------------------------------------------------------------------------------------
# evaluation helpers (numpy in, numpy out)
# --------------------------------------------------------------------------------------


def _logits_labels(logits: ArrayLike, y: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    lg = np.asarray(logits)
    yy = np.asarray(y)
    if lg.ndim != 2 or yy.ndim != 1 or len(lg) != len(yy):
        raise InputError(f"{what}: need logits (n, classes) and labels (n,), got {lg.shape} and {yy.shape}")
    return lg, yy.astype(np.int64)


def _mask(mask: ArrayLike | None, n: int, what: str) -> np.ndarray:
    if mask is None:
        return np.ones(n, dtype=bool)
    m = np.asarray(mask)
    if m.shape != (n,) or m.dtype != bool:
        raise InputError(f"{what}: mask must be a boolean array of shape ({n},), got {m.dtype} {m.shape}")
    return m


def _rate(hits: np.ndarray) -> float:
    return float(hits.mean()) if hits.size else math.nan


def success_rate(
    logits: ArrayLike,
    y: ArrayLike,
    targeted: bool = False,
    target: ArrayLike | None = None,
) -> float:
    """Fraction of adversarial inputs on which the attack succeeded (NaN when empty).

    Untargeted: prediction != ``y``; targeted: prediction == ``target``.
    """
    lg, yy = _logits_labels(logits, y, "success_rate")
    pred = lg.argmax(1)
    if targeted:
        if target is None:
            raise SpecError("a targeted success rate needs target class ids")
        t = np.asarray(target).astype(np.int64)
        if t.shape != yy.shape:
            raise InputError(f"success_rate: targets {t.shape} do not match labels {yy.shape}")
        return _rate(pred == t)
    return _rate(pred != yy)


def transferable_mask(teacher_logits_clean: ArrayLike, teacher_logits_adv: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Samples the teacher classified right and whose adversarial version fools it.

    This is the transferable set that :func:`transfer_rates` is meant to be restricted to:
    only there did the teacher make an adversarial error a student could copy.
    """
    c, yy = _logits_labels(teacher_logits_clean, y, "transferable_mask")
    a, _ = _logits_labels(teacher_logits_adv, y, "transferable_mask")
    if c.shape != a.shape:
        raise InputError(f"transferable_mask: clean {c.shape} and adversarial {a.shape} logits differ")
    return (c.argmax(1) == yy) & (a.argmax(1) != yy)


def transfer_rates(
    student_logits_adv: ArrayLike,
    teacher_adv_labels: ArrayLike,
    y: ArrayLike,
    student_logits_clean: ArrayLike | None = None,
    mask: ArrayLike | None = None,
) -> dict[str, float | int]:
    """How a student fares on adversarial examples crafted on the teacher.

    ``mask`` (boolean, one per sample) restricts every rate to a subset; pass
    :func:`transferable_mask` (teacher right on the clean input, fooled on the adversarial one)
    so that only teacher errors a student could inherit count. Without it all samples count.
    Returns, over the masked samples (NaN when there are none):

    - ``fooled``: fraction the student misclassifies (argmax != y);
    - ``follows_teacher``: fraction where the student's label equals the teacher's adversarial
      label and that label is wrong (the teacher's error copied);
    - ``adv_accuracy``: student accuracy on the adversarial inputs (= 1 − fooled);
    - ``n``: number of masked samples;

    and with ``student_logits_clean`` also ``clean_accuracy`` (student on the clean inputs),
    ``n_correct`` (masked samples the student gets right when clean) and ``fooled_of_correct``
    = #(masked, right when clean, wrong when adversarial) / ``n_correct``: the attack flipped
    the student's own correct prediction, so its clean errors are not counted as transfer
    (the audit's ``adv_flipped@ε``; NaN when ``n_correct`` is 0).
    """
    lg, yy = _logits_labels(student_logits_adv, y, "transfer_rates")
    t = np.asarray(teacher_adv_labels)
    if t.shape != yy.shape:
        raise InputError(f"transfer_rates: teacher labels {t.shape} do not match labels {yy.shape}")
    t = t.astype(np.int64)
    m = _mask(mask, len(yy), "transfer_rates")
    pred = lg.argmax(1)[m]
    ym, tm = yy[m], t[m]
    out: dict[str, float | int] = {
        "fooled": _rate(pred != ym),
        "follows_teacher": _rate((pred == tm) & (tm != ym)),
        "adv_accuracy": _rate(pred == ym),
        "n": int(m.sum()),
    }
    if student_logits_clean is not None:
        cl, _ = _logits_labels(student_logits_clean, y, "transfer_rates")
        if cl.shape != lg.shape:
            raise InputError(f"transfer_rates: clean {cl.shape} and adversarial {lg.shape} logits differ")
        right = cl.argmax(1)[m] == ym
        out["clean_accuracy"] = _rate(right)
        out["fooled_of_correct"] = _rate(pred[right] != ym[right])
        out["n_correct"] = int(right.sum())
    return out
