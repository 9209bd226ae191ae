"""Google Speech Commands (v0.01/v0.02, CC BY 4.0) read from its extracted folder.

Layout: ``<root>/<word>/<speaker>_nohash_<k>.wav`` (1 s, 16 kHz), ``validation_list.txt`` and
``testing_list.txt`` (paths relative to root). The official split keeps each speaker in one
list: train = files in neither list, test = ``testing_list.txt`` (the validation files are not
used). ``_background_noise_`` and words not asked for are ignored. Nothing is downloaded.
"""

from __future__ import annotations

import os
from math import gcd
from pathlib import Path

import numpy as np

from ..errors import InputError, SpecError
from .audio import check_features, fix_length, make_features, read_wav
from .base import DATASETS, DataBundle, to_bundle

CORE_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
SPLITS = ("official",)


def find_root(data_dir: str | None) -> Path:
    """``data_dir``, else ``$KDAUDIT_DATA/speech_commands``; a clear error with the download URL."""
    how = f"download {URL}, extract it and set data.data_dir to that folder"
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise InputError(f"speech-commands: data.data_dir {data_dir} does not exist; {how}")
        return root
    if os.environ.get("KDAUDIT_DATA"):
        root = Path(os.environ["KDAUDIT_DATA"]) / "speech_commands"
        if root.is_dir():
            return root
    raise InputError(f"speech-commands needs the dataset folder (no data.data_dir given): {how}")


def read_list(root: Path, name: str) -> set[str]:
    path = root / name
    if not path.is_file():
        raise InputError(f"speech-commands: {path} is missing (is {root} the extracted dataset folder?)")
    return {line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()}


def load_clip(path: Path, sample_rate: int) -> np.ndarray:
    """One clip at ``sample_rate`` (polyphase resampling if the file differs), padded/cut to 1 s."""
    wave, rate = read_wav(path)
    if rate != sample_rate:
        try:
            from scipy.signal import resample_poly
        except ImportError:
            raise InputError(
                f"speech-commands: {path} is at {rate} Hz, not {sample_rate} Hz; "
                "resampling needs scipy: pip install scipy"
            ) from None
        g = gcd(rate, sample_rate)
        wave = resample_poly(wave, sample_rate // g, rate // g).astype(np.float32)
    return fix_length(wave, sample_rate)


@DATASETS.register("speech-commands")
def speech_commands(
    data_dir: str | None = None,
    words: list[str] | None = None,
    split: str = "official",
    features: str = "logmel",
    sample_rate: int = 16000,
    n_mels: int = 32,
    train_subset: int | None = None,
    test_subset: int | None = None,
    subset_seed: int = 0,
) -> DataBundle:
    """Keyword spotting on ``words`` (default the 10 core commands), one class per word."""
    check_features("speech-commands", features)
    if split not in SPLITS:
        raise SpecError(f"speech-commands: split must be one of {', '.join(SPLITS)}, got {split!r}")
    if sample_rate < 1000:
        raise SpecError(f"speech-commands: sample_rate must be >= 1000, got {sample_rate}")
    classes = list(CORE_WORDS if words is None else words)
    if not classes or len(set(classes)) != len(classes):
        raise SpecError(f"speech-commands: words must be a non-empty list without repeats, got {classes}")
    root = find_root(data_dir)
    missing = [w for w in classes if w.startswith("_") or not (root / w).is_dir()]
    if missing:
        raise InputError(f"speech-commands: no folder for word(s) {', '.join(missing)} in {root}")
    validation = read_list(root, "validation_list.txt")
    testing = read_list(root, "testing_list.txt")
    train_files, test_files = [], []
    for label, word in enumerate(classes):
        for path in sorted((root / word).glob("*.wav")):
            rel = f"{word}/{path.name}"
            if rel in testing:
                test_files.append((path, label))
            elif rel not in validation:
                train_files.append((path, label))

    def load(files: list[tuple[Path, int]], chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Features of ``files``, read chunk by chunk so the raw waveforms never all sit in memory."""
        parts = [np.empty((0, 1, sample_rate), np.float32)]
        for start in range(0, len(files), chunk):
            waves = np.stack([load_clip(path, sample_rate) for path, _ in files[start : start + chunk]])
            parts.append(make_features(waves, sample_rate, features, n_mels))
        x = np.concatenate(parts[1:]) if len(parts) > 1 else parts[0]
        return x, np.array([label for _, label in files], np.int64)

    x_train, y_train = load(train_files)
    x_test, y_test = load(test_files)
    info = {
        "source": str(root),
        "classes": classes,
        "modality": "audio",
        "features": features,
        "sample_rate": sample_rate,
        "split": split,
    }
    if features == "waveform":
        info["raw_range"] = [-1.0, 1.0]
    return to_bundle(
        "speech-commands",
        x_train,
        y_train,
        x_test,
        y_test,
        len(classes),
        train_subset=train_subset,
        test_subset=test_subset,
        subset_seed=subset_seed,
        info=info,
    )
