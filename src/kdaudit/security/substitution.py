"""A greedy black-box substitution attack for token inputs, which have no gradient attack space."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, SpecError
from .space import EvalMode, model_device

__all__ = ["char_substitution"]

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


def _check(
    tokens: torch.Tensor,
    y: torch.Tensor,
    budget: int,
    targeted: bool,
    target: torch.Tensor | None,
    batch_size: int,
) -> None:
    """Validate the arguments of :func:`char_substitution`."""
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


class _Search:
    """The state of one greedy search: current tokens, their scores and the samples still active."""

    def __init__(
        self,
        model: nn.Module,
        orig: torch.Tensor,
        labels: torch.Tensor,
        ytrue: torch.Tensor,
        cand: torch.Tensor,
        pad_id: int,
        targeted: bool,
        batch_size: int,
    ) -> None:
        self.model, self.labels, self.ytrue, self.cand = model, labels, ytrue, cand
        self.targeted, self.batch_size = targeted, batch_size
        self.cur = orig.clone()
        self.valid = orig != pad_id
        self.score, pred = _scores(model, self.cur, labels, targeted, batch_size)
        self.active = ~self._fooled(pred, slice(None))

    def _fooled(self, pred: torch.Tensor, idx: torch.Tensor | slice) -> torch.Tensor:
        return (pred == self.labels[idx]) if self.targeted else (pred != self.ytrue[idx])

    def round(self, group: int) -> bool:
        """One substitution for every active sample, in groups of ``group`` samples; False when none is active."""
        idx = torch.nonzero(self.active).flatten()
        if len(idx) == 0:
            return False
        for g0 in range(0, len(idx), group):
            self._substitute(idx[g0 : g0 + group])
        changed = torch.nonzero(self.active).flatten()
        if len(changed):
            s, p = _scores(self.model, self.cur[changed], self.labels[changed], self.targeted, self.batch_size)
            self.score[changed] = s
            self.active[changed[self._fooled(p, changed)]] = False
        return True

    def _substitute(self, gi: torch.Tensor) -> None:
        """Try every single-position substitution of the samples ``gi``; keep each one's best if it helps."""
        cand, cur = self.cand, self.cur
        n_cand, length, dev = len(cand), cur.shape[1], cur.device
        rows, pos = torch.nonzero(self.valid[gi], as_tuple=True)  # (sample-in-group, pos)
        if len(rows) == 0:
            self.active[gi] = False
            return
        k = len(rows)
        var = cur[gi[rows]].unsqueeze(1).expand(k, n_cand, length).clone()
        var[torch.arange(k, device=dev), :, pos] = cand.expand(k, n_cand)
        var = var.reshape(k * n_cand, length)
        vlab = self.labels[gi[rows]].repeat_interleave(n_cand)
        vscore, _ = _scores(self.model, var, vlab, self.targeted, self.batch_size)
        table = torch.full((len(gi), length, n_cand), -math.inf, dtype=vscore.dtype, device=dev)
        table[rows, pos] = vscore.view(k, n_cand)
        best, flat = table.view(len(gi), -1).max(1)
        better = best > self.score[gi] + _MIN_GAIN
        take = gi[better]
        bpos, bcand = flat[better] // n_cand, flat[better] % n_cand
        cur[take, bpos] = cand[bcand]
        self.active[gi[~better]] = False


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
    _check(tokens, y, budget, targeted, target, batch_size)
    dev = model_device(model, tokens.device)
    cand = torch.unique(torch.as_tensor(candidates).reshape(-1).long())
    cand = cand[cand != pad_id].to(dev)
    orig = tokens.detach().to(dev).long()
    if budget == 0 or len(cand) == 0 or len(orig) == 0:
        return orig.clone().to(tokens.device)
    labels = (target if targeted and target is not None else y).to(dev).long()
    length = orig.shape[1]
    with EvalMode(model):
        search = _Search(model, orig, labels, y.to(dev).long(), cand, pad_id, targeted, batch_size)
        # samples per group: keep the variant tensor near 64 model batches
        group = max(1, (64 * batch_size) // max(1, length * len(cand)))
        for _ in range(int(budget)):
            if not search.round(group):
                break
    return search.cur.to(tokens.device)
