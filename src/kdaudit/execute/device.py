"""Where a job trains: the device named by ``train.device``, its settings, and the data on it.

``auto`` is the first CUDA device when torch sees one, else the CPU (``mps`` only when asked
for). Only the device's class (cpu / cuda / mps) enters a job's key, where it is not the CPU
(:func:`kdaudit.plan.jobs.device_class`): the CPU keys are those kdaudit always had, and a job trained on cuda:1 is
the same job as on cuda:0.

Determinism on CUDA (``train.deterministic``, on by default): cuBLAS gets a fixed workspace
(``CUBLAS_WORKSPACE_CONFIG=:4096:8``, set before the first CUDA call of the process), cuDNN its
deterministic algorithms without autotuning, and torch its deterministic implementations where
they exist (``torch.use_deterministic_algorithms(True, warn_only=True)``: an operation without
one warns and runs anyway rather than failing the audit). So the same spec gives the same
numbers on the same GPU model with the same torch and CUDA; numbers differ between GPU models,
between CUDA versions and between a GPU and the CPU. TF32 (``train.tf32``) is off unless asked
for: it rounds matrix-product inputs to 10 mantissa bits.
"""

from __future__ import annotations

import os
import platform
from contextlib import AbstractContextManager, nullcontext

import torch

from ..errors import SpecError

CUBLAS_WORKSPACE = ":4096:8"


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """``train.device`` as a torch device, or a one-line error saying why it cannot be used."""
    if name == "auto":
        return torch.device("cuda") if cuda_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not cuda_available():
            raise SpecError(
                f"train.device: {name} asked for, but torch sees no CUDA device (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use train.device=cpu or auto"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise SpecError(
                f"train.device: {name} asked for, but torch sees {count} CUDA device(s): cuda:0..{count - 1}"
            )
    if dev.type == "mps" and not mps_available():
        raise SpecError("train.device: mps asked for, but this torch has no usable MPS backend; use cpu or auto")
    return dev


# set in a worker process that was given one GPU (CUDA_VISIBLE_DEVICES): its jobs train on that GPU,
# cuda:0 there, whatever index train.device names
GPU_WORKER_ENV = "KDAUDIT_GPU_WORKER"


def visible_gpus() -> list[str]:
    """The GPUs this process may hand to workers: CUDA_VISIBLE_DEVICES's entries, else 0..n-1."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())] if cuda_available() else []


def gpu_slots(name: str, jobs_per_gpu: int) -> list[str]:
    """One entry per worker process of a GPU audit, the GPU it is given: every visible GPU
    ``jobs_per_gpu`` times (``cuda`` / ``auto``), or the one named GPU (``cuda:N``), interleaved
    (g0, g1, g0, g1) so that the first workers started spread over the GPUs."""
    dev = torch.device(name) if name != "auto" else torch.device("cuda")
    gpus = visible_gpus()
    if dev.index is not None:
        gpus = [gpus[dev.index]] if dev.index < len(gpus) else [str(dev.index)]
    return [g for _ in range(jobs_per_gpu) for g in gpus]  # interleaved: the first workers spread out


def pin_gpu(gpu: str) -> None:
    """Make ``gpu`` this worker process's only GPU (before its first CUDA call)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ[GPU_WORKER_ENV] = "1"


def job_device(name: str, key_class: str) -> torch.device:
    """The device a job trains on here: ``train.device`` resolved, which must be of the class the
    job's key was made for (a job planned for CUDA never trains on the CPU by mistake)."""
    if key_class == "cuda" and os.environ.get(GPU_WORKER_ENV):
        name = "cuda"  # the worker's one GPU
    dev = resolve_device(key_class if name == "auto" else name)
    if dev.type != key_class:
        raise SpecError(
            f"train.device: this job was planned for {key_class} but would train on {dev}; "
            "plan and train on the same kind of device (set train.device explicitly)"
        )
    return dev


def device_name(dev: torch.device) -> str:
    """The device in words, as records and reports state it."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def prepare_cuda_env() -> None:
    """cuBLAS's deterministic workspace, before any CUDA call in this process (and its workers)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


# torch reads the cuBLAS workspace size once per process, at its first cuBLAS call: set it when
# kdaudit's execution code is imported, before any job (or a memory probe, or a teacher's
# evaluation) touches a GPU; worker processes inherit it
prepare_cuda_env()


def configure(dev: torch.device, train: dict) -> None:
    """The process-wide numeric settings of a job on ``dev``: TF32 and determinism on CUDA."""
    if dev.type != "cuda":
        return
    tf32 = bool(train.get("tf32", False))
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    deterministic = bool(train.get("deterministic", True))
    if deterministic:
        prepare_cuda_env()
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def autocast(dev: torch.device, precision: str) -> AbstractContextManager:
    """Autocast of the forward pass: bf16 or fp16 on ``dev``; fp32 runs without it."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(dev.type, dtype=dtype)


def grad_scaler(dev: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16's gradient scaler (the loss scaled up so small gradients survive fp16); none otherwise."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(dev.type)


# -- the training set on the device ---------------------------------------------------------------

_ON_DEVICE: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def fits(nbytes: int, dev: torch.device, share: float = 0.5) -> bool:
    """Whether ``nbytes`` may live on ``dev``: at most ``share`` of its free memory on CUDA."""
    if dev.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(dev)
    return nbytes <= share * free


def on_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """``t`` on ``dev``, copied once per process and kept while ``t`` lives (the training set
    of every job of an audit is the same tensor)."""
    if t.device == dev:
        return t
    key = (id(t), str(dev))
    hit = _ON_DEVICE.get(key)
    if hit is not None and hit[0] is t:
        return hit[1]
    if len(_ON_DEVICE) >= 4:
        _ON_DEVICE.clear()
    moved = t.to(dev)
    _ON_DEVICE[key] = (t, moved)
    return moved


class Batches:
    """Training inputs batched by index on ``dev``: the whole tensor moved once when it fits,
    else each batch gathered on the host from pinned memory and copied asynchronously."""

    def __init__(self, x: torch.Tensor, dev: torch.device) -> None:
        self.dev = dev
        self.resident = dev.type == "cpu" or fits(x.element_size() * x.nelement(), dev)
        if self.resident:
            self.x = on_device(x, dev)
        else:
            self.x = x.pin_memory() if dev.type == "cuda" else x

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """The rows ``idx`` (an index tensor on ``dev``) on ``dev``."""
        if self.resident:
            return self.x.index_select(0, idx)
        rows = self.x.index_select(0, idx.cpu())
        return rows.pin_memory().to(self.dev, non_blocking=True) if self.dev.type == "cuda" else rows.to(self.dev)
