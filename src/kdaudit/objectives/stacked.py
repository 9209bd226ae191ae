"""The distillation objective of K jobs at once, for students trained as one vectorised ensemble.

Each job k has its own α, temperature T, ``kd_loss`` and ``t2_scaling`` and its own soft-target
table; :class:`StackedLoss` gives the K losses of one step from K × B logits in a few batched
kernels instead of K calls of :func:`kdaudit.objectives.losses.distillation_loss`, with the same
numbers up to the order of float sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import soft_target_table


class StackedLoss:
    """The K members' objectives at once (:mod:`kdaudit.objectives.losses`, member by member):
    CE_k at α_k = 0, else (1 − α_k)·CE_k + α_k·[T_k²]·H(p_k, q_k) (or KL), where p_k is a row of
    member k's soft-target table at its temperature, gathered from the stacked unique tables.
    The same numbers as the loop over members, up to the order of float sums."""

    def __init__(self, params: list[dict], targets: list[torch.Tensor | None], dev: torch.device, kd: str) -> None:
        self.kd_loss = kd
        soft: list[bool] = []
        tables: list[tuple[torch.Tensor, ...]] = []
        index: dict[tuple[int, float], int] = {}
        ids: list[int] = []
        for m, t in zip(params, targets, strict=True):
            alpha, temperature = float(m.get("alpha", 0.0)), float(m.get("temperature", 1.0))
            soft.append(alpha > 0.0 and t is not None)
            if not soft[-1]:
                ids.append(0)
                continue
            assert t is not None
            key = (id(t), temperature)
            if key not in index:
                index[key] = len(tables)
                tables.append(soft_target_table(t, temperature, kd))
            ids.append(index[key])
        self.any_soft = bool(tables)
        self.tables = tuple(torch.stack([tb[j] for tb in tables]) for j in range(len(tables[0]))) if tables else ()
        self.ids = torch.tensor(ids, device=dev)
        self.soft = torch.tensor(soft, device=dev)
        self.alpha = torch.tensor([float(m.get("alpha", 0.0)) for m in params], device=dev)
        temps = [float(m.get("temperature", 1.0)) for m in params]
        self.temperature = torch.tensor(temps, device=dev).view(-1, 1, 1)
        scale = [t**2 if m.get("t2_scaling", False) else 1.0 for m, t in zip(params, temps, strict=True)]
        self.scale = torch.tensor(scale, device=dev)

    @classmethod
    def of(cls, params: list[dict], targets: list[torch.Tensor | None], dev: torch.device) -> StackedLoss | None:
        """The stacked loss of jobs ``params`` (their α, T, kd_loss, t2_scaling) with soft-target
        logits ``targets``; None when their KD losses differ (then a loop over the jobs)."""
        kinds = {str(m.get("kd_loss", "ce")) for m in params}
        return cls(params, targets, dev, kinds.pop()) if len(kinds) == 1 else None

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        k, b, c = logits.shape
        ce = F.cross_entropy(logits.reshape(k * b, c), y.reshape(-1), reduction="none").view(k, b).mean(dim=1)
        if not self.any_soft:
            return ce
        log_q = F.log_softmax(logits / self.temperature, dim=2)
        rows = self.ids.view(k, 1).expand(k, b)
        if self.kd_loss == "kl":
            log_p, p = self.tables[0][rows, idx], self.tables[1][rows, idx]
            term = (p * (log_p - log_q)).sum(dim=2).mean(dim=1)
        else:
            term = -(self.tables[0][rows, idx] * log_q).sum(dim=2).mean(dim=1)
        kd = (1.0 - self.alpha) * ce + self.alpha * (term * self.scale)
        return torch.where(self.soft, kd, ce)
