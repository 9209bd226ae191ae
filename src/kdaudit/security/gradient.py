"""Gradient attacks in the model's input space: FGSM and PGD in L∞ and L2.

:func:`fgsm` and :func:`pgd` follow torchattacks' order of operations (step, project onto the
ε-ball, clip to the box), so they agree with ``torchattacks.FGSM`` / ``PGD`` / ``PGDL2`` on the
same model. One deliberate difference: the loss is the *sum* of the per-sample cross-entropies,
not their mean, so each sample's step does not depend on how many other samples share its batch.
L∞ sign steps are unaffected; an L2 step divides the gradient by (‖∇‖ + 1e-10), and under a
batch-mean loss that guard shortens the steps of very confidently classified samples by an amount
that depends on the batch size (torchattacks' behaviour); under the summed loss it is negligible
unless a sample's own ‖∇‖ is ~1e-10. The model's parameters never receive gradients
(``torch.autograd.grad`` w.r.t. the input only) and every module's train/eval mode is restored.
Budgets and bounds are in model units: :func:`kdaudit.security.space.attack_space` converts them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, SpecError
from .space import EvalMode, TokenInputsError, model_device

__all__ = ["NORMS", "attack_batched", "fgsm", "pgd"]

NORMS = ("linf", "l2")
# Added to per-sample gradient norms before dividing (as torchattacks' PGDL2 does).
_DIV_GUARD = 1e-10


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
    with EvalMode(model):
        g = _grad(model, x, labels, targeted)
    step = g.sign() if norm == "linf" else _l2_direction(g)
    return _clip(x + eps * step, lo, hi).detach()


def _random_start(
    x: torch.Tensor, eps: float, norm: str, lo: float | None, hi: float | None, generator: torch.Generator | None
) -> torch.Tensor:
    """PGD's random start: L∞ uniform in the ε-box; L2 a normal direction scaled to a radius
    ``eps·U(0, 1)``; then clipped to ``[lo, hi]``."""
    if norm == "linf":
        adv = x + _draw(x, generator, lambda t: t.uniform_(-eps, eps, generator=generator))
    else:
        delta = _draw(x, generator, lambda t: t.normal_(generator=generator))
        n = _per_sample(_l2(delta), x)
        r = _draw(n, generator, lambda t: t.uniform_(0, 1, generator=generator))
        adv = x + delta * (r / n * eps)
    return _clip(adv, lo, hi)


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
    adv = _random_start(x, eps, norm, lo, hi, generator) if random_start else x.clone()
    with EvalMode(model):
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
    dev = model_device(model, x.device)
    out = []
    for s in range(0, len(x), batch_size):
        sl = slice(s, s + batch_size)
        extra = {} if target is None else {"target": target[sl].to(dev)}
        out.append(fn(model, x[sl].to(dev), y[sl].to(dev), **kw, **extra).to(x.device))
    if not out:
        return x.detach().clone()
    return torch.cat(out)
