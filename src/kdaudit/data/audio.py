"""Audio features (wav I/O, HTK mel filterbank, log-mel) and the ``spoken-digits`` dataset.

``spoken-digits`` is a small offline speech benchmark: the words "zero".."nine" synthesised by
espeak-ng (several English voices × voice variants, each take with its own seeded speed and
pitch) and flite (its built-in voices, takes varied by sox ``tempo``/``pitch``). The clips are
generated once, deterministically from the seed, into a cache folder keyed by a hash of the
recipe; train and test are split *by speaker*, so the test set measures generalisation to
unseen voices rather than to unseen takes of known ones.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, SpecError
from .base import DATASETS, DataBundle, to_bundle

# ----------------------------------------------------------------------------- features


def _soundfile():
    try:
        import soundfile
    except ImportError:
        raise InputError("reading audio files needs the soundfile package: pip install soundfile") from None
    return soundfile


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file as a float32 mono waveform in [-1, 1] (channels averaged) and its sample rate."""
    sf = _soundfile()
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, sf.SoundFileError) as exc:
        raise InputError(f"cannot read audio file {path}: {exc}") from None
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return np.ascontiguousarray(wave, dtype=np.float32), int(rate)


def fix_length(wave: np.ndarray, n: int, *, center: bool = False) -> np.ndarray:
    """``wave`` zero-padded or trimmed to exactly ``n`` samples.

    By default the end is padded or cut (the clip keeps its start); with ``center`` the
    padding or cut is split between both ends, so a short word sits in the middle.
    """
    wave = np.asarray(wave)
    extra = n - len(wave)
    if extra == 0:
        return wave.copy()
    before = extra // 2 if center else 0
    if extra > 0:
        return np.pad(wave, (before, extra - before))
    cut = (-extra) // 2 if center else 0
    return wave[cut : cut + n].copy()


def hz_to_mel(f):
    """HTK mel scale: 2595·log10(1 + f/700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, as an ``n_freqs × n_mels`` matrix.

    Rows are the STFT bins (0 .. sample_rate/2, evenly spaced); column m is a triangle rising
    from the (m)-th to the (m+1)-th and falling to the (m+2)-th of ``n_mels + 2`` points spaced
    evenly in mel between ``f_min`` and ``f_max``. Unnormalised (peak 1), like HTK.
    """
    f_max = sample_rate / 2 if f_max is None else float(f_max)
    if n_freqs < 2 or n_mels < 1:
        raise SpecError(f"mel filterbank needs n_freqs >= 2 and n_mels >= 1, got {n_freqs}, {n_mels}")
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise SpecError(
            f"mel filterbank needs 0 <= f_min < f_max <= sample_rate/2, got {f_min}, {f_max}, {sample_rate}"
        )
    freqs = np.linspace(0.0, sample_rate / 2, n_freqs)[:, None]
    pts = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = pts[:-2], pts[1:-1], pts[2:]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32))


def default_n_fft(sample_rate: int) -> int:
    """A 64 ms window (512 samples at 8 kHz, 1024 at 16 kHz); the default hop is half of it."""
    return int(round(0.064 * sample_rate))


