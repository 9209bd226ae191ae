"""A user's own teacher architecture, named in a spec by import path (``mynets:ConvTeacher``).

kdaudit calls it with the spec's ``kwargs`` plus ``input_shape`` and ``num_classes``, because
its signature declares them.
"""

from __future__ import annotations

import math

from torch import nn


class ConvTeacher(nn.Module):
    """Two conv blocks and a linear head, on flattened 28×28 images (the student is an MLP)."""

    def __init__(self, input_shape, num_classes, width: int = 16):
        super().__init__()
        side = int(math.isqrt(math.prod(input_shape)))
        self.side = side
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width * (side // 4) ** 2, num_classes)

    def forward(self, x):
        return self.head(self.features(x.view(len(x), 1, self.side, self.side)))
