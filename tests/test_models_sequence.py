"""M5, LSTM and GPT classifiers: shapes, gradients, hooks, padding, references, counts, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import n_params
from kdaudit.errors import InputError, SpecError
from kdaudit.models import build_model

VOCAB = 50
TOK = {"vocab_size": VOCAB, "pad_id": 0}


def token_batch(lengths: list[int], width: int, seed: int = 0, pad_id: int = 0) -> torch.Tensor:
    """Rows of random non-pad ids 1..VOCAB-1, padded at the end to ``width``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, VOCAB, (len(lengths), width), generator=g)
    for i, n in enumerate(lengths):
        x[i, n:] = pad_id
    return x


def build(name: str, shape: tuple[int, ...], classes: int = 3, data_args: dict | None = None, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(name, shape, classes, data_args=data_args, **kw)


# (name, input_shape, data_args, knobs, batch maker)
CASES = {
    "m5": ("m5", (1, 1200), None, {"width": 4, "stride": 2}, lambda: torch.randn(4, 1, 1200)),
    "lstm-tokens": (
        "lstm",
        (10,),
        TOK,
        {"embed": 6, "hidden": 5, "layers": 2, "bidirectional": True},
        lambda: token_batch([10, 4, 1, 0], 10),
    ),
    "lstm-tokens-mean": (
        "lstm",
        (10,),
        TOK,
        {"embed": 6, "hidden": 5, "pool": "mean"},
        lambda: token_batch([10, 4, 1, 0], 10),
    ),
    "lstm-frames": ("lstm", (1, 6, 7), None, {"embed": 5, "hidden": 4}, lambda: torch.randn(4, 1, 6, 7)),
    "lstm-frames-2d": ("lstm", (6, 7), None, {"embed": 5, "hidden": 4, "pool": "mean"}, lambda: torch.randn(4, 6, 7)),
    "gpt": ("gpt", (10,), TOK, {"dim": 8, "depth": 2, "heads": 2}, lambda: token_batch([10, 4, 1, 0], 10)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_backward_and_determinism(case):
    name, shape, data_args, knobs, make = CASES[case]
    model = build(name, shape, 3, data_args, **knobs)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    x = make()
    model.train()
    out = model(x)
    assert out.shape == (x.shape[0], 3)
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    # weights come from the global torch RNG: same seed, same weights
    twin = build(name, shape, 3, data_args, **knobs).state_dict()
    assert list(twin) == list(initial)
    assert all(torch.equal(twin[k], initial[k]) for k in twin)
    other = build(name, shape, 3, data_args, seed=1, **knobs).state_dict()
    assert not all(torch.equal(other[k], initial[k]) for k in other)


@pytest.mark.parametrize("case", sorted(CASES))
def test_feature_layers_hooks_and_head(case):
    name, shape, data_args, knobs, make = CASES[case]
    model = build(name, shape, 3, data_args, **knobs).eval()
    modules = dict(model.named_modules())
    layers = model.feature_layers
    assert layers[-1] == "pooled" and len(layers) >= 2
    seen: dict[str, torch.Tensor] = {}
    for layer in layers:
        assert layer in modules, layer
        modules[layer].register_forward_hook(lambda m, i, o, layer=layer: seen.__setitem__(layer, o))
    x = make()
    with torch.no_grad():
        logits = model(x)
        assert list(seen) == list(layers)  # hooks fire in input→output order
        for layer, out in seen.items():
            assert isinstance(out, torch.Tensor) and out.shape[0] == x.shape[0], layer
        feat = seen["pooled"]
        assert feat.shape == (x.shape[0], model.head.in_features)
        torch.testing.assert_close(model.head(feat), logits, rtol=0, atol=0)


# ---------------------------------------------------------------- LSTM reference


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def lstm_reference(model, seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain-loop LSTM over ``seq`` (len × in): (last feature, mean feature) of the top layer."""
    p = {k: v.detach().double().numpy() for k, v in model.lstm.state_dict().items()}
    dirs = ["", "_reverse"] if model.lstm.bidirectional else [""]
    n = len(seq)
    layer_in = seq
    for layer in range(model.lstm.num_layers):
        outs = []
        for d, suffix in enumerate(dirs):
            w_ih, w_hh = p[f"weight_ih_l{layer}{suffix}"], p[f"weight_hh_l{layer}{suffix}"]
            bias = p[f"bias_ih_l{layer}{suffix}"] + p[f"bias_hh_l{layer}{suffix}"]
            hid = w_hh.shape[1]
            h, c, out = np.zeros(hid), np.zeros(hid), np.zeros((n, hid))
            for t in range(n) if d == 0 else range(n - 1, -1, -1):
                gates = w_ih @ layer_in[t] + w_hh @ h + bias
                i, f, g, o = np.split(gates, 4)  # PyTorch gate order: input, forget, cell, output
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
                out[t] = h
            outs.append(out)
        layer_in = np.concatenate(outs, axis=1)
    hid = model.lstm.hidden_size
    last = layer_in[n - 1, :hid]
    if len(dirs) == 2:  # the backward direction ends at position 0
        last = np.concatenate([last, layer_in[0, hid:]])
    return last, layer_in.mean(axis=0)


def pooled_feature(model, x: torch.Tensor) -> torch.Tensor:
    seen = {}
    hook = model.pooled.register_forward_hook(lambda m, i, o: seen.setdefault("f", o))
    with torch.no_grad():
        model(x)
    hook.remove()
    return seen["f"]


@pytest.mark.parametrize("pool", ["last", "mean"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_lstm_tokens_match_plain_loop(pool, layers, bidirectional):
    model = build("lstm", (9,), 3, TOK, embed=4, hidden=3, layers=layers, bidirectional=bidirectional, pool=pool).eval()
    lengths = [9, 5, 1, 0]
    x = token_batch(lengths, 9, seed=3)
    feat = pooled_feature(model, x).double().numpy()
    emb = model.embed.weight.detach().double().numpy()
    for row, n in enumerate(lengths):
        n = max(n, 1)  # an all-padding row reads position 0
        last, mean = lstm_reference(model, emb[x[row, :n].numpy()])
        np.testing.assert_allclose(feat[row], last if pool == "last" else mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_lstm_frames_match_plain_loop(pool):
    model = build("lstm", (1, 5, 6), 3, None, embed=4, hidden=3, bidirectional=True, pool=pool).eval()
    x = torch.randn(3, 1, 5, 6)
    feat = pooled_feature(model, x).double().numpy()
    w, b = model.proj.weight.detach().double().numpy(), model.proj.bias.detach().double().numpy()
    for row in range(3):
        frames = x[row, 0].double().numpy().T  # time is the last axis
        last, mean = lstm_reference(model, frames @ w.T + b)
        np.testing.assert_allclose(feat[row], last if pool == "last" else mean, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- padding invariance


@pytest.mark.parametrize(
    "name,knobs",
    [
        ("lstm", {"embed": 5, "hidden": 4, "bidirectional": True, "layers": 2}),
        ("lstm", {"embed": 5, "hidden": 4, "pool": "mean"}),
        ("gpt", {"dim": 8, "heads": 2, "max_len": 14}),
    ],
)
def test_appended_padding_leaves_logits_unchanged(name, knobs):
    model = build(name, (8,), 3, TOK, **knobs).eval()
    short = token_batch([8, 3, 1, 0], 8, seed=5)
    long = torch.cat([short, torch.zeros(4, 6, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a, b = model(short), model(long)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the check can fail: a real token in place of the padding changes the logits
    changed = long.clone()
    changed[1, 3] = 7
    with torch.no_grad():
        assert not torch.allclose(model(changed)[1], b[1], atol=1e-6)


# ---------------------------------------------------------------- GPT


def block_outputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in model.blocks]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return outs + [logits]


def test_gpt_block_outputs_are_causal():
    model = build("gpt", (10,), 3, TOK, dim=8, heads=2, depth=2).eval()
    x = token_batch([10, 10], 10, seed=7)
    t = 4
    y = x.clone()
    y[:, t + 1 :] = (x[:, t + 1 :] % (VOCAB - 1)) + 1  # other non-pad tokens after t
    assert not torch.equal(x[:, t + 1 :], y[:, t + 1 :])
    for a, b in zip(block_outputs(model, x)[:-1], block_outputs(model, y)[:-1]):
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=0)
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def _layer_norm(h: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = h.mean(-1, keepdims=True)
    var = h.var(-1, keepdims=True)
    return (h - mu) / np.sqrt(var + 1e-5) * w + b


def gpt_reference(model, row: np.ndarray, heads: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Loop implementation: query i attends to keys j <= i that are non-pad, and to itself."""
    p = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    gelu = np.vectorize(lambda z: 0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0))))
    n = len(row)
    valid = row != 0
    h = p["tok_embed.weight"][row] + p["pos_embed.weight"][:n]
    dim = h.shape[1]
    dh = dim // heads
    outs = []
    for k in range(len(model.blocks)):
        pre = f"blocks.{k}."
        a = _layer_norm(h, p[pre + "ln1.weight"], p[pre + "ln1.bias"])
        qkv = a @ p[pre + "attn.qkv.weight"].T + p[pre + "attn.qkv.bias"]
        q, kk, v = qkv[:, :dim], qkv[:, dim : 2 * dim], qkv[:, 2 * dim :]
        att = np.zeros((n, dim))
        for hd in range(heads):
            s = slice(hd * dh, (hd + 1) * dh)
            for i in range(n):
                keys = [j for j in range(i + 1) if valid[j] or j == i]
                scores = np.array([q[i, s] @ kk[j, s] for j in keys]) / math.sqrt(dh)
                w = np.exp(scores - scores.max())
                w /= w.sum()
                att[i, s] = sum(wj * v[j, s] for wj, j in zip(w, keys))
        h = h + att @ p[pre + "attn.proj.weight"].T + p[pre + "attn.proj.bias"]
        m = _layer_norm(h, p[pre + "ln2.weight"], p[pre + "ln2.bias"])
        m = gelu(m @ p[pre + "mlp.0.weight"].T + p[pre + "mlp.0.bias"])
        h = h + m @ p[pre + "mlp.2.weight"].T + p[pre + "mlp.2.bias"]
        outs.append(h)
    h = _layer_norm(h, p["norm.weight"], p["norm.bias"])
    last = int(np.flatnonzero(valid).max()) if valid.any() else 0
    return outs, h[last] @ p["head.weight"].T + p["head.bias"]


def test_gpt_matches_loop_reference_with_padding():
    model = build("gpt", (7,), 3, TOK, dim=8, heads=2, depth=2, mlp_ratio=2.0).eval()
    x = token_batch([7, 4, 1, 0, 3], 7, seed=11)
    x[4, 1] = 0  # a pad inside a row is masked as a key too
    blocks = block_outputs(model, x)
    for row in range(len(x)):
        ref_blocks, ref_logits = gpt_reference(model, x[row].numpy(), heads=2)
        for got, ref in zip(blocks[:-1], ref_blocks):  # every position, pad queries included
            np.testing.assert_allclose(got[row].double().numpy(), ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(blocks[-1][row].double().numpy(), ref_logits, rtol=1e-4, atol=1e-5)
    for out in blocks:
        assert torch.isfinite(out).all()


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("width,depth,classes", [(32, 3, 10), (6, 2, 4), (5, 4, 3)])
def test_m5_param_count(width, depth, classes):
    model = build("m5", (1, 16000), classes, width=width, depth=depth)
    chans = [width, width, 2 * width, 2 * width, 4 * width][: depth + 1]
    expected = 1 * chans[0] * 80 + 2 * chans[0]  # first conv (no bias) + BN
    expected += sum(a * b * 3 + 2 * b for a, b in zip(chans[:-1], chans[1:]))
    expected += chans[-1] * classes + classes
    assert n_params(model) == expected
    if (width, depth) == (32, 3):
        assert chans == [32, 32, 64, 64]


def _lstm_formula(inp: int, hidden: int, layers: int, dirs: int) -> int:
    total = 0
    for layer in range(layers):
        i = inp if layer == 0 else hidden * dirs
        total += dirs * 4 * (i * hidden + hidden * hidden + 2 * hidden)
    return total


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (3, True)])
def test_lstm_param_count(layers, bidirectional):
    dirs = 2 if bidirectional else 1
    tok = build(
        "lstm",
        (12,),
        7,
        {"vocab_size": 60, "pad_id": 0},
        embed=9,
        hidden=11,
        layers=layers,
        bidirectional=bidirectional,
    )
    assert n_params(tok) == 60 * 9 + _lstm_formula(9, 11, layers, dirs) + 11 * dirs * 7 + 7
    fr = build("lstm", (1, 32, 20), 7, None, embed=9, hidden=11, layers=layers, bidirectional=bidirectional)
    assert n_params(fr) == (32 * 9 + 9) + _lstm_formula(9, 11, layers, dirs) + 11 * dirs * 7 + 7


