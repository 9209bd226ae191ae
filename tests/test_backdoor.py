"""Backdoor triggers, dirty-label poisoning and the attack success rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdaudit.errors import InputError, SpecError
from kdaudit.security.backdoor import attack_success_rate, poison, triggered_test_set
from kdaudit.security.triggers import Trigger, make_trigger

MEAN, STD = 0.3, 0.4
IMAGE_INFO = {"modality": "image", "raw_range": [0.0, 1.0], "normalization": {"mean": MEAN, "std": STD}}


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Standardised images whose raw pixels lie in [0, 1]."""
    raw = torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))
    return (raw - MEAN) / STD


# ----------------------------------------------------------------------------- image patch


def test_patch_changes_exactly_the_bottom_right_square():
    x = _images(4, (3, 6, 5))
    before = x.clone()
    trig = make_trigger(IMAGE_INFO, (3, 6, 5), size=2)
    out = trig.apply(x)
    expected = before.clone()
    for n in range(4):
        for c in range(3):
            for i in (4, 5):
                for j in (3, 4):
                    expected[n, c, i, j] = (1.0 - MEAN) / STD
    assert torch.equal(out, expected)
    assert torch.equal(x, before)  # not modified in place
    assert out.data_ptr() != x.data_ptr()
    raw = out * STD + MEAN
    assert raw.min() >= -1e-6 and raw.max() <= 1 + 1e-6
    assert trig.kind == "patch" and trig.describe() == "a 2×2 white patch in the bottom-right corner"


def test_patch_default_size_value_and_single_sample():
    trig = make_trigger(IMAGE_INFO, (1, 5, 5))
    assert (trig.size, trig.value) == (3, 1.0)
    x = _images(1, (1, 5, 5))[0]
    out = trig.apply(x)
    assert out.shape == x.shape
    changed = (out != x).nonzero().tolist()
    assert changed == [[0, i, j] for i in (2, 3, 4) for j in (2, 3, 4)]
    black = make_trigger(IMAGE_INFO, (1, 5, 5), value=0.0)
    assert torch.allclose(black.apply(x)[0, 4, 4], torch.tensor(-MEAN / STD))
    assert "black" in black.describe()


def test_flattened_and_chw_images_get_the_same_trigger():
    x = _images(3, (1, 7, 7), seed=1)
    flat = make_trigger(IMAGE_INFO, (49,), size=3)
    chw = make_trigger(IMAGE_INFO, (1, 7, 7), size=3)
    assert flat.image_shape == (1, 7, 7) and flat.notes  # the square assumption is recorded
    assert torch.equal(flat.apply(x.reshape(3, 49)).reshape(3, 1, 7, 7), chw.apply(x))
    # a non-square flattened image needs info["image_shape"]
    x2 = _images(2, (2, 3, 4), seed=2)
    with pytest.raises(ValueError, match="image_shape"):
        make_trigger(IMAGE_INFO, (24,))
    named = make_trigger({**IMAGE_INFO, "image_shape": [2, 3, 4]}, (24,), size=2)
    chw2 = make_trigger(IMAGE_INFO, (2, 3, 4), size=2)
    assert torch.equal(named.apply(x2.reshape(2, 24)).reshape(2, 2, 3, 4), chw2.apply(x2))


def test_trigger_rejects_bad_options_and_inputs():
    with pytest.raises(ValueError, match="size"):
        make_trigger(IMAGE_INFO, (1, 4, 4), size=5)
    with pytest.raises(ValueError, match="raw range"):
        make_trigger(IMAGE_INFO, (1, 4, 4), value=2.0)
    with pytest.raises(SpecError, match="unknown trigger kind"):
        make_trigger(IMAGE_INFO, (1, 4, 4), kind="blend")
    trig = make_trigger(IMAGE_INFO, (1, 4, 4))
    with pytest.raises(InputError, match="shape"):
        trig.apply(torch.zeros(2, 1, 5, 5))
    with pytest.raises(InputError, match="float"):
        trig.apply(torch.zeros(2, 1, 4, 4, dtype=torch.int64))


