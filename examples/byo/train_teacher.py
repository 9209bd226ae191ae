"""Train a teacher outside kdaudit, in plain PyTorch, and save it as safetensors.

    PYTHONPATH=examples/byo python examples/byo/train_teacher.py examples/byo/teacher.safetensors

It reads the same data the audit will (kdaudit's Fashion-MNIST loader with the audit's
options, so the standardisation matches) and trains ``mynets.ConvTeacher`` with Adam.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from kdaudit.data.base import load_dataset
from mynets import ConvTeacher


def main(path: str, epochs: int = 4) -> None:
    torch.manual_seed(0)
    data = load_dataset("fashion-mnist", train_subset=10000, flatten=True)
    model = ConvTeacher(data.input_shape, data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(epochs):
        model.train()
        for idx in torch.randperm(len(data.x_train)).split(128):
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
        print(f"epoch {epoch + 1}: test accuracy {acc:.4f}")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    print(f"saved {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "teacher.safetensors")