@pytest.mark.parametrize("dim,depth,heads,ratio,max_len", [(64, 2, 4, 4.0, None), (12, 3, 3, 1.5, 20)])
def test_gpt_param_count(dim, depth, heads, ratio, max_len):
    vocab, length, classes = 60, 16, 5
    model = build(
        "gpt",
        (length,),
        classes,
        {"vocab_size": vocab, "pad_id": 0},
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_ratio=ratio,
        max_len=max_len,
    )
    hid = int(dim * ratio)
    block = 2 * (2 * dim) + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) + (dim * hid + hid + hid * dim + dim)
    expected = vocab * dim + (max_len or length) * dim + depth * block + 2 * dim + dim * classes + classes
    assert n_params(model) == expected


# ---------------------------------------------------------------- errors


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "name,shape,data_args,match",
    [
        ("gpt", (1, 28, 28), None, "needs token inputs"),
        ("gpt", (1, 28, 28), TOK, r"token ids of shape \(L,\)"),
        ("lstm", (1, 28, 28), TOK, r"token ids of shape \(L,\)"),
        ("lstm", (3, 32, 32), None, "float frames"),
        ("lstm", (16,), None, "vocab_size"),
        ("m5", (1, 28, 28), None, "raw waveforms"),
        ("m5", (8000,), None, "raw waveforms"),
        ("m5", (1, 300), None, "too short"),
    ],
)
def test_wrong_input_shapes_raise_spec_error(name, shape, data_args, match):
    with pytest.raises(SpecError, match=match) as exc:
        build_model(name, shape, 10, data_args=data_args)
    _one_line(exc)