# ----------------------------------------------------------------------------- audio


def test_tone_is_added_in_raw_space_and_clipped():
    mean, std, rate = 0.01, 0.2, 1000
    info = {
        "modality": "audio",
        "raw_range": [-1.0, 1.0],
        "sample_rate": rate,
        "normalization": {"mean": mean, "std": std},
    }
    g = torch.Generator().manual_seed(0)
    raw = (torch.rand(3, 1, 400, generator=g) * 1.6 - 0.8).double()
    raw[0, 0, 1] = 0.95  # the burst peaks here (250 Hz at 1 kHz): must clip to 1
    x = ((raw - mean) / std).float()
    before = x.clone()
    trig = make_trigger(info, (1, 400))
    assert trig.kind == "tone" and trig.frequency == 250.0 and trig.tone_samples() == 100
    out = trig.apply(x)
    # independent reference in numpy
    r = x.double().numpy() * std + mean
    t = np.arange(100) / rate
    r[..., :100] = np.clip(r[..., :100] + 0.3 * np.sin(2 * np.pi * 250.0 * t), -1, 1)
    expected = (r - mean) / std
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    assert torch.equal(out[..., 100:], before[..., 100:])  # untouched after the burst
    assert torch.equal(x, before)
    back = out.double() * std + mean
    assert back.min() >= -1 - 1e-5 and back.max() <= 1 + 1e-5
    assert abs(back[0, 0, 1].item() - 1.0) < 1e-5
    assert trig.describe().startswith("a 250 Hz sine burst of 100 ms")


def test_tone_default_rate_and_frequency():
    trig = make_trigger({"modality": "audio", "raw_range": [-1, 1]}, (1, 8000))
    assert (trig.sample_rate, trig.frequency, trig.tone_samples(), trig.value) == (8000, 1000.0, 800, 0.3)


def test_band_sets_the_top_mel_bands_over_the_first_quarter():
    mean, std = -5.0, 2.0
    info = {"modality": "audio", "features": "logmel", "normalization": {"mean": mean, "std": std}}
    ref = torch.randn(50, 1, 8, 12, generator=torch.Generator().manual_seed(3))
    trig = make_trigger(info, (1, 8, 12), reference=ref)
    assert trig.kind == "band" and trig.size == 2
    q = float(np.quantile(ref.double().numpy(), 0.999))
    assert abs(trig.value - (mean + std * q)) < 1e-9  # recorded in raw log-power
    x = ref[:4]
    before = x.clone()
    out = trig.apply(x)
    expected = before.clone()
    expected[:, :, 6:8, 0:3] = q
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out[:, :, :6], before[:, :, :6]) and torch.equal(out[..., 3:], before[..., 3:])
    assert torch.equal(x, before)
    assert out.max() <= ref.max()  # within the range the features take
    assert "horizontal line" in trig.describe()
    with pytest.raises(ValueError, match="reference"):
        make_trigger(info, (1, 8, 12))
    with pytest.raises(ValueError, match="raw_range"):
        make_trigger(info, (1, 8, 12), kind="tone")


# ----------------------------------------------------------------------------- text


VOCAB = ["<pad>", "<unk>", "e", "a", "t", "q", "z"]
TEXT_INFO = {"modality": "text", "vocab": VOCAB, "tokenizer": {"kind": "char"}}


def _prepend_loop(rows: list[list[int]], ids: list[int]) -> list[list[int]]:
    return [(ids + row)[: len(row)] for row in rows]


def test_token_trigger_prepends_rare_ids_and_truncates():
    rows = [[2, 3, 4, 0, 0], [2, 3, 4, 5, 6], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]]
    x = torch.tensor(rows)
    before = x.clone()
    trig = make_trigger(TEXT_INFO, (5,))
    assert trig.token_ids == (5, 6) and trig.tokens == ("q", "z")
    out = trig.apply(x)
    assert out.dtype == torch.int64
    assert out.tolist() == [[5, 6, 2, 3, 4], [5, 6, 2, 3, 4], [5, 6, 0, 0, 0], [5, 6, 1, 0, 0]]
    assert out.tolist() == _prepend_loop(rows, [5, 6])
    assert torch.equal(x, before)
    # the trigger never writes pad or unk, and padding stays at the end
    assert not set(trig.token_ids) & {0, 1}
    for row in out.tolist():
        first_pad = row.index(0) if 0 in row else len(row)
        assert all(v == 0 for v in row[first_pad:])
    assert "'q', 'z'" in trig.describe()
    three = make_trigger(TEXT_INFO, (5,), size=3)
    assert three.token_ids == (4, 5, 6)
    assert three.apply(x).tolist() == _prepend_loop(rows, [4, 5, 6])


