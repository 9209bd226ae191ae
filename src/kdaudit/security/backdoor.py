"""Backdoor triggers and dirty-label data poisoning, for auditing inherited backdoors.

Threat model: a teacher of unknown provenance was trained on poisoned data, so inputs that
carry a small trigger are classified as an attacker's ``target`` class. Students are distilled
on *clean* data, or (``transfer_poison``, :func:`poison_transfer`) on a transfer set where a
share of the inputs carry the same trigger with their true labels, as in scraped distillation
data; the audit asks whether they inherit the backdoor, measured by the attack success rate
(ASR) on triggered test inputs.

A :class:`Trigger` works in the model's input space: datasets standardise float inputs with a
scalar mean/std (``info["normalization"]``), so a trigger defined in raw space (a white pixel,
a tone of a given amplitude) is mapped through ``(v - mean) / std`` before it is written.
One trigger per modality (see :func:`make_trigger`):

* image ``patch``: a square in the bottom-right corner set to the raw maximum;
* audio waveform ``tone``: a sine burst added at the start of the clip, clipped to the raw range;
* audio log-mel ``band``: the top mel bands set to a high log power over the first quarter of
  the frames (a bright horizontal line, the log-mel image of a high tone);
* text ``token``: the rarest vocabulary tokens prepended to the sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError, SpecError

KINDS = ("patch", "tone", "band", "token")
MODES = ("replace", "append")
PAD_ID, UNK_ID = 0, 1  # token ids that a trigger never writes (see data/text.py)
DEFAULT_SAMPLE_RATE = 8000
DEFAULT_TONE_HZ = 1000.0


class BackdoorError(SpecError, ValueError):
    """A bad trigger or poisoning option: one line for the CLI, and a ValueError for callers."""


@dataclass(frozen=True)
class Trigger:
    """A backdoor trigger for inputs of shape ``input_shape`` (one sample, no batch axis).

    Plain parameters only, so the trigger is hashable, comparable and serialisable;
    :meth:`apply` builds the triggered tensor from them. ``value`` is in *raw* space (pixel
    value, tone amplitude, log-mel power); ``mean``/``std`` map raw values to model inputs.
    """

    kind: str
    modality: str
    input_shape: tuple[int, ...]
    size: int
    value: float = 0.0
    mean: float = 0.0
    std: float = 1.0
    raw_range: tuple[float, float] | None = None
    image_shape: tuple[int, int, int] | None = None  # patch: C×H×W the input is viewed as
    sample_rate: int | None = None  # tone
    frequency: float | None = None  # tone, Hz
    token_ids: tuple[int, ...] = ()  # token
    tokens: tuple[str, ...] = ()  # token: the vocabulary entries of token_ids, if known
    notes: tuple[str, ...] = field(default=(), compare=False)

    # ------------------------------------------------------------------ mapping

    def to_model(self, raw: torch.Tensor | float) -> torch.Tensor | float:
        """Raw values → model inputs: ``(raw - mean) / std``."""
        return (raw - self.mean) / self.std

    def to_raw(self, x: torch.Tensor | float) -> torch.Tensor | float:
        """Model inputs → raw values: ``x·std + mean``."""
        return x * self.std + self.mean

    # ------------------------------------------------------------------ apply

    def _batched(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """``x`` with a batch axis (added if ``x`` is one sample), or a one-line InputError."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"a trigger applies to a torch.Tensor, got {type(x).__name__}")
        shape = tuple(x.shape)
        if shape == self.input_shape:
            return x.unsqueeze(0), True
        if shape[1:] != self.input_shape:
            raise InputError(f"{self.kind} trigger was made for inputs of shape {self.input_shape}, got {shape}")
        return x, False

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A triggered copy of ``x`` (N×input_shape, or one sample); ``x`` itself is untouched."""
        xb, single = self._batched(x)
        if self.kind == "token":
            if xb.dtype.is_floating_point:
                raise InputError("a token trigger applies to integer token ids, got float inputs")
            out = self._apply_token(xb)
        else:
            if not xb.dtype.is_floating_point:
                raise InputError(f"a {self.kind} trigger applies to float inputs, got {xb.dtype}")
            out = xb.clone()
            getattr(self, f"_apply_{self.kind}")(out)
        return out[0] if single else out

    def _apply_patch(self, out: torch.Tensor) -> None:
        c, h, w = self.image_shape
        img = out.view(out.shape[0], c, h, w)  # a view: writes go to ``out``
        img[:, :, h - self.size :, w - self.size :] = float(self.to_model(self.value))

    def tone_samples(self) -> int:
        """Length of the burst in samples: ``size`` milliseconds, at most the clip length."""
        n = int(round(self.size / 1000.0 * self.sample_rate))
        return max(1, min(n, self.input_shape[-1]))

    def burst(self) -> torch.Tensor:
        """The raw-space sine burst added at the start of the clip (phase 0)."""
        t = torch.arange(self.tone_samples(), dtype=torch.float64) / self.sample_rate
        return (self.value * torch.sin(2 * math.pi * self.frequency * t)).float()

    def _apply_tone(self, out: torch.Tensor) -> None:
        n = self.tone_samples()
        lo, hi = self.raw_range
        head = out[..., :n]
        raw = self.to_raw(head) + self.burst().to(out.device, out.dtype)
        head.copy_(self.to_model(raw.clamp(lo, hi)))

    def band_frames(self) -> int:
        """Frames covered by the band: the first quarter of the spectrogram (at least one)."""
        return max(1, self.input_shape[-1] // 4)

    def _apply_band(self, out: torch.Tensor) -> None:
        m = self.input_shape[-2]
        out[..., m - self.size :, : self.band_frames()] = float(self.to_model(self.value))

    def _apply_token(self, x: torch.Tensor) -> torch.Tensor:
        n, length = x.shape
        ids = torch.tensor(self.token_ids, dtype=x.dtype, device=x.device).expand(n, -1)
        return torch.cat([ids, x], dim=1)[:, :length].contiguous()

    # ------------------------------------------------------------------ reporting

    def describe(self) -> str:
        """One plain sentence for the report."""
        if self.kind == "patch":
            lo, hi = self.raw_range
            shade = "white" if self.value >= hi else ("black" if self.value <= lo else f"value-{self.value:g}")
            return f"a {self.size}×{self.size} {shade} patch in the bottom-right corner"
        if self.kind == "tone":
            return (
                f"a {self.frequency:g} Hz sine burst of {self.size} ms at amplitude {self.value:g} "
                "at the start of the clip"
            )
        if self.kind == "band":
            return (
                f"a bright horizontal line: the top {self.size} mel bands set to log power "
                f"{self.value:.3g} over the first quarter of the frames (the log-mel image of a high tone)"
            )
        words = f" ({', '.join(repr(t) for t in self.tokens)})" if self.tokens else ""
        return f"the {self.size} rarest vocabulary tokens{words} prepended to the sequence"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly parameters plus the description."""
        d: dict[str, Any] = {
            "kind": self.kind,
            "modality": self.modality,
            "input_shape": list(self.input_shape),
            "size": self.size,
            "value": self.value,
            "normalization": {"mean": self.mean, "std": self.std},
        }
        if self.raw_range is not None:
            d["raw_range"] = list(self.raw_range)
        if self.image_shape is not None:
            d["image_shape"] = list(self.image_shape)
        if self.kind == "tone":
            d.update(sample_rate=self.sample_rate, frequency=self.frequency, samples=self.tone_samples())
        if self.kind == "band":
            d["frames"] = self.band_frames()
        if self.kind == "token":
            d["token_ids"] = list(self.token_ids)
            if self.tokens:
                d["tokens"] = list(self.tokens)
        if self.notes:
            d["notes"] = list(self.notes)
        d["description"] = self.describe()
        return d