@pytest.mark.parametrize(
    "name,shape,data_args,knobs,match",
    [
        ("gpt", (8,), TOK, {"dim": 30, "heads": 4}, "divisible"),
        ("gpt", (8,), TOK, {"depth": 0}, "depth"),
        ("gpt", (8,), TOK, {"mlp_ratio": 0.0}, "mlp_ratio"),
        ("gpt", (8,), TOK, {"dropout": -0.1}, "dropout"),
        ("gpt", (8,), TOK, {"max_len": 4}, "max_len"),
        ("gpt", (8,), TOK, {"vocab_size": 9}, "come"),
        ("lstm", (8,), TOK, {"hidden": 0}, "hidden"),
        ("lstm", (8,), TOK, {"embed": 2.5}, "embed"),
        ("lstm", (8,), TOK, {"layers": True}, "layers"),
        ("lstm", (8,), TOK, {"pool": "max"}, "pool"),
        ("lstm", (8,), TOK, {"bidirectional": "yes"}, "bidirectional"),
        ("lstm", (1, 4, 4), None, {"dropout": 1.0}, "dropout"),
        ("lstm", (8,), TOK, {"heads": 2}, "unknown option"),
        ("m5", (1, 8000), None, {"width": 0}, "width"),
        ("m5", (1, 8000), None, {"stride": -1}, "stride"),
        ("m5", (1, 8000), None, {"depth": "3"}, "depth"),
    ],
)
def test_bad_knobs_raise_spec_error(name, shape, data_args, knobs, match):
    with pytest.raises(SpecError, match=match) as exc:
        build_model(name, shape, 3, data_args=data_args, **knobs)
    _one_line(exc)