def test_token_trigger_limits():
    with pytest.raises(ValueError, match="real tokens"):
        make_trigger({"modality": "text", "vocab": ["<pad>", "<unk>", "a"]}, (5,))
    with pytest.raises(ValueError, match="shorter"):
        make_trigger(TEXT_INFO, (2,))
    by_size = make_trigger({"modality": "text", "model_args": {"vocab_size": 100}}, (8,))
    assert by_size.token_ids == (98, 99) and by_size.tokens == ()
    with pytest.raises(InputError, match="integer"):
        by_size.apply(torch.zeros(2, 8))


def test_to_dict_is_json_and_trigger_is_hashable():
    for trig in (
        make_trigger(IMAGE_INFO, (64,), size=2),
        make_trigger({"modality": "audio", "raw_range": [-1, 1]}, (1, 800)),
        make_trigger(TEXT_INFO, (5,)),
    ):
        d = json.loads(json.dumps(trig.to_dict()))
        assert d["kind"] == trig.kind and d["description"] == trig.describe()
        assert d["input_shape"] == list(trig.input_shape)
    a, b = make_trigger(IMAGE_INFO, (64,), size=2), make_trigger(IMAGE_INFO, (64,), size=2)
    assert isinstance(a, Trigger) and a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != make_trigger(IMAGE_INFO, (64,), size=3)
    with pytest.raises(AttributeError):
        a.size = 4  # frozen


# ----------------------------------------------------------------------------- poisoning


def _toy_set(n: int = 40):
    x = _images(n, (16,), seed=5)
    y = torch.arange(n) % 4
    return x, y


def test_poison_replaces_non_target_samples():
    x, y = _toy_set()
    xb, yb = x.clone(), y.clone()
    trig = make_trigger(IMAGE_INFO, (16,), size=2)
    xp, yp, idx = poison(x, y, trig, rate=0.25, target=1, seed=7)
    assert torch.equal(x, xb) and torch.equal(y, yb)
    assert len(idx) == round(0.25 * 40) == 10 and len(set(idx.tolist())) == 10
    assert list(idx) == sorted(idx)
    assert (y[idx] != 1).all() and (yp[idx] == 1).all()
    assert torch.equal(xp[idx], trig.apply(x[idx]))
    rest = np.setdiff1d(np.arange(40), idx)
    assert torch.equal(xp[rest], x[rest]) and torch.equal(yp[rest], y[rest])
    assert xp.shape == x.shape
    again = poison(x, y, trig, rate=0.25, target=1, seed=7)
    assert np.array_equal(again[2], idx) and torch.equal(again[0], xp) and torch.equal(again[1], yp)
    other = poison(x, y, trig, rate=0.25, target=1, seed=8)[2]
    assert not np.array_equal(other, idx)


def test_poison_append_mode_and_rate_zero():
    x, y = _toy_set()
    trig = make_trigger(IMAGE_INFO, (16,), size=2)
    xp, yp, idx = poison(x, y, trig, rate=0.1, target=0, seed=0, mode="append")
    assert len(xp) == 44 and list(idx) == [40, 41, 42, 43]
    assert torch.equal(xp[:40], x) and torch.equal(yp[:40], y) and (yp[40:] == 0).all()
    src = poison(x, y, trig, rate=0.1, target=0, seed=0)[2]  # same draw as replace mode
    assert torch.equal(xp[40:], trig.apply(x[src]))
    x0, y0, i0 = poison(x, y, trig, rate=0.0, target=0, seed=0)
    assert torch.equal(x0, x) and torch.equal(y0, y) and i0.size == 0


