"""A test input shown as itself: a small image, a spectrogram of a sound, or the decoded text.

:func:`render_input` turns one test input (as the models saw it) and the data's info
(``data.json``) into a :class:`Rendered` input: an RGB or grayscale ``uint8`` picture
(written as a PNG by :func:`write_png`) or a text snippet. Images are shown with their
standardisation (``info["normalization"]``) undone; audio as a log spectrogram (of the waveform,
or the log-mel features as they are); token ids are decoded with the saved tokenizer and
vocabulary. An input that cannot be shown renders as None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdaudit.io import atomic_write

__all__ = ["Rendered", "render_input", "write_png"]

#: the shorter side of an image thumbnail, in pixels (small images are scaled up, pixels kept sharp)
MIN_SIDE = 72
MAX_SIDE = 192
TEXT_LIMIT = 160


@dataclass(frozen=True)
class Rendered:
    """A picture (H×W or H×W×3 ``uint8``) or a text snippet."""

    picture: np.ndarray | None = None
    text: str | None = None


def write_png(path: Path, picture: np.ndarray) -> Path:
    """Write a ``uint8`` picture as a PNG, atomically."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(picture))
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", optimize=True))


def render_input(x: np.ndarray, info: Mapping[str, Any]) -> Rendered | None:
    """One test input as a picture or a text, by the data's modality; None if it cannot be shown."""
    x = np.asarray(x)
    modality = info.get("modality")
    if modality == "text" or np.issubdtype(x.dtype, np.integer):
        return Rendered(text=decode_tokens(x, info))
    if not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        return None
    if modality == "audio":
        return Rendered(picture=_upscale(_colour(audio_picture(x))))
    picture = image_picture(x, info)
    return None if picture is None else Rendered(picture=_upscale(picture))


# ----------------------------------------------------------------------------------- text
def decode_tokens(ids: np.ndarray, info: Mapping[str, Any]) -> str:
    """Token ids back to text with the saved tokenizer (characters joined, words spaced);
    the ids themselves without a vocabulary."""
    row = [int(i) for i in np.asarray(ids).reshape(-1)]
    vocab = info.get("vocab")
    tok = info.get("tokenizer") or {}
    pad = int((info.get("model_args") or {}).get("pad_id", 0))
    if not isinstance(vocab, Sequence) or not vocab:
        return _shorten("token ids: " + " ".join(str(i) for i in row if i != pad))
    words = [str(vocab[i]) if 0 <= i < len(vocab) else "<unk>" for i in row if i != pad]
    joiner = "" if tok.get("kind") == "char" else " "
    return _shorten(joiner.join(words))


def _shorten(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


# ----------------------------------------------------------------------------------- images
def _image_shape(x: np.ndarray, info: Mapping[str, Any]) -> tuple[int, ...] | None:
    shape = info.get("image_shape")
    if isinstance(shape, Sequence) and shape and math.prod(int(s) for s in shape) == x.size:
        return tuple(int(s) for s in shape)
    if x.ndim == 2 or (x.ndim == 3 and x.shape[0] in (1, 3)):
        return tuple(x.shape)
    return None


def _unstandardise(img: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
    """``img`` (C×H×W) in its raw range: the recorded ``x * std + mean`` undone per channel."""
    norm = info.get("normalization")
    if not isinstance(norm, Mapping):
        return img
    mean = np.asarray(norm.get("mean", 0.0), dtype=float).reshape(-1)
    std = np.asarray(norm.get("std", 1.0), dtype=float).reshape(-1)
    if mean.size not in (1, img.shape[0]) or std.size not in (1, img.shape[0]):
        return img
    return img * std[:, None, None] + mean[:, None, None]


def image_picture(x: np.ndarray, info: Mapping[str, Any]) -> np.ndarray | None:
    """An image input as ``uint8`` pixels (grayscale or RGB), in its raw range when known."""
    shape = _image_shape(x, info)
    if shape is None:
        return None
    img = x.reshape(shape).astype(float)
    if img.ndim == 2:
        img = img[None]
    img = _unstandardise(img, info)
    raw = info.get("raw_range")
    lo, hi = (float(raw[0]), float(raw[1])) if isinstance(raw, Sequence) and len(raw) == 2 else (img.min(), img.max())
    scaled = np.clip((img - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    pixels = np.rint(255 * scaled).astype(np.uint8)
    return pixels.transpose(1, 2, 0) if pixels.shape[0] == 3 else pixels[0]


# ----------------------------------------------------------------------------------- audio
def audio_picture(x: np.ndarray) -> np.ndarray:
    """A sound as a log spectrogram in [0, 1], low frequencies at the bottom: log-mel features
    (C×mels×frames) as they are, a waveform through a short-time Fourier transform."""
    a = np.squeeze(np.asarray(x, dtype=float))
    if a.ndim == 1:
        a = _log_spectrogram(a)
    elif a.ndim > 2:
        a = a.reshape(-1, a.shape[-1])
    lo, hi = np.percentile(a, 1), a.max()
    return np.clip((a - lo) / ((hi - lo) or 1.0), 0.0, 1.0)[::-1]


def _log_spectrogram(wave: np.ndarray, n_fft: int = 128) -> np.ndarray:
    n_fft = max(8, min(n_fft, len(wave)))
    hop = n_fft // 2
    frames = [wave[i : i + n_fft] for i in range(0, len(wave) - n_fft + 1, hop)]
    spec = np.abs(np.fft.rfft(np.stack(frames) * np.hanning(n_fft), axis=1)).T
    return np.log(spec + 1e-6)


def _colour(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] through the ``magma`` colour map, as RGB ``uint8``."""
    from matplotlib import colormaps

    rgba = colormaps["magma"](values)
    return np.rint(255 * rgba[..., :3]).astype(np.uint8)


def _upscale(picture: np.ndarray) -> np.ndarray:
    """Scale a small picture up by a whole factor (sharp pixels) so its shorter side is at least
    :data:`MIN_SIDE`, its longer side at most :data:`MAX_SIDE`."""
    h, w = picture.shape[:2]
    factor = max(1, min(math.ceil(MIN_SIDE / max(1, min(h, w))), MAX_SIDE // max(1, max(h, w))))
    if factor > 1:
        picture = np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)
    if max(picture.shape[:2]) > 2 * MAX_SIDE:  # a large input: keep every k-th pixel
        step = math.ceil(max(picture.shape[:2]) / (2 * MAX_SIDE))
        picture = picture[::step, ::step]
    return picture
