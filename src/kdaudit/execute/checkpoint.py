"""Mid-run checkpoints: a killed job resumes from its last finished epoch, with the same result.

A checkpoint is ONE safetensors file (written atomically by :func:`kdaudit.io.save_safetensors`, so
it is either the old or the new one, never half of each) holding the model weights, the optimiser
state tensors and the global torch RNG state (dropout); its metadata holds the number of
finished epochs, the loss history and the optimiser's non-tensor state. The data order needs no
saving: every epoch's batches derive from the job's seed, so a resumed job simply continues at
the next epoch's batches. No pickles are involved.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..io import save_safetensors


class Checkpointer:
    """The mid-run checkpoint of one job at ``path``, saved every ``every`` epochs."""

    def __init__(self, path: str | Path, every: int) -> None:
        if every < 1:
            raise ValueError("checkpoint interval must be ≥ 1 epoch")
        self.path = Path(path)
        self.every = int(every)

    def due(self, epoch: int, epochs: int) -> bool:
        """Save after ``epoch`` (1-based)? Never after the last one: the job then finishes."""
        return epoch % self.every == 0 and epoch < epochs

    def save(
        self,
        epoch: int,
        model: torch.nn.Module,
        opt: torch.optim.Optimizer,
        history: list[dict],
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """Save the state after ``epoch`` finished epochs (failpoint ``checkpoint.write`` before the
        rename): weights, optimiser, the CPU and (on a GPU) CUDA random states, and fp16's
        gradient scale."""
        tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        opt_state = opt.state_dict()
        scalars: dict[str, dict] = {}
        for pid, st in opt_state["state"].items():
            for name, value in st.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"opt.{pid}.{name}"] = value.detach().contiguous().clone()
                else:
                    scalars.setdefault(str(pid), {})[name] = value
        tensors["rng.torch"] = torch.get_rng_state()
        dev = _device_of(model)
        if dev.type == "cuda":  # dropout on a GPU draws from the CUDA generator
            tensors["rng.cuda"] = torch.cuda.get_rng_state(dev)
        meta = {
            "epoch": str(epoch),
            "history": json.dumps(history),
            "opt_scalars": json.dumps(scalars),
            "param_groups": json.dumps(opt_state["param_groups"]),
        }
        if scaler is not None:
            meta["grad_scaler"] = json.dumps(scaler.state_dict())
        save_safetensors(self.path, tensors, meta, fail="checkpoint.write")

    def load(
        self, model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None
    ) -> tuple[int, list[dict]] | None:
        """Restore model, optimiser, RNG states and gradient scale; returns (finished epochs,
        history) or None."""
        if not self.path.exists():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as fh:
                meta = fh.metadata()
            tensors = load_file(str(self.path))
            epoch = int(meta["epoch"])
            history = json.loads(meta["history"])
            scalars = json.loads(meta["opt_scalars"])
            groups = json.loads(meta["param_groups"])
            scale = json.loads(meta["grad_scaler"]) if scaler is not None and "grad_scaler" in meta else None
        except (SafetensorError, OSError, KeyError, ValueError):
            self.clear()  # unreadable: start the job afresh
            return None
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        for pid, values in scalars.items():
            state.setdefault(int(pid), {}).update(values)
        opt.load_state_dict({"state": state, "param_groups": groups})
        torch.set_rng_state(tensors["rng.torch"])
        dev = _device_of(model)
        if "rng.cuda" in tensors and dev.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], dev)
        if scaler is not None and scale is not None:
            scaler.load_state_dict(scale)
        return epoch, history

    def clear(self) -> None:
        """Remove the checkpoint and the temporaries of writes to it that were cut short."""
        folder, name = self.path.parent, self.path.name
        for p in [*folder.glob(name + "*"), *folder.glob(f".{name}.tmp-*")]:
            p.unlink(missing_ok=True)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device
