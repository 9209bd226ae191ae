"""Backdoor triggers: small patterns written into model inputs, one per modality.

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
from typing import Any, TypedDict, TypeVar, overload

import torch

from ..errors import InputError, SpecError

__all__ = ["KINDS", "BackdoorError", "Trigger", "make_trigger"]

KINDS = ("patch", "tone", "band", "token")
PAD_ID, UNK_ID = 0, 1  # token ids that a trigger never writes (see data/text.py)
DEFAULT_SAMPLE_RATE = 8000
DEFAULT_TONE_HZ = 1000.0

_T = TypeVar("_T")


class BackdoorError(SpecError, ValueError):
    """A bad trigger or poisoning option: one line for the CLI, and a ValueError for callers."""


def _given(value: _T | None, kind: str, what: str) -> _T:
    """``value``, or a one-line error when a trigger lacks a parameter its kind needs."""
    if value is None:
        raise BackdoorError(f"a {kind} trigger needs {what}")
    return value


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

    @overload
    def to_model(self, raw: torch.Tensor) -> torch.Tensor: ...
    @overload
    def to_model(self, raw: float) -> float: ...
    def to_model(self, raw: torch.Tensor | float) -> torch.Tensor | float:
        """Raw values → model inputs: ``(raw - mean) / std``."""
        return (raw - self.mean) / self.std

    @overload
    def to_raw(self, x: torch.Tensor) -> torch.Tensor: ...
    @overload
    def to_raw(self, x: float) -> float: ...
    def to_raw(self, x: torch.Tensor | float) -> torch.Tensor | float:
        """Model inputs → raw values: ``x·std + mean``."""
        return x * self.std + self.mean

    def _raw_range(self) -> tuple[float, float]:
        return _given(self.raw_range, self.kind, "a raw range")

    def _sample_rate(self) -> int:
        return _given(self.sample_rate, self.kind, "a sample rate")

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
        c, h, w = _given(self.image_shape, self.kind, "an image shape")
        img = out.view(out.shape[0], c, h, w)  # a view: writes go to ``out``
        img[:, :, h - self.size :, w - self.size :] = float(self.to_model(self.value))

    def tone_samples(self) -> int:
        """Length of the burst in samples: ``size`` milliseconds, at most the clip length."""
        n = int(round(self.size / 1000.0 * self._sample_rate()))
        return max(1, min(n, self.input_shape[-1]))

    def burst(self) -> torch.Tensor:
        """The raw-space sine burst added at the start of the clip (phase 0)."""
        t = torch.arange(self.tone_samples(), dtype=torch.float64) / self._sample_rate()
        frequency = _given(self.frequency, self.kind, "a frequency")
        return (self.value * torch.sin(2 * math.pi * frequency * t)).float()

    def _apply_tone(self, out: torch.Tensor) -> None:
        n = self.tone_samples()
        lo, hi = self._raw_range()
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
            lo, hi = self._raw_range()
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
        c, h, w = (int(s) for s in input_shape)
        return (c, h, w), ()
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
        c, h, w = shape
        return (c, h, w), ()
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


class _Common(TypedDict):
    """The fields every trigger has."""

    kind: str
    modality: str
    input_shape: tuple[int, ...]
    mean: float
    std: float


def _patch_trigger(
    common: _Common, info: dict, raw_range: tuple[float, float] | None, size: int | None, value: float | None
) -> Trigger:
    notes: tuple[str, ...] = ()
    if raw_range is None:
        raw_range = (0.0, 1.0)
        notes = ("no raw_range in info: image pixels assumed to lie in [0, 1]",)
    image_shape, shape_notes = _image_shape(info, common["input_shape"])
    size = 3 if size is None else int(size)
    if size > min(image_shape[1:]):
        raise BackdoorError(f"patch trigger: size {size} exceeds the {image_shape[1]}×{image_shape[2]} image")
    v = raw_range[1] if value is None else float(value)
    if not raw_range[0] <= v <= raw_range[1]:
        raise BackdoorError(f"patch trigger: value {v} lies outside the raw range {list(raw_range)}")
    return Trigger(
        **common, size=size, value=v, raw_range=raw_range, image_shape=image_shape, notes=notes + shape_notes
    )


def _tone_trigger(
    common: _Common, info: dict, raw_range: tuple[float, float] | None, size: int | None, value: float | None
) -> Trigger:
    if raw_range is None:
        raise BackdoorError("tone trigger needs waveform inputs with info['raw_range'] (e.g. [-1, 1])")
    rate = int(info.get("sample_rate", DEFAULT_SAMPLE_RATE))
    freq = min(DEFAULT_TONE_HZ, rate / 4)  # well below Nyquist at any rate
    size = 100 if size is None else int(size)
    amp = 0.3 if value is None else float(value)
    if not 0 < amp <= raw_range[1] - raw_range[0]:
        raise BackdoorError(f"tone trigger: amplitude must be positive and within the raw range, got {amp}")
    return Trigger(**common, size=size, value=amp, raw_range=raw_range, sample_rate=rate, frequency=freq)


def _band_trigger(
    common: _Common,
    raw_range: tuple[float, float] | None,
    size: int | None,
    value: float | None,
    reference: torch.Tensor | None,
) -> Trigger:
    input_shape = common["input_shape"]
    if len(input_shape) < 2:
        raise BackdoorError(f"band trigger needs mel × frame inputs, got shape {input_shape}")
    size = 2 if size is None else int(size)
    if size > input_shape[-2]:
        raise BackdoorError(f"band trigger: size {size} exceeds the {input_shape[-2]} mel bands")
    if value is None:
        if reference is None:
            raise BackdoorError("band trigger needs value= (raw log power) or reference= (training inputs)")
        ref = torch.as_tensor(reference, dtype=torch.float64).flatten()
        value = float(common["mean"] + common["std"] * torch.quantile(ref, 0.999).item())
    return Trigger(**common, size=size, value=float(value), raw_range=raw_range)


def _token_trigger(common: _Common, info: dict, size: int | None) -> Trigger:
    input_shape = common["input_shape"]
    if len(input_shape) != 1:
        raise BackdoorError(f"token trigger needs N×L token ids, got per-sample shape {input_shape}")
    size = 2 if size is None else int(size)
    vocab_size = _vocab_size(info)
    if size >= input_shape[0]:
        raise BackdoorError(f"token trigger: size {size} must be shorter than the sequence length {input_shape[0]}")
    if vocab_size - size <= max(PAD_ID, UNK_ID):
        raise BackdoorError(f"token trigger: a vocabulary of {vocab_size} has fewer than {size} real tokens")
    ids = tuple(range(vocab_size - size, vocab_size))
    vocab = info.get("vocab")
    tokens = tuple(str(vocab[i]) for i in ids) if vocab is not None else ()
    return Trigger(**common, size=size, token_ids=ids, tokens=tokens)


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
    common = _Common(kind=kind, modality=modality, input_shape=input_shape, mean=mean, std=std)
    if kind == "patch":
        return _patch_trigger(common, info, raw_range, size, value)
    if kind == "tone":
        return _tone_trigger(common, info, raw_range, size, value)
    if kind == "band":
        return _band_trigger(common, raw_range, size, value, reference)
    return _token_trigger(common, info, size)