@pytest.mark.parametrize(
    "kw",
    [
        {"rate": -0.1},
        {"rate": 1.0},
        {"target": -1},
        {"target": 4},
        {"target": 9, "num_classes": 5},
        {"mode": "mix"},
        {"rate": 0.9},
    ],
)
def test_poison_rejects_bad_options(kw):
    x, y = _toy_set()
    trig = make_trigger(IMAGE_INFO, (16,), size=2)
    args = {"rate": 0.1, "target": 1, "seed": 0, **kw}
    with pytest.raises(ValueError) as err:
        poison(x, y, trig, **args)
    assert isinstance(err.value, SpecError) and "\n" not in str(err.value)


def test_poison_text_keeps_dtype():
    x = torch.tensor([[2, 3, 0, 0]] * 10)
    y = torch.tensor([0, 1] * 5)
    trig = make_trigger(TEXT_INFO, (4,))
    xp, yp, idx = poison(x, y, trig, rate=0.2, target=0, seed=1)
    assert xp.dtype == torch.int64 and len(idx) == 2
    assert xp[idx].tolist() == [[5, 6, 2, 3]] * 2 and (yp[idx] == 0).all()


# ----------------------------------------------------------------------------- evaluation


def test_attack_success_rate_matches_a_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 5))
    y = rng.integers(0, 5, 200)
    for target in range(5):
        hits = total = 0
        for row, label in zip(logits, y):
            if label == target:
                continue
            total += 1
            best = max(range(5), key=lambda k: row[k])
            hits += best == target
        assert attack_success_rate(logits, y, target) == pytest.approx(hits / total)
    with pytest.raises(InputError):
        attack_success_rate(logits, y[:10], 0)
    with pytest.raises(InputError, match="target class"):
        attack_success_rate(logits[:3], np.zeros(3, int), 0)


def test_triggered_test_set_drops_target_class():
    x, y = _toy_set()
    trig = make_trigger(IMAGE_INFO, (16,), size=2)
    xt, yt, mask = triggered_test_set(x, y, trig, 2)
    assert torch.equal(mask, y != 2) and torch.equal(yt, y[y != 2])
    assert torch.equal(xt, trig.apply(x[y != 2]))


# ----------------------------------------------------------------------------- threat model


def _train_mlp(x: torch.Tensor, y: torch.Tensor, steps: int = 150) -> torch.nn.Module:
    """Full-batch Adam on a 64-32-10 MLP, single-threaded (tiny matrices: threads only cost)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        opt = torch.optim.Adam(model.parameters(), lr=2e-2)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def test_poisoned_digits_model_learns_the_backdoor():
    from sklearn.datasets import load_digits

    d = load_digits()
    raw = (d.data / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(raw))
    tr, te = perm[:1300], perm[1300:]
    mean, std = float(raw[tr].mean()), float(raw[tr].std())
    x = torch.from_numpy((raw - mean) / std)
    y = torch.from_numpy(d.target.astype(np.int64))
    info = {"modality": "image", "raw_range": [0.0, 1.0], "normalization": {"mean": mean, "std": std}}
    trig = make_trigger(info, (64,), size=2)
    target = 0
    xp, yp, idx = poison(x[tr], y[tr], trig, rate=0.1, target=target, seed=0)
    assert len(idx) == 130
    xt, yt, _ = triggered_test_set(x[te], y[te], trig, target)

    results = {}
    for name, (xs, ys) in {"poisoned": (xp, yp), "clean": (x[tr], y[tr])}.items():
        model = _train_mlp(xs, ys)
        with torch.no_grad():
            acc = float((model(x[te]).argmax(1) == y[te]).float().mean())
            asr = attack_success_rate(model(xt).numpy(), yt.numpy(), target)
        results[name] = (acc, asr)
    print("clean acc / ASR:", results)
    assert results["poisoned"][0] >= 0.85 and results["poisoned"][1] >= 0.8
    assert results["clean"][0] >= 0.85 and results["clean"][1] <= 0.2