@pytest.mark.parametrize("name", ["lstm", "gpt"])
@pytest.mark.parametrize("data_args", [{"vocab_size": 0, "pad_id": 0}, {"vocab_size": 10, "pad_id": 10}])
def test_bad_vocabulary_from_data_is_an_input_error(name, data_args):
    with pytest.raises(InputError) as exc:
        build_model(name, (8,), 3, data_args=data_args)
    _one_line(exc)


@pytest.mark.parametrize(
    "name,shape,data_args,knobs,x,match",
    [
        ("gpt", (8,), TOK, {}, torch.randn(2, 8), "int64 token ids"),
        ("gpt", (8,), TOK, {}, torch.ones(2, 9, dtype=torch.long), "at most 8 tokens"),
        ("lstm", (8,), TOK, {}, torch.randn(2, 8), "int64 token ids"),
        ("lstm", (1, 4, 6), None, {}, torch.ones(2, 1, 4, 6, dtype=torch.long), "float frames"),
        ("lstm", (1, 4, 6), None, {}, torch.randn(2, 1, 5, 6), "float frames"),
        ("m5", (1, 1200), None, {"width": 2, "stride": 2}, torch.randn(2, 1200), "float waveforms"),
    ],
)
def test_wrong_tensors_at_forward_raise_spec_error(name, shape, data_args, knobs, x, match):
    model = build_model(name, shape, 3, data_args=data_args, **knobs)
    with pytest.raises(SpecError, match=match) as exc:
        model(x)
    _one_line(exc)