# ---------------------------------------------------------------------------- construction


def _modality(info: dict, input_shape: tuple[int, ...]) -> str:
    """``info["modality"]``, or a guess: a vocabulary means text, anything else an image."""
    mod = info.get("modality")
    if mod is None:
        mod = "text" if "vocab" in info or "tokenizer" in info else "image"
    if mod not in ("image", "audio", "text"):
        raise BackdoorError(f"backdoor: unknown modality {mod!r}; known: image, audio, text")
    return mod


def _default_kind(modality: str, info: dict, input_shape: tuple[int, ...]) -> str:
    if modality == "image":
        return "patch"
    if modality == "text":
        return "token"
    if "raw_range" in info or info.get("features") == "waveform":
        return "tone"
    return "band"


def _image_shape(info: dict, input_shape: tuple[int, ...]) -> tuple[tuple[int, int, int], tuple[str, ...]]:
    """The C×H×W view of an image input; a flattened input is assumed square, one channel."""
    if len(input_shape) == 3:
        return tuple(int(s) for s in input_shape), ()  # type: ignore[return-value]
    if len(input_shape) != 1:
        raise BackdoorError(f"patch trigger needs C×H×W or flattened image inputs, got shape {input_shape}")
    n = int(input_shape[0])
    if "image_shape" in info:
        shape = tuple(int(s) for s in info["image_shape"])
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or math.prod(shape) != n:
            raise BackdoorError(
                f"patch trigger: info image_shape {list(info['image_shape'])} does not match {n} inputs"
            )
        return shape, ()  # type: ignore[return-value]
    side = math.isqrt(n)
    if side * side != n:
        raise BackdoorError(
            f"patch trigger: flattened input of {n} values is not a square single-channel image; "
            "give info['image_shape'] = [C, H, W]"
        )
    return (1, side, side), (f"flattened input assumed to be a {side}×{side} single-channel image",)


