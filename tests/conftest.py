import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_overrides():
    """A protocol small enough for end-to-end tests: digits, 2 seeds, 1 epoch."""
    return ["protocol.seeds=2", "train.epochs=1", "model.kwargs.hidden=[16]"]
