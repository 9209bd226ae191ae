"""Objective registry (losses of PROTOCOL §2)."""

from .losses import OBJECTIVES, distillation_loss  # noqa: F401