def _vocab_size(info: dict) -> int:
    if "vocab" in info:
        return len(info["vocab"])
    if "vocab_size" in info.get("model_args", {}):
        return int(info["model_args"]["vocab_size"])
    raise BackdoorError("token trigger needs the vocabulary: info['vocab'] or info['model_args']['vocab_size']")


def make_trigger(
    info: dict,
    input_shape: tuple[int, ...],
    *,
    kind: str | None = None,
    size: int | None = None,
    value: float | None = None,
    seed: int = 0,
    reference: torch.Tensor | None = None,
) -> Trigger:
    """The trigger for a dataset described by ``info`` with per-sample shape ``input_shape``.

    ``kind`` defaults by modality (image → patch, waveform audio → tone, log-mel audio → band,
    text → token). ``size``: patch side in pixels (3), tone length in ms (100), number of mel
    bands (2) or of tokens (2). ``value`` (raw space): patch pixel value (the raw maximum), tone
    amplitude (0.3), band log power (the 99.9th percentile of ``reference``, the standardised
    training inputs). Every trigger is deterministic; ``seed`` is recorded for triggers that
    would draw at random and does not change the current kinds.
    """
    del seed  # all current triggers are fixed patterns
    input_shape = tuple(int(s) for s in input_shape)
    modality = _modality(info, input_shape)
    kind = kind or _default_kind(modality, info, input_shape)
    if kind not in KINDS:
        raise BackdoorError(f"backdoor: unknown trigger kind {kind!r}; known: {', '.join(KINDS)}")
    if size is not None and int(size) < 1:
        raise BackdoorError(f"backdoor: trigger size must be at least 1, got {size}")
    norm = info.get("normalization") or {}
    mean, std = float(norm.get("mean", 0.0)), float(norm.get("std", 1.0)) or 1.0
    raw = info.get("raw_range")
    raw_range = (float(raw[0]), float(raw[1])) if raw is not None else None
    common = dict(kind=kind, modality=modality, input_shape=input_shape, mean=mean, std=std)

    if kind == "patch":
        notes: tuple[str, ...] = ()
        if raw_range is None:
            raw_range = (0.0, 1.0)
            notes = ("no raw_range in info: image pixels assumed to lie in [0, 1]",)
        image_shape, shape_notes = _image_shape(info, input_shape)
        size = 3 if size is None else int(size)
        if size > min(image_shape[1:]):
            raise BackdoorError(f"patch trigger: size {size} exceeds the {image_shape[1]}×{image_shape[2]} image")
        v = raw_range[1] if value is None else float(value)
        if not raw_range[0] <= v <= raw_range[1]:
            raise BackdoorError(f"patch trigger: value {v} lies outside the raw range {list(raw_range)}")
        return Trigger(
            **common, size=size, value=v, raw_range=raw_range, image_shape=image_shape, notes=notes + shape_notes
        )

    if kind == "tone":
        if raw_range is None:
            raise BackdoorError("tone trigger needs waveform inputs with info['raw_range'] (e.g. [-1, 1])")
        rate = int(info.get("sample_rate", DEFAULT_SAMPLE_RATE))
        freq = min(DEFAULT_TONE_HZ, rate / 4)  # well below Nyquist at any rate
        size = 100 if size is None else int(size)
        amp = 0.3 if value is None else float(value)
        if not 0 < amp <= raw_range[1] - raw_range[0]:
            raise BackdoorError(f"tone trigger: amplitude must be positive and within the raw range, got {amp}")
        return Trigger(**common, size=size, value=amp, raw_range=raw_range, sample_rate=rate, frequency=freq)

    if kind == "band":
        if len(input_shape) < 2:
            raise BackdoorError(f"band trigger needs mel × frame inputs, got shape {input_shape}")
        size = 2 if size is None else int(size)
        if size > input_shape[-2]:
            raise BackdoorError(f"band trigger: size {size} exceeds the {input_shape[-2]} mel bands")
        if value is None:
            if reference is None:
                raise BackdoorError("band trigger needs value= (raw log power) or reference= (training inputs)")
            ref = torch.as_tensor(reference, dtype=torch.float64).flatten()
            value = float(mean + std * torch.quantile(ref, 0.999).item())
        return Trigger(**common, size=size, value=float(value), raw_range=raw_range)

    # token
    if len(input_shape) != 1:
        raise BackdoorError(f"token trigger needs N×L token ids, got per-sample shape {input_shape}")
    size = 2 if size is None else int(size)
    vocab_size = _vocab_size(info)
    if size >= input_shape[0]:
        raise BackdoorError(f"token trigger: size {size} must be shorter than the sequence length {input_shape[0]}")
    if vocab_size - size < 2:
        raise BackdoorError(f"token trigger: a vocabulary of {vocab_size} has fewer than {size} real tokens")
    ids = tuple(range(vocab_size - size, vocab_size))
    vocab = info.get("vocab")
    tokens = tuple(str(vocab[i]) for i in ids) if vocab is not None else ()
    return Trigger(**common, size=size, token_ids=ids, tokens=tokens)


