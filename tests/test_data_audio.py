"""Audio features (mel filterbank, log-mel, wav I/O) and the speech-commands / spoken-digits datasets."""

from __future__ import annotations

import csv
import math
import shutil

import numpy as np
import pytest
import torch

from kdaudit.data import audio
from kdaudit.data.audio import fix_length, hz_to_mel, log_mel, mel_filterbank, mel_to_hz, read_wav
from kdaudit.data.base import load_dataset
from kdaudit.errors import InputError, SpecError

sf = pytest.importorskip("soundfile")
HAVE_TOOLS = all(shutil.which(t) for t in ("espeak-ng", "flite", "sox"))
needs_tools = pytest.mark.skipif(not HAVE_TOOLS, reason="needs espeak-ng, flite and sox")


# ----------------------------------------------------------------------------- filterbank


def loop_filterbank(n_freqs, n_mels, sr, f_min=0.0, f_max=None):
    """Independent plain-loop HTK triangular filters."""
    f_max = sr / 2 if f_max is None else f_max
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    inv = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    lo, hi = mel(f_min), mel(f_max)
    edges = [inv(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_freqs, n_mels))
    for k in range(n_freqs):
        f = k * (sr / 2) / (n_freqs - 1)
        for m in range(n_mels):
            a, c, b = edges[m], edges[m + 1], edges[m + 2]
            if a < f <= c:
                fb[k, m] = (f - a) / (c - a)
            elif c < f < b:
                fb[k, m] = (b - f) / (b - c)
    return fb, edges