def log_mel(
    waves: torch.Tensor | np.ndarray,
    sample_rate: int,
    n_fft: int | None = None,
    hop_length: int | None = None,
    n_mels: int = 32,
    f_min: float = 0.0,
    f_max: float | None = None,
    frames_multiple: int = 4,
) -> torch.Tensor:
    """Log mel power spectrogram: ``log(mel power + 1e-6)``, N×T waveforms → N×1×n_mels×frames.

    STFT with a periodic Hann window of ``n_fft`` samples, ``center=True`` (reflect padding),
    power |X|². Defaults: 64 ms window, 32 ms hop, so one second gives 32 frames at any rate.
    The frame count is trimmed to a multiple of ``frames_multiple`` so patch-based models
    (e.g. a ViT with 4×4 patches) tile it exactly.
    """
    x = torch.as_tensor(waves, dtype=torch.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise InputError(f"log_mel expects N×T waveforms, got shape {tuple(x.shape)}")
    n_fft = n_fft or default_n_fft(sample_rate)
    hop_length = hop_length or n_fft // 2
    if x.shape[1] <= n_fft // 2:
        raise InputError(f"log_mel: clips of {x.shape[1]} samples are too short for n_fft={n_fft}")
    spec = torch.stft(
        x,
        n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=torch.hann_window(n_fft),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = spec.real.square() + spec.imag.square()  # N × freqs × frames
    fb = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max)
    mel = torch.matmul(power.transpose(1, 2), fb).transpose(1, 2)  # N × mels × frames
    out = torch.log(mel + 1e-6)
    frames = out.shape[-1]
    if frames_multiple > 1 and frames >= frames_multiple:
        out = out[..., : frames - frames % frames_multiple]
    return out.unsqueeze(1).contiguous()


FEATURES = ("waveform", "logmel")


def check_features(name: str, features: str) -> None:
    if features not in FEATURES:
        raise SpecError(f"dataset {name!r}: features must be one of {', '.join(FEATURES)}, got {features!r}")


def make_features(
    waves: np.ndarray, sample_rate: int, features: str, n_mels: int = 32, chunk: int = 1024
) -> np.ndarray:
    """N×T float32 waveforms → N×1×T (``waveform``) or N×1×n_mels×frames (``logmel``).

    The log-mel is computed in chunks so the complex STFT of a large set never sits in memory.
    """
    if features == "waveform":
        return waves[:, None, :].astype(np.float32, copy=False)
    parts = [
        log_mel(torch.from_numpy(waves[i : i + chunk]), sample_rate, n_mels=n_mels).numpy()
        for i in range(0, len(waves), chunk)
    ]
    return np.concatenate(parts)


# ----------------------------------------------------------------------------- spoken digits

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4")
ESPEAK_SPEAKERS = tuple(f"{v}+{var}" for v in ESPEAK_VOICES for var in ESPEAK_VARIANTS)
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
ESPEAK_SPEED = (130, 210)  # words per minute (espeak-ng default 175)
ESPEAK_PITCH = (25, 75)  # 0..99 (default 50)
FLITE_TEMPO = (0.85, 1.15)  # sox tempo factor
FLITE_PITCH = (-300, 300)  # sox pitch shift in cents
# Strip leading and trailing silence (below -60 dB) so the word can be centred in the 1 s clip.
TRIM = ["silence", "1", "0.01", "0.1%", "reverse", "silence", "1", "0.01", "0.1%", "reverse"]
RECIPE_VERSION = 1
TOOLS = ("espeak-ng", "flite", "sox")
WORKERS = 4
MANIFEST_FIELDS = ("file", "digit", "word", "speaker", "tool", "voice", "take", "speed", "pitch")


def _check_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise InputError(
            f"spoken-digits needs espeak-ng, flite and sox ({', '.join(missing)} not found): "
            "apt-get install espeak-ng flite sox"
        )


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    """Run a tool silently; its failure is a one-line InputError quoting its last stderr line."""
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    except OSError as exc:
        raise InputError(f"spoken-digits: cannot run {cmd[0]}: {exc}") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(
            f"spoken-digits: {' '.join(cmd[:3])} ... failed (exit {proc.returncode})"
            + (f": {lines[-1]}" if lines else "")
        )
    return proc.stdout


def tool_versions() -> dict[str, str]:
    """Each tool's version number: part of the cache key, as output may change."""
    out = {}
    for tool in TOOLS:
        try:  # flite --version exits with status 1, so the status is not checked
            proc = subprocess.run([tool, "--version"], capture_output=True, check=False)
        except OSError as exc:
            raise InputError(f"spoken-digits: cannot run {tool}: {exc}") from None
        text = (proc.stdout + proc.stderr).decode(errors="replace")
        found = re.search(r"\d+(?:\.\d+)+", text)
        out[tool] = found.group(0) if found else text.strip()
    return out


def default_data_dir(name: str) -> Path:
    """``$KDAUDIT_DATA/<name>`` if KDAUDIT_DATA is set, else ``~/.cache/kdaudit/<name>``."""
    if os.environ.get("KDAUDIT_DATA"):
        return Path(os.environ["KDAUDIT_DATA"]) / name
    return Path.home() / ".cache" / "kdaudit" / name


def _slug(speaker: str) -> str:
    return speaker.replace(":", "-").replace("+", "_")


def recipe_jobs(n_speakers: int | None, takes: int, seed: int) -> list[dict]:
    """Every clip to synthesise, with its drawn speed and pitch, in a fixed order.

    Each speaker draws its takes from its own Generator (seed, speaker index), so a speaker
    sounds the same whichever other speakers a smaller recipe keeps.
    """
    total = len(ESPEAK_SPEAKERS)
    keep: Sequence[int]
    if n_speakers is None:
        keep = range(total)
    else:
        if not 1 <= n_speakers <= total:
            raise SpecError(f"spoken-digits: n_speakers must lie in [1, {total}], got {n_speakers}")
        keep = sorted(np.random.default_rng([seed, 7]).permutation(total)[:n_speakers].tolist())
    if takes < 1:
        raise SpecError(f"spoken-digits: takes must be >= 1, got {takes}")
    jobs = []
    for i in keep:
        rng = np.random.default_rng([seed, 1, i])
        for d, word in enumerate(WORDS):
            for t in range(takes):
                jobs.append(
                    dict(
                        digit=d,
                        word=word,
                        speaker=f"espeak:{ESPEAK_SPEAKERS[i]}",
                        tool="espeak-ng",
                        voice=ESPEAK_SPEAKERS[i],
                        take=t,
                        speed=int(rng.integers(ESPEAK_SPEED[0], ESPEAK_SPEED[1] + 1)),
                        pitch=int(rng.integers(ESPEAK_PITCH[0], ESPEAK_PITCH[1] + 1)),
                    )
                )
    for i, voice in enumerate(FLITE_VOICES):
        rng = np.random.default_rng([seed, 2, i])
        for d, word in enumerate(WORDS):
            for t in range(takes):
                jobs.append(
                    dict(
                        digit=d,
                        word=word,
                        speaker=f"flite:{voice}",
                        tool="flite",
                        voice=voice,
                        take=t,
                        speed=round(float(rng.uniform(*FLITE_TEMPO)), 3),
                        pitch=int(rng.integers(FLITE_PITCH[0], FLITE_PITCH[1] + 1)),
                    )
                )
    for job in jobs:
        job["file"] = f"{job['word']}_{_slug(str(job['speaker']))}_{job['take']}.wav"
    return jobs


def recipe_key(jobs: list[dict], sample_rate: int, versions: dict[str, str]) -> str:
    """Short hash of everything that determines the clips: jobs, rate, trim effect, tool versions."""
    blob = json.dumps(
        {"version": RECIPE_VERSION, "jobs": jobs, "sample_rate": sample_rate, "trim": TRIM, "tools": versions},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _synthesise(job: dict, folder: Path, sample_rate: int) -> None:
    """One clip: the tool's speech, silence-trimmed and converted to mono 16-bit at ``sample_rate``.

    sox runs with ``-R -D`` (repeatable, no dither) so its output does not depend on the clock.
    """
    out = folder / job["file"]
    convert = ["sox", "-R", "-D"]
    fmt = ["-r", str(sample_rate), "-c", "1", "-b", "16", str(out)]
    if job["tool"] == "espeak-ng":
        speech = _run(
            ["espeak-ng", "-v", job["voice"], "-s", str(job["speed"]), "-p", str(job["pitch"]), "--stdout", job["word"]]
        )
        _run([*convert, "-t", "wav", "-", *fmt, *TRIM], stdin=speech)
    else:
        raw = folder / f".{job['file']}.flite.wav"
        _run(["flite", "-voice", job["voice"], "-t", job["word"], "-o", str(raw)])
        _run([*convert, str(raw), *fmt, "tempo", str(job["speed"]), "pitch", str(job["pitch"]), *TRIM])
        raw.unlink()
    if not out.exists() or out.stat().st_size <= 44:
        raise InputError(f"spoken-digits: {job['tool']} produced no audio for {job['word']!r} ({job['voice']})")


def _write_manifest(path: Path, jobs: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        w.writeheader()
        for job in jobs:
            w.writerow({k: job[k] for k in MANIFEST_FIELDS})


def read_manifest(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def generate(root: Path, key: str, jobs: list[dict], sample_rate: int) -> float:
    """Synthesise ``jobs`` into ``root/key`` and return the seconds it took.

    Clips go to a hidden sibling folder that is renamed to ``key`` only once every clip and the
    manifest are written, so a cache folder that exists is always complete; on any error the
    partial folder is removed. Partial folders left by a killed run are swept after an hour.
    """
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{key}.partial-*"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.partial-", dir=root))
    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            futures = [pool.submit(_synthesise, job, tmp, sample_rate) for job in jobs]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            error = next((e for f in done if (e := f.exception()) is not None), None)
            if error is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise error
        _write_manifest(tmp / "manifest.csv", jobs)
        try:
            os.rename(tmp, root / key)
        except OSError:
            if not (root / key / "manifest.csv").exists():  # not a concurrent run that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return time.perf_counter() - start


def split_speakers(speakers: list[str], test_fraction: float, seed: int) -> set[str]:
    """The held-out speakers: a seeded ``test_fraction`` of them (at least one, never all)."""
    if not 0 < test_fraction < 1:
        raise SpecError(f"spoken-digits: test_speakers must lie in (0, 1), got {test_fraction}")
    if len(speakers) < 2:
        raise InputError("spoken-digits: need at least 2 speakers to split train/test by speaker")
    n_test = min(len(speakers) - 1, max(1, round(test_fraction * len(speakers))))
    order = np.random.default_rng([seed, 3]).permutation(len(speakers))
    return {sorted(speakers)[i] for i in order[:n_test]}


@DATASETS.register("spoken-digits")
def spoken_digits(
    n_speakers: int | None = None,
    takes: int = 3,
    seed: int = 0,
    test_speakers: float = 0.2,
    features: str = "logmel",
    sample_rate: int = 8000,
    n_mels: int = 32,
    data_dir: str | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 0,
) -> DataBundle:
    """Synthesised spoken digits, split by speaker; clips are generated once and cached.

    ``n_speakers`` espeak-ng speakers (voice+variant; None = all 60) plus the 5 flite voices,
    ``takes`` clips per speaker and digit, 1 s each at ``sample_rate``.
    """
    check_features("spoken-digits", features)
    if not 0 < test_speakers < 1:
        raise SpecError(f"spoken-digits: test_speakers must lie in (0, 1), got {test_speakers}")
    if sample_rate < 4000:
        raise SpecError(f"spoken-digits: sample_rate must be >= 4000, got {sample_rate}")
    _check_tools()
    jobs = recipe_jobs(n_speakers, takes, seed)
    key = recipe_key(jobs, sample_rate, tool_versions())
    root = Path(data_dir).expanduser() if data_dir else default_data_dir("spoken-digits")
    folder = root / key
    if not (folder / "manifest.csv").exists():
        generate(root, key, jobs, sample_rate)
    rows = read_manifest(folder / "manifest.csv")
    waves = np.empty((len(rows), sample_rate), np.float32)
    for i, row in enumerate(rows):
        wave, rate = read_wav(folder / row["file"])
        if rate != sample_rate:
            raise InputError(f"spoken-digits: {folder / row['file']} has rate {rate}, expected {sample_rate}")
        waves[i] = fix_length(wave, sample_rate, center=True)
    labels = np.array([int(r["digit"]) for r in rows], np.int64)
    speakers = [r["speaker"] for r in rows]
    held_out = split_speakers(sorted(set(speakers)), test_speakers, seed)
    is_test = np.array([s in held_out for s in speakers])
    x = make_features(waves, sample_rate, features, n_mels)
    info = {
        "source": f"espeak-ng + flite synthesis, cached in {folder}",
        "classes": list(WORDS),
        "modality": "audio",
        "features": features,
        "sample_rate": sample_rate,
        "recipe": key,
        "speakers": {
            "train": sorted(set(speakers) - held_out),
            "test": sorted(held_out),
        },
    }
    if features == "waveform":
        info["raw_range"] = [-1.0, 1.0]
    return to_bundle(
        "spoken-digits",
        x[~is_test],
        labels[~is_test],
        x[is_test],
        labels[is_test],
        len(WORDS),
        train_subset=train_subset,
        test_subset=test_subset,
        subset_seed=subset_seed,
        info=info,
    )