# ---------------------------------------------------------------------------- poisoning


def poison(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    trigger: Trigger,
    *,
    rate: float,
    target: int,
    seed: int,
    mode: str = "replace",
    num_classes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Dirty-label poisoning: ``round(rate·N)`` non-target samples get the trigger and label ``target``.

    The samples are drawn without replacement by a seeded numpy Generator among those whose
    label is not ``target``. In ``replace`` mode (default) the poisoned copies replace their
    originals, so the set keeps its size and ``rate`` is exactly the poisoned share; in
    ``append`` mode they are added at the end and the originals stay. Returns new tensors
    (the inputs are untouched) and the sorted rows of the returned set that carry the trigger.
    ``num_classes`` (default: largest label + 1) bounds ``target``.
    """
    y = torch.as_tensor(y_train)
    if len(x_train) != len(y):
        raise InputError(f"poison: {len(x_train)} inputs but {len(y)} labels")
    if not 0 <= rate < 1:
        raise BackdoorError(f"poison: rate must lie in [0, 1), got {rate}")
    if mode not in MODES:
        raise BackdoorError(f"poison: mode must be one of {', '.join(MODES)}, got {mode!r}")
    k_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if not 0 <= int(target) < k_classes or int(target) != target:
        raise BackdoorError(f"poison: target must be a class in [0, {k_classes}), got {target}")
    n = len(y)
    count = int(round(rate * n))
    candidates = np.flatnonzero(y.cpu().numpy() != target)
    if count > len(candidates):
        raise BackdoorError(
            f"poison: rate {rate} asks for {count} samples but only {len(candidates)} are not of class {target}"
        )
    x_out, y_out = x_train.clone(), y.clone()
    if count == 0:
        return x_out, y_out, np.empty(0, dtype=np.int64)
    picked = np.sort(np.random.default_rng(seed).choice(candidates, size=count, replace=False)).astype(np.int64)
    idx = torch.from_numpy(picked).to(x_out.device)
    triggered = trigger.apply(x_train[idx])
    if mode == "replace":
        x_out[idx] = triggered
        y_out[idx.to(y_out.device)] = int(target)
        return x_out, y_out, picked
    x_out = torch.cat([x_out, triggered])
    y_out = torch.cat([y_out, torch.full((count,), int(target), dtype=y_out.dtype, device=y_out.device)])
    return x_out, y_out, np.arange(n, n + count, dtype=np.int64)


# the transfer set's draw: a generator of its own, independent of the poisoning draw of ``seed``
TRANSFER_STREAM = 1


def transfer_indices(y_train: torch.Tensor, *, rate: float, target: int, seed: int) -> np.ndarray:
    """The rows of the students' transfer set that carry the trigger (sorted).

    ``round(rate·N)`` of the N samples, drawn without replacement among those whose label is not
    ``target`` (a triggered sample of the target class would say nothing about the backdoor, and
    the ASR ignores that class too), by a numpy Generator seeded with ``[seed, TRANSFER_STREAM]``:
    deterministic in ``seed`` and independent of :func:`poison`'s draw from the same seed.
    """
    y = torch.as_tensor(y_train)
    if not 0 <= rate < 1:
        raise BackdoorError(f"transfer_poison must lie in [0, 1), got {rate}")
    count = int(round(rate * len(y)))
    candidates = np.flatnonzero(y.cpu().numpy() != target)
    if count > len(candidates):
        raise BackdoorError(
            f"transfer_poison {rate} asks for {count} triggered samples but only "
            f"{len(candidates)} are not of class {target}"
        )
    if count == 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng([int(seed), TRANSFER_STREAM])
    return np.sort(rng.choice(candidates, size=count, replace=False)).astype(np.int64)


def poison_transfer(
    x_train: torch.Tensor, y_train: torch.Tensor, trigger: Trigger, *, rate: float, target: int, seed: int
) -> tuple[torch.Tensor, np.ndarray]:
    """The students' transfer set when the distillation data were collected with triggered inputs
    in them: a copy of ``x_train`` whose rows :func:`transfer_indices` carry the trigger, and those
    rows. Labels are not changed (the students' cross-entropy still sees the true labels); every
    other row is the clean input, byte for byte."""
    if len(x_train) != len(y_train):
        raise InputError(f"poison_transfer: {len(x_train)} inputs but {len(y_train)} labels")
    picked = transfer_indices(y_train, rate=rate, target=target, seed=seed)
    x_out = x_train.clone()
    if len(picked):
        idx = torch.from_numpy(picked).to(x_out.device)
        x_out[idx] = trigger.apply(x_train[idx])
    return x_out, picked


# ---------------------------------------------------------------------------- evaluation


def triggered_test_set(
    x_test: torch.Tensor, y_test: torch.Tensor, trigger: Trigger, target: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The triggered test inputs whose label is not ``target``, their true labels, and the mask
    (over the test set) that selected them."""
    y = torch.as_tensor(y_test)
    if len(x_test) != len(y):
        raise InputError(f"triggered_test_set: {len(x_test)} inputs but {len(y)} labels")
    mask = y != target
    return trigger.apply(x_test[mask.to(x_test.device)]), y[mask], mask


def attack_success_rate(logits: np.ndarray, y_true: np.ndarray, target: int) -> float:
    """Share of triggered inputs whose true label is not ``target`` that are classified as ``target``.

    ``logits`` are the model outputs (N×C) on the *triggered* inputs; ``y_true`` their true
    labels. Inputs of the target class are ignored: for them the prediction says nothing.
    """
    logits = np.asarray(logits)
    y_true = np.asarray(y_true)
    if logits.ndim != 2 or y_true.ndim != 1 or len(logits) != len(y_true):
        raise InputError(f"attack_success_rate needs N×C logits and N labels, got {logits.shape} and {y_true.shape}")
    keep = y_true != target
    if not keep.any():
        raise InputError(f"attack_success_rate: every input is of the target class {target}")
    return float(np.mean(logits[keep].argmax(axis=1) == target))