def test_htk_mel_scale():
    assert hz_to_mel(700.0) == pytest.approx(2595 * math.log10(2), abs=1e-9)
    assert hz_to_mel(700.0) == pytest.approx(781.17, abs=0.01)
    assert hz_to_mel(0.0) == 0.0
    f = np.array([0.0, 123.4, 1000.0, 4000.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, atol=1e-9)


@pytest.mark.parametrize(
    "n_freqs,n_mels,sr,f_min,f_max",
    [(257, 32, 8000, 0.0, None), (513, 40, 16000, 20.0, 7600.0), (129, 10, 8000, 300.0, 3400.0)],
)
def test_filterbank_matches_plain_loop(n_freqs, n_mels, sr, f_min, f_max):
    fb = mel_filterbank(n_freqs, n_mels, sr, f_min, f_max)
    ref, _ = loop_filterbank(n_freqs, n_mels, sr, f_min, f_max)
    assert fb.shape == (n_freqs, n_mels) and fb.dtype == torch.float32
    np.testing.assert_allclose(fb.numpy(), ref, atol=1e-6)


def test_filterbank_peaks_and_partition_of_unity():
    n_freqs, n_mels, sr = 257, 32, 8000
    fb = mel_filterbank(n_freqs, n_mels, sr).numpy().astype(np.float64)
    _, edges = loop_filterbank(n_freqs, n_mels, sr)
    df = sr / 2 / (n_freqs - 1)
    freqs = np.arange(n_freqs) * df
    assert fb.max() <= 1.0 + 1e-6 and fb.min() >= 0.0
    for m in range(1, n_mels - 1):
        lower, centre, upper = edges[m], edges[m + 1], edges[m + 2]
        k = int(np.argmin(np.abs(freqs - centre)))
        # the bin nearest the centre frequency is the peak, within one half-bin of slope of 1
        assert int(np.argmax(fb[:, m])) == k
        assert fb[k, m] >= 1 - 0.5 * df / min(centre - lower, upper - centre) - 1e-6
        # zero outside the triangle
        outside = (freqs <= lower) | (freqs >= upper)
        assert np.all(fb[outside, m] == 0)
    # adjacent triangles overlap so that they sum to one between the first and last centres
    inner = (freqs >= edges[1]) & (freqs <= edges[n_mels])
    np.testing.assert_allclose(fb[inner].sum(axis=1), 1.0, atol=1e-6)


def test_filterbank_exact_peak_when_centre_is_a_bin():
    # f_min/f_max chosen so that the single filter's centre lands exactly on bin 100 (1 Hz bins)
    sr, n_freqs = 1000, 501
    lo, hi = 50.0, float(mel_to_hz(2 * hz_to_mel(100.0) - hz_to_mel(50.0)))
    fb = mel_filterbank(n_freqs, 1, sr, lo, hi).numpy()[:, 0]
    assert fb[100] == pytest.approx(1.0, abs=1e-5)
    assert fb[50] < 1e-6 and fb[:50].max() == 0.0 and fb[99] < 1.0 and fb[101] < 1.0


def test_filterbank_bad_arguments():
    with pytest.raises(SpecError):
        mel_filterbank(257, 32, 8000, f_min=5000)
    with pytest.raises(SpecError):
        mel_filterbank(257, 0, 8000)


# ----------------------------------------------------------------------------- log-mel


def numpy_log_mel(waves, sr, n_fft, hop, n_mels):
    pad = n_fft // 2
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    fb, _ = loop_filterbank(n_fft // 2 + 1, n_mels, sr)
    out = []
    for w in np.asarray(waves, np.float64):
        p = np.pad(w, pad, mode="reflect")
        n_frames = 1 + (len(p) - n_fft) // hop
        frames = np.stack([p[i * hop : i * hop + n_fft] * win for i in range(n_frames)])
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # frames × freqs
        out.append(np.log(power @ fb + 1e-6).T)
    return np.stack(out)[:, None]


def test_log_mel_matches_numpy_reference():
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 8000
    waves = np.stack(
        [
            0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(8000),
            0.3 * rng.standard_normal(8000),
            0.4 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.01 * rng.standard_normal(8000),
        ]
    ).astype(np.float32)
    got = log_mel(torch.from_numpy(waves), 8000)
    assert got.shape == (3, 1, 32, 32) and got.dtype == torch.float32
    ref = numpy_log_mel(waves, 8000, 512, 256, 32)
    assert ref.shape[-1] == 32  # 1 + 8000 // 256 frames: no trimming needed
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-4, rtol=1e-5)


def test_log_mel_trims_frames_to_multiple_of_four_and_scales_with_rate():
    rng = np.random.default_rng(1)
    waves = (0.2 * rng.standard_normal((2, 8000))).astype(np.float32)
    got = log_mel(waves, 8000, n_fft=256, hop_length=128, n_mels=20)
    ref = numpy_log_mel(waves, 8000, 256, 128, 20)
    assert ref.shape[-1] == 63 and got.shape == (2, 1, 20, 60)
    np.testing.assert_allclose(got.numpy(), ref[..., :60], atol=1e-4, rtol=1e-5)
    # 1 s at 16 kHz also gives 32 frames (64 ms window, 32 ms hop)
    assert log_mel(np.zeros((1, 16000), np.float32) + 0.1, 16000).shape == (1, 1, 32, 32)


def test_log_mel_tone_lands_in_its_band():
    sr, f0 = 8000, 1000.0
    wave = np.sin(2 * np.pi * f0 * np.arange(sr) / sr).astype(np.float32)
    spec = log_mel(wave, sr)[0, 0].mean(dim=1).numpy()
    _, edges = loop_filterbank(257, 32, sr)
    nearest = int(np.argmin(np.abs(np.array(edges[1:-1]) - f0)))
    assert abs(int(np.argmax(spec)) - nearest) <= 1
    with pytest.raises(InputError):
        log_mel(np.zeros((2, 3, 4)), sr)


# ----------------------------------------------------------------------------- wav I/O, fix_length


def test_read_wav_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    stereo = rng.uniform(-0.9, 0.9, (1000, 2))
    path = tmp_path / "a.wav"
    sf.write(path, stereo, 11025, subtype="PCM_16")
    wave, rate = read_wav(path)
    assert rate == 11025 and wave.dtype == np.float32 and wave.shape == (1000,)
    ints, _ = sf.read(path, dtype="int16")  # the stored 16-bit samples
    np.testing.assert_allclose(wave, ints.astype(np.float64).mean(axis=1) / 32768, atol=1e-7)
    np.testing.assert_allclose(wave, stereo.mean(axis=1), atol=2 / 32768)  # within quantisation
    mono = tmp_path / "m.wav"
    sf.write(mono, stereo[:, 0], 8000, subtype="FLOAT")
    np.testing.assert_allclose(read_wav(mono)[0], stereo[:, 0], atol=1e-7)
    with pytest.raises(InputError, match="cannot read"):
        read_wav(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not a wav")
    with pytest.raises(InputError):
        read_wav(tmp_path / "junk.wav")


def test_fix_length():
    w = np.arange(1, 7, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(w, 8), [1, 2, 3, 4, 5, 6, 0, 0])
    np.testing.assert_array_equal(fix_length(w, 4), [1, 2, 3, 4])
    np.testing.assert_array_equal(fix_length(w, 9, center=True), [0, 1, 2, 3, 4, 5, 6, 0, 0])
    np.testing.assert_array_equal(fix_length(w, 3, center=True), [2, 3, 4])
    out = fix_length(w, 6)
    np.testing.assert_array_equal(out, w)
    out[0] = 99  # a copy, never a view of the input
    assert w[0] == 1
    assert fix_length(np.zeros(0, np.float32), 5).shape == (5,)


# ----------------------------------------------------------------------------- speech-commands

SC_WORDS = {"yes": 500.0, "no": 1200.0, "up": 2500.0}
SC_SPEAKERS = ("aaaa1111", "bbbb2222", "cccc3333", "dddd4444")
SC_LENGTHS = (16000, 8000, 20800)  # exact, short (padded), long (trimmed)


@pytest.fixture
def sc_root(tmp_path):
    """A tiny Speech Commands folder: 3 words + an unused one, 4 speakers × 3 clips, tone per word."""
    root = tmp_path / "sc"
    written = {}
    for word, f0 in {**SC_WORDS, "cat": 3000.0}.items():
        (root / word).mkdir(parents=True)
        for s, spk in enumerate(SC_SPEAKERS):
            for k, n in enumerate(SC_LENGTHS):
                t = np.arange(n) / 16000
                wave = (0.5 * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.1 * s)).astype(np.float32)
                rel = f"{word}/{spk}_nohash_{k}.wav"
                sf.write(root / rel, wave, 16000, subtype="FLOAT")
                written[rel] = wave
    (root / "_background_noise_").mkdir()
    sf.write(root / "_background_noise_" / "noise.wav", np.zeros(32000, np.float32), 16000)
    rels = sorted(written)
    (root / "validation_list.txt").write_text("\n".join(r for r in rels if SC_SPEAKERS[1] in r) + "\n")
    (root / "testing_list.txt").write_text("\n".join(r for r in rels if SC_SPEAKERS[2] in r) + "\n")
    return root, written


def raw(bundle, x):
    n = bundle.info["normalization"]
    return x.numpy() * n["std"] + n["mean"]


def test_speech_commands_split_shapes_and_lengths(sc_root):
    root, written = sc_root
    b = load_dataset("speech-commands", data_dir=str(root), words=list(SC_WORDS), features="waveform")
    # train = speakers a and d (b is validation, ignored; c is testing); "cat" and noise ignored
    assert b.x_train.shape == (3 * 2 * 3, 1, 16000) and b.x_test.shape == (3 * 1 * 3, 1, 16000)
    assert b.x_train.dtype == torch.float32 and b.y_train.dtype == torch.int64
    assert b.info["classes"] == ["yes", "no", "up"] and b.num_classes == 3
    assert b.info["modality"] == "audio" and b.info["raw_range"] == [-1.0, 1.0]
    assert np.bincount(b.y_train.numpy()).tolist() == [6, 6, 6]
    assert np.bincount(b.y_test.numpy()).tolist() == [3, 3, 3]

    # expected inputs rebuilt independently, in the loader's order (word, then file name)
    def expect(speakers):
        rows = []
        for word in SC_WORDS:
            for rel in sorted(r for r in written if r.startswith(word + "/") and r.split("/")[1][:8] in speakers):
                w = written[rel]
                rows.append(np.concatenate([w, np.zeros(max(0, 16000 - len(w)), np.float32)])[:16000])
        return np.stack(rows)[:, None]

    np.testing.assert_allclose(raw(b, b.x_train), expect({"aaaa1111", "dddd4444"}), atol=1e-5)
    np.testing.assert_allclose(raw(b, b.x_test), expect({"cccc3333"}), atol=1e-5)
    short = raw(b, b.x_test)[1, 0]  # cccc3333_nohash_1: 8000 samples then zero padding
    assert np.abs(short[8000:]).max() < 1e-5 and np.abs(short[:8000]).max() > 0.35


def test_speech_commands_logmel_separates_tones(sc_root):
    root, _ = sc_root
    b = load_dataset("speech-commands", data_dir=str(root), words=["up", "yes"], train_subset=4)
    assert b.x_train.shape == (4, 1, 32, 32) and b.x_test.shape == (6, 1, 32, 32)
    assert "raw_range" not in b.info and b.info["classes"] == ["up", "yes"]
    assert np.bincount(b.y_train.numpy()).tolist() == [2, 2]
    band = b.x_test.mean(dim=(1, 3)).argmax(dim=1)  # loudest mel band per clip
    assert set(band[b.y_test == 0].tolist()).isdisjoint(band[b.y_test == 1].tolist())
    assert band[b.y_test == 0].min() > band[b.y_test == 1].max()  # 2.5 kHz above 500 Hz


def test_speech_commands_resamples_other_rates(sc_root):
    root, _ = sc_root
    t = np.arange(4000) / 8000  # 0.5 s at 8 kHz of a 500 Hz tone, replacing a "yes" training clip
    sf.write(root / "yes" / "aaaa1111_nohash_0.wav", (0.5 * np.sin(2 * np.pi * 500 * t)).astype(np.float32), 8000)
    b = load_dataset("speech-commands", data_dir=str(root), words=["yes"], features="waveform")
    clip = raw(b, b.x_train)[0, 0]
    ref = 0.5 * np.sin(2 * np.pi * 500 * np.arange(8000) / 16000)
    np.testing.assert_allclose(clip[200:7800], ref[200:7800], atol=0.02)  # away from filter edges
    assert np.abs(clip[8200:]).max() < 0.01


def test_speech_commands_errors(sc_root, tmp_path, monkeypatch):
    root, _ = sc_root
    with pytest.raises(InputError, match="down"):  # default core words are not all there
        load_dataset("speech-commands", data_dir=str(root))
    with pytest.raises(InputError, match="_background_noise_"):
        load_dataset("speech-commands", data_dir=str(root), words=["yes", "_background_noise_"])
    with pytest.raises(InputError, match="speech_commands_v0.02.tar.gz"):
        load_dataset("speech-commands", data_dir=str(tmp_path / "nowhere"))
    monkeypatch.delenv("KDAUDIT_DATA", raising=False)
    with pytest.raises(InputError, match="data_dir"):
        load_dataset("speech-commands", words=["yes"])
    monkeypatch.setenv("KDAUDIT_DATA", str(tmp_path / "kd"))
    (tmp_path / "kd").mkdir()
    shutil.copytree(root, tmp_path / "kd" / "speech_commands")
    assert load_dataset("speech-commands", words=["no"]).info["source"] == str(tmp_path / "kd" / "speech_commands")
    with pytest.raises(SpecError):
        load_dataset("speech-commands", data_dir=str(root), words=["yes"], features="mfcc")
    with pytest.raises(SpecError):
        load_dataset("speech-commands", data_dir=str(root), words=["yes"], split="random")
    (root / "testing_list.txt").unlink()
    with pytest.raises(InputError, match="testing_list.txt"):
        load_dataset("speech-commands", data_dir=str(root), words=["yes"])


# ----------------------------------------------------------------------------- spoken-digits

SMALL = dict(n_speakers=4, takes=1)
N_SMALL = (4 + len(audio.FLITE_VOICES)) * 10


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    if not HAVE_TOOLS:
        pytest.skip("needs espeak-ng, flite and sox")
    root = tmp_path_factory.mktemp("spoken")
    load_dataset("spoken-digits", data_dir=str(root), features="waveform", **SMALL)
    return root


def manifest(root):
    (folder,) = [p for p in root.iterdir() if not p.name.startswith(".")]
    with open(folder / "manifest.csv", newline="") as fh:
        return folder, list(csv.DictReader(fh))


@needs_tools
def test_spoken_digits_split_by_speaker(digits_root):
    b = load_dataset("spoken-digits", data_dir=str(digits_root), features="waveform", **SMALL)
    assert b.info["classes"] == list(audio.WORDS) and b.info["modality"] == "audio"
    assert b.info["raw_range"] == [-1.0, 1.0]
    assert len(b.x_train) + len(b.x_test) == N_SMALL
    assert b.x_train.shape[1:] == (1, 8000) and b.x_train.dtype == torch.float32
    folder, rows = manifest(digits_root)
    assert len(rows) == N_SMALL and len({r["speaker"] for r in rows}) == 9
    train_spk, test_spk = set(b.info["speakers"]["train"]), set(b.info["speakers"]["test"])
    assert train_spk.isdisjoint(test_spk) and train_spk | test_spk == {r["speaker"] for r in rows}
    assert len(test_spk) == round(0.2 * 9)
    # each split is exactly all the clips of its speakers, in manifest order, centred in 1 s
    for x, spk in ((b.x_train, train_spk), (b.x_test, test_spk)):
        expect = []
        for r in rows:
            if r["speaker"] in spk:
                w, rate = sf.read(folder / r["file"], dtype="float32")
                assert rate == 8000 and 0 < len(w) <= 8000
                pad = 8000 - len(w)
                expect.append(np.pad(w, (pad // 2, pad - pad // 2)))
        np.testing.assert_allclose(raw(b, x)[:, 0], np.stack(expect), atol=1e-5)
    # balanced: every speaker says every digit once per take
    assert np.bincount(b.y_train.numpy(), minlength=10).tolist() == [len(train_spk)] * 10
    assert np.bincount(b.y_test.numpy(), minlength=10).tolist() == [len(test_spk)] * 10
    assert {(r["speaker"], r["digit"]) for r in rows} == {(s, str(d)) for s in train_spk | test_spk for d in range(10)}


@needs_tools
def test_spoken_digits_logmel_and_cache_hit(digits_root, monkeypatch):
    def no_synthesis(*args, **kwargs):
        raise AssertionError("the cached clips should have been reused")

    monkeypatch.setattr(audio, "_synthesise", no_synthesis)
    a = load_dataset("spoken-digits", data_dir=str(digits_root), **SMALL)
    b = load_dataset("spoken-digits", data_dir=str(digits_root), **SMALL)
    assert a.x_train.shape[1:] == (1, 32, 32) and "raw_range" not in a.info
    assert a.fingerprint() == b.fingerprint()
    sub = load_dataset("spoken-digits", data_dir=str(digits_root), train_subset=20, **SMALL)
    assert np.bincount(sub.y_train.numpy()).tolist() == [2] * 10
    # a different test fraction re-splits the same cached clips
    c = load_dataset("spoken-digits", data_dir=str(digits_root), test_speakers=0.5, **SMALL)
    assert len(c.info["speakers"]["test"]) == round(0.5 * 9) and c.info["recipe"] == a.info["recipe"]


def test_spoken_digits_recipe_depends_on_seed_and_options():
    versions = {"espeak-ng": "1", "flite": "2", "sox": "3"}
    key = lambda **kw: audio.recipe_key(
        audio.recipe_jobs(kw.get("n", 4), kw.get("takes", 1), kw.get("seed", 0)), 8000, versions
    )  # noqa: E731
    assert key() == key()
    assert len({key(), key(seed=1), key(takes=2), key(n=5)}) == 4
    assert audio.recipe_key(audio.recipe_jobs(4, 1, 0), 16000, versions) != key()
    assert audio.recipe_key(audio.recipe_jobs(4, 1, 0), 8000, {**versions, "sox": "4"}) != key()
    full = audio.recipe_jobs(None, 3, 0)
    assert len(full) == (60 + 5) * 10 * 3 and len({j["file"] for j in full}) == len(full)
    # a speaker's takes do not depend on which other speakers a smaller recipe keeps
    small = audio.recipe_jobs(4, 3, 0)
    by_file = {j["file"]: j for j in full}
    assert all(by_file[j["file"]] == j for j in small)
    speakers = sorted({j["speaker"] for j in full})
    splits = {frozenset(audio.split_speakers(speakers, 0.2, s)) for s in range(3)}
    assert len(splits) == 3 and all(len(s) == 13 for s in splits)


@needs_tools
def test_spoken_digits_generation_is_byte_deterministic(digits_root, tmp_path):
    other = tmp_path / "again"
    key = audio.recipe_key(audio.recipe_jobs(4, 1, 0), 8000, audio.tool_versions())
    # a partial folder left by a killed run (same recipe, no manifest) is never taken for the cache
    stale = other / f".{key}.partial-killed"
    stale.mkdir(parents=True)
    (stale / "zero_x_0.wav").write_bytes(b"")
    b = load_dataset("spoken-digits", data_dir=str(other), **SMALL)
    assert b.info["recipe"] == key and len(b.x_train) + len(b.x_test) == N_SMALL
    (f1, rows1), (f2, rows2) = manifest(digits_root), manifest(other)
    assert f1.name == f2.name == key and rows1 == rows2
    for r in rows1:
        assert (f1 / r["file"]).read_bytes() == (f2 / r["file"]).read_bytes(), r["file"]


@needs_tools
def test_spoken_digits_interrupted_generation_leaves_no_cache(tmp_path, monkeypatch):
    real_run, calls = audio._run, []

    def flaky(cmd, stdin=None):
        calls.append(cmd[0])
        if len(calls) == 30:
            raise InputError("spoken-digits: sox ... failed (exit 2): simulated")
        return real_run(cmd, stdin)

    monkeypatch.setattr(audio, "_run", flaky)
    with pytest.raises(InputError, match="simulated"):
        load_dataset("spoken-digits", data_dir=str(tmp_path), n_speakers=1, takes=1)
    assert list(tmp_path.iterdir()) == []  # neither a cache folder nor a partial one
    assert 0 < len(calls) < 2 * 60  # it failed part-way, not before starting


def test_spoken_digits_bad_setup(tmp_path, monkeypatch):
    monkeypatch.setattr(audio.shutil, "which", lambda tool: None if tool == "flite" else "/usr/bin/" + tool)
    with pytest.raises(InputError, match="apt-get install espeak-ng flite sox"):
        load_dataset("spoken-digits", data_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    with pytest.raises(SpecError):
        load_dataset("spoken-digits", data_dir=str(tmp_path), features="mfcc")
    if HAVE_TOOLS:
        for bad in (dict(n_speakers=0), dict(n_speakers=61), dict(takes=0)):
            with pytest.raises(SpecError):
                load_dataset("spoken-digits", data_dir=str(tmp_path), **bad)
        with pytest.raises(SpecError):
            audio.split_speakers(["a", "b"], 1.5, 0)
    assert list(tmp_path.iterdir()) == []
