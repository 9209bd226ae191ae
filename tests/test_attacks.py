"""Adversarial attacks (kdaudit.security.space, .gradient, .substitution) and their transfer rates
(kdaudit.analysis.attack_transfer): budgets, strength, torchattacks agreement, determinism, side
effects, token substitution, attack space and transfer rates."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdaudit.analysis.attack_transfer import success_rate, transfer_rates, transferable_mask
from kdaudit.errors import InputError, SpecError
from kdaudit.security.gradient import attack_batched, fgsm, pgd
from kdaudit.security.space import AttackSpace, attack_space
from kdaudit.security.substitution import char_substitution


def _mlp(dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 10))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    """A tiny MLP trained on sklearn digits in raw [0, 1] pixel space, and 200 test digits."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(x[:1400]), y[:1400]).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    xt, yt = x[1400:1600], y[1400:1600]
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    assert acc > 0.85, acc
    return model, xt, yt


def _fooled(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return success_rate(model(x).numpy(), y.numpy())


def _l2(d: torch.Tensor) -> torch.Tensor:
    return d.reshape(len(d), -1).norm(dim=1)


# --------------------------------------------------------------------------- budgets


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eps_zero_is_exact_noop(digits, norm):
    model, x, y = digits
    g = torch.Generator().manual_seed(0)
    for adv in (
        fgsm(model, x, y, 0.0, norm=norm, lo=0, hi=1),
        pgd(model, x, y, 0.0, norm=norm, random_start=True, generator=g, lo=0, hi=1),
        pgd(model, x, y, 0.0, norm=norm, targeted=True, target=(y + 1) % 10),
    ):
        assert torch.equal(adv, x)
        assert adv is not x


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_adversarials_stay_in_ball_and_box(digits, norm, eps):
    model, x, y = digits
    g = torch.Generator().manual_seed(1)
    advs = [
        fgsm(model, x, y, eps, norm=norm, lo=0.0, hi=1.0),
        pgd(model, x, y, eps, norm=norm, steps=7, random_start=True, generator=g, lo=0.0, hi=1.0),
        pgd(model, x, y, eps, norm=norm, steps=7, step_size=eps, random_start=False, lo=0.0, hi=1.0),
        pgd(model, x, y, eps, norm=norm, targeted=True, target=(y + 3) % 10, lo=0.0, hi=1.0),
    ]
    for adv in advs:
        d = adv - x
        if norm == "linf":
            assert d.abs().max().item() <= eps + 1e-6
        else:
            assert _l2(d).max().item() <= eps + 1e-5
        assert adv.min().item() >= 0.0 and adv.max().item() <= 1.0
        assert d.abs().max().item() > 0  # the attack did move
    # unbounded: the budget still holds, and the box is actually left somewhere
    adv = pgd(model, x, y, eps, norm=norm, generator=g)
    bound = (adv - x).abs().amax(dim=(1, 2, 3)) if norm == "linf" else _l2(adv - x)
    assert bound.max().item() <= eps + (1e-6 if norm == "linf" else 1e-5)
    assert adv.min().item() < 0.0 or adv.max().item() > 1.0


# --------------------------------------------------------------------------- strength


def test_pgd_at_least_fgsm_and_success_grows_with_eps(digits):
    model, x, y = digits
    grid = [0.02, 0.05, 0.1, 0.15, 0.25]
    f_rates, p_rates = [], []
    for eps in grid:
        f_rates.append(_fooled(model, fgsm(model, x, y, eps, lo=0, hi=1), y))
        p_rates.append(_fooled(model, pgd(model, x, y, eps, steps=10, random_start=False, lo=0, hi=1), y))
    assert all(p >= f for p, f in zip(p_rates, f_rates)), (p_rates, f_rates)
    assert any(p > f for p, f in zip(p_rates, f_rates)), (p_rates, f_rates)
    assert all(b >= a for a, b in zip(p_rates, p_rates[1:])), p_rates
    assert all(b >= a for a, b in zip(f_rates, f_rates[1:])), f_rates
    assert p_rates[-1] > 0.9 and p_rates[0] < p_rates[-1]


def test_targeted_pgd_reaches_target(digits):
    model, x, y = digits
    target = (y + 1) % 10
    adv = pgd(model, x, y, 0.5, steps=20, random_start=False, targeted=True, target=target, lo=0, hi=1)
    with torch.no_grad():
        logits = model(adv).numpy()
    rate = success_rate(logits, y.numpy(), targeted=True, target=target.numpy())
    assert rate > 0.9, rate
    # the targeted rate is not the untargeted one: it counts hits on the target only
    assert rate == pytest.approx(float((logits.argmax(1) == target.numpy()).mean()))


# --------------------------------------------------------------------------- torchattacks


@pytest.mark.parametrize("case", ["fgsm", "pgd", "pgd-targeted", "pgdl2", "pgdl2-targeted", "fgsm-targeted"])
def test_matches_torchattacks(digits, case):
    """Same model, same raw [0, 1] inputs: max |ours − torchattacks| ≤ 1e-6.

    L∞ steps use sign(∇), identical under our summed loss and torchattacks' batch-mean loss,
    so those attacks agree on the whole batch. L2 steps divide ∇ by (‖∇‖ + 1e-10): with a
    batch-mean loss a confidently classified sample's ∇ (norm ~1e-8 here) shrinks by the
    batch size and the 1e-10 guard shortens its step by up to ~70%, so torchattacks' L2 result
    depends on the batch. With one sample per call mean = sum and the two agree; that is
    the comparison made for PGDL2 (both sides one sample at a time, since a batch-of-1 and a
    batch-of-200 matrix product round differently, which 8 steps amplify to ~1e-5).
    """
    ta = pytest.importorskip("torchattacks")
    model, x, y = digits
    target = (y + 2) % 10
    targeted = case.endswith("targeted")
    kw = {"targeted": True, "target": target} if targeted else {}
    if case.startswith("fgsm"):
        eps = 0.1
        atk = ta.FGSM(model, eps=eps)
        ours = fgsm(model, x, y, eps, lo=0.0, hi=1.0, **kw)
    elif case.startswith("pgdl2"):
        eps, alpha, steps = 1.5, 0.3, 8
        atk = ta.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
        ours = pgd(model, x, y, eps, steps=steps, step_size=alpha, norm="l2", random_start=False, lo=0.0, hi=1.0, **kw)
    else:
        eps, alpha, steps = 0.1, 0.02, 8
        atk = ta.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)
        ours = pgd(model, x, y, eps, steps=steps, step_size=alpha, random_start=False, lo=0.0, hi=1.0, **kw)
    if targeted:
        atk.set_mode_targeted_by_label(quiet=True)
    labels = target if targeted else y
    if case.startswith("pgdl2"):
        n = 60
        theirs = torch.cat([atk(x[i : i + 1], labels[i : i + 1]) for i in range(n)])
        ours = torch.cat(
            [
                pgd(
                    model,
                    x[i : i + 1],
                    y[i : i + 1],
                    eps,
                    steps=steps,
                    step_size=alpha,
                    norm="l2",
                    random_start=False,
                    lo=0.0,
                    hi=1.0,
                    **({"targeted": True, "target": target[i : i + 1]} if targeted else {}),
                )
                for i in range(n)
            ]
        )
        x = x[:n]
    else:
        theirs = atk(x, labels)
    assert (theirs - x).abs().max().item() > 0
    assert (ours - theirs).abs().max().item() <= 1e-6


# --------------------------------------------------------------------------- model space


@pytest.mark.parametrize("norm,eps_raw", [("linf", 0.08), ("l2", 0.8)])
def test_standardised_space_equals_raw_space(digits, norm, eps_raw):
    """An attack in standardised space with attack_space's ε and box is the raw attack.

    The model's logits are divided by 20 so that no sample's gradient is tiny: the L2 step's
    1e-10 guard (‖∇‖ + 1e-10, as in torchattacks) is not scale-invariant and would otherwise
    shorten steps of ultra-confident samples differently in the two spaces.
    """
    model, x, y = digits
    m, s = 0.3, 0.2

    class Standardised(nn.Module):
        def __init__(self, inner, mean, std):
            super().__init__()
            self.inner, self.mean, self.std = inner, mean, std

        def forward(self, z):
            return self.inner(z * self.std + self.mean) / 20

    raw_model = Standardised(model, 0.0, 1.0)

    space = attack_space({"normalization": {"mean": m, "std": s}, "raw_range": [0, 1]}, (x - m) / s)
    z = (x - m) / s
    adv_z = pgd(
        Standardised(model, m, s), z, y, space.eps(eps_raw), norm=norm, random_start=False, lo=space.lo, hi=space.hi
    )
    adv_x = pgd(raw_model, x, y, eps_raw, norm=norm, random_start=False, lo=0.0, hi=1.0)
    assert (adv_x - x).abs().max().item() > 0.01
    assert (adv_z * s + m - adv_x).abs().max().item() <= 1e-5


def test_attack_space():
    x = torch.tensor([[0.5, -2.0], [1.25, 0.0]])
    sp = attack_space({"normalization": {"mean": 0.3, "std": 0.2}, "raw_range": [0, 1]}, x)
    assert isinstance(sp, AttackSpace)
    assert sp.lo == pytest.approx(-1.5) and sp.hi == pytest.approx(3.5)
    assert sp.scale == pytest.approx(5.0) and sp.eps(8 / 255) == pytest.approx(5 * 8 / 255)
    assert "raw range" in sp.how
    wav = attack_space({"normalization": {"mean": 0.0, "std": 0.5}, "raw_range": [-1, 1]}, x)
    assert (wav.lo, wav.hi, wav.scale) == pytest.approx((-2.0, 2.0, 2.0))
    # no raw range (log-mel): the observed test range, eps in standardised units
    mel = attack_space({"normalization": {"mean": 3.0, "std": 7.0}}, x)
    assert (mel.lo, mel.hi, mel.scale) == (-2.0, 1.25, 1.0)
    assert "observed" in mel.how
    with pytest.raises(ValueError, match="char_substitution"):
        attack_space({}, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(InputError):
        attack_space({"raw_range": [1, 0]}, x)
    with pytest.raises(InputError):
        attack_space({"normalization": {"mean": 0.0, "std": 0.0}, "raw_range": [0, 1]}, x)


# --------------------------------------------------------------------------- determinism, side effects


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_random_start_is_seeded(digits, norm, eps):
    model, x, y = digits
    run = lambda seed: pgd(
        model,
        x,
        y,
        eps,
        steps=3,
        norm=norm,  # noqa: E731
        generator=torch.Generator().manual_seed(seed),
        lo=0,
        hi=1,
    )
    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_model_mode_and_grads_untouched(digits):
    trained, x, y = digits
    model = _mlp(dropout=0.5)
    model.load_state_dict(trained.state_dict())
    model.train()
    model[1].eval()  # a mixed mode must come back as it was
    modes = [m.training for m in model.modules()]
    sentinel = [torch.full_like(p, 0.125) for p in model.parameters()]
    for p, g in zip(model.parameters(), sentinel):
        p.grad = g.clone()
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():  # a caller's no_grad must not break the attack
        a1 = pgd(model, x, y, 0.1, random_start=False, lo=0, hi=1)
    a2 = fgsm(model, x, y, 0.1, norm="l2")
    assert [m.training for m in model.modules()] == modes
    for p, g in zip(model.parameters(), sentinel):
        assert torch.equal(p.grad, g)
    # dropout was off during the attack: same result as on an eval-mode copy
    assert torch.equal(a1, pgd(ref, x, y, 0.1, random_start=False, lo=0, hi=1))
    assert torch.equal(a2, fgsm(ref, x, y, 0.1, norm="l2"))


def test_attack_batched_matches_one_batch(digits):
    model, x, y = digits
    t = (y + 4) % 10
    whole = pgd(model, x, y, 0.1, random_start=False, targeted=True, target=t, lo=0, hi=1)
    chunks = attack_batched(
        pgd, model, x, y, batch_size=33, eps=0.1, random_start=False, targeted=True, target=t, lo=0, hi=1
    )
    assert chunks.shape == x.shape
    assert (chunks - whole).abs().max().item() <= 1e-6
    with pytest.raises(InputError):
        attack_batched(pgd, model, x, y[:-1], eps=0.1)


def test_bad_options(digits):
    model, x, y = digits
    with pytest.raises(SpecError):
        pgd(model, x, y, 0.1, norm="l1")
    with pytest.raises(SpecError):
        fgsm(model, x, y, -0.1)
    with pytest.raises(SpecError):
        pgd(model, x, y, 0.1, targeted=True)
    with pytest.raises(SpecError):
        pgd(model, x, y, 0.1, steps=0)
    with pytest.raises(InputError):
        fgsm(model, x, y[:5], 0.1)
    with pytest.raises(ValueError):
        pgd(model, torch.zeros(4, 64, dtype=torch.long), y[:4], 0.1)


# --------------------------------------------------------------------------- token substitution


class Bag(nn.Module):
    """Bag-of-tokens classifier: logits = sum of per-token class scores (pad scores 0)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table.clone())

    def forward(self, tokens):
        return self.table[tokens].sum(1)


def _ce(model, tokens, labels):
    with torch.no_grad():
        return F.cross_entropy(model(tokens), labels, reduction="none")


def _greedy_reference(model, tok, label, budget, cands, pad_id, targeted, true):
    """Plain-loop greedy substitution for one sample (the spec of char_substitution)."""
    cur = tok.clone()

    def score(t):
        ce = _ce(model, t[None], label[None]).item()
        return -ce if targeted else ce

    def fooled(t):
        with torch.no_grad():
            p = model(t[None]).argmax(1).item()
        return p == label.item() if targeted else p != true.item()

    for _ in range(budget):
        if fooled(cur):
            break
        base, best, best_t = score(cur), -math.inf, None
        for p in range(len(tok)):
            if tok[p] == pad_id:
                continue
            for c in cands.tolist():
                v = cur.clone()
                v[p] = c
                s = score(v)
                if s > best:
                    best, best_t = s, v
        if best_t is None or best <= base + 1e-6:
            break
        cur = best_t
    return cur


def test_char_substitution_finds_decisive_flip():
    vocab, pad = 12, 0
    table = torch.zeros(vocab, 2)
    table[5] = torch.tensor([0.0, 6.0])  # token 5 decides class 1
    table[6] = torch.tensor([6.0, 0.0])  # token 6 decides class 0
    table[1:5, 0] = 0.1
    model = Bag(table)
    toks = torch.tensor([[1, 6, 2, 3, 0, 0], [2, 3, 6, 4, 1, 0], [6, 1, 1, 1, 1, 1]])
    y = torch.zeros(3, dtype=torch.long)
    assert (model(toks).argmax(1) == 0).all()
    adv = char_substitution(model, toks, y, budget=1, candidates=torch.arange(1, vocab), pad_id=pad)
    assert (model(adv).argmax(1) == 1).all()
    diff = adv != toks
    assert (diff.sum(1) == 1).all()
    assert (adv[diff] == 5).all() and (toks[diff] == 6).all()  # the 6 became a 5
    # targeted: drive class 1 inputs to class 0 by planting a 6
    toks1 = torch.tensor([[5, 2, 0, 0], [1, 5, 3, 0]])
    adv1 = char_substitution(
        model,
        toks1,
        torch.ones(2, dtype=torch.long),
        budget=1,
        candidates=torch.arange(1, vocab),
        targeted=True,
        target=torch.zeros(2, dtype=torch.long),
    )
    assert (model(adv1).argmax(1) == 0).all() and (adv1[:, 2:] == toks1[:, 2:]).all()


@pytest.mark.parametrize("targeted", [False, True])
def test_char_substitution_budget_padding_and_reference(targeted):
    gen = torch.Generator().manual_seed(0)
    vocab, n, length, pad, classes = 30, 60, 9, 0, 4
    table = torch.randn(vocab, classes, generator=gen)
    table[pad] = 0
    model = Bag(table)
    toks = torch.randint(1, vocab, (n, length), generator=gen)
    lengths = torch.randint(2, length + 1, (n,), generator=gen)
    toks[torch.arange(length)[None, :] >= lengths[:, None]] = pad
    y = torch.randint(0, classes, (n,), generator=gen)
    y[:10] = model(toks[:10]).argmax(1)  # some correctly classified samples
    target = (y + 1) % classes
    cands = torch.arange(0, vocab, 2)  # includes pad id 0, which must be ignored
    labels = target if targeted else y
    kw = {"targeted": True, "target": target} if targeted else {}
    model.train()
    adv = char_substitution(model, toks, y, budget=2, candidates=cands, pad_id=pad, batch_size=37, **kw)
    assert model.training and model.table.grad is None
    changed = adv != toks
    assert changed.sum(1).max().item() <= 2
    assert changed.any()
    assert not changed[toks == pad].any()
    assert (adv[changed] % 2 == 0).all() and (adv[changed] != pad).all()
    rows = changed.any(1)
    loss0, loss1 = _ce(model, toks, labels), _ce(model, adv, labels)
    pred = model(adv).argmax(1)
    success = (pred == target) if targeted else (pred != y)
    better = (loss1 < loss0) if targeted else (loss1 > loss0)
    assert (better | success)[rows].all()
    # samples that were already fooled are left alone
    pred0 = model(toks).argmax(1)
    already = (pred0 == target) if targeted else (pred0 != y)
    assert not rows[already].any()
    # the vectorised attack reaches the loss of a plain-loop greedy search
    for i in range(n):
        ref = _greedy_reference(model, toks[i], labels[i], 2, cands[cands != pad], pad, targeted, y[i])
        assert _ce(model, adv[i][None], labels[i][None]).item() == pytest.approx(
            _ce(model, ref[None], labels[i][None]).item(), abs=1e-5
        )


def test_char_substitution_errors():
    model = Bag(torch.zeros(5, 2))
    with pytest.raises(InputError):
        char_substitution(model, torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), candidates=torch.arange(5))
    with pytest.raises(SpecError):
        char_substitution(
            model,
            torch.ones(3, 4, dtype=torch.long),
            torch.zeros(3, dtype=torch.long),
            candidates=torch.arange(5),
            targeted=True,
        )
    toks = torch.ones(3, 4, dtype=torch.long)
    same = char_substitution(model, toks, torch.zeros(3, dtype=torch.long), budget=0, candidates=torch.arange(5))
    assert torch.equal(same, toks)


# --------------------------------------------------------------------------- rates


def test_transfer_and_success_rates_against_loops():
    rng = np.random.default_rng(0)
    n, k = 200, 5
    y = rng.integers(0, k, n)
    s_adv = rng.normal(size=(n, k))
    s_clean = rng.normal(size=(n, k))
    s_clean[np.arange(n), y] += 1.0
    t_clean = rng.normal(size=(n, k))
    t_clean[np.arange(n), y] += 1.5
    t_adv = rng.normal(size=(n, k))
    t_lab = t_adv.argmax(1)
    s_adv[np.arange(n)[:100], t_lab[:100]] += 2.0  # half the students copy the teacher

    mask = transferable_mask(t_clean, t_adv, y)
    fooled = follows = correct = total = right = fooled_right = 0
    for i in range(n):
        if not (t_clean[i].argmax() == y[i] and t_adv[i].argmax() != y[i]):
            assert not mask[i]
            continue
        assert mask[i]
        total += 1
        p = s_adv[i].argmax()
        fooled += p != y[i]
        correct += p == y[i]
        follows += p == t_lab[i] and t_lab[i] != y[i]
        if s_clean[i].argmax() == y[i]:
            right += 1
            fooled_right += p != y[i]
    r = transfer_rates(s_adv, t_lab, y, s_clean, mask=mask)
    assert r["n"] == total > 20
    assert r["fooled"] == pytest.approx(fooled / total)
    assert r["follows_teacher"] == pytest.approx(follows / total)
    assert r["adv_accuracy"] == pytest.approx(correct / total)
    assert r["n_correct"] == right
    assert r["clean_accuracy"] == pytest.approx(right / total)
    assert r["fooled_of_correct"] == pytest.approx(fooled_right / right)
    assert 0 < r["follows_teacher"] < r["fooled"] < 1

    everything = transfer_rates(s_adv, t_lab, y)
    assert everything["n"] == n and "clean_accuracy" not in everything
    empty = transfer_rates(s_adv, t_lab, y, mask=np.zeros(n, dtype=bool))
    assert empty["n"] == 0 and math.isnan(empty["fooled"])

    assert success_rate(s_adv, y) == pytest.approx(np.mean([s_adv[i].argmax() != y[i] for i in range(n)]))
    tgt = (y + 1) % k
    assert success_rate(s_adv, y, targeted=True, target=tgt) == pytest.approx(
        np.mean([s_adv[i].argmax() == tgt[i] for i in range(n)])
    )

    with pytest.raises(InputError):
        transfer_rates(s_adv, t_lab[:-1], y)
    with pytest.raises(InputError):
        transfer_rates(s_adv, t_lab, y, mask=np.ones(n))  # not boolean
    with pytest.raises(InputError):
        success_rate(s_adv[:, 0], y)
    with pytest.raises(SpecError):
        success_rate(s_adv, y, targeted=True)


def _one_hot(pred: list[int], k: int = 3) -> np.ndarray:
    return np.eye(k)[pred] * 5.0


class _Lookup(nn.Module):
    """Input i (a one-number row) -> row i of a fixed logit table: predictions set by hand."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("table", torch.tensor(table, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()]


def test_adv_flipped_against_a_hand_count():
    """adv_flipped@ε counts only correct clean predictions the attack turned wrong; adv_fooled also
    counts the student's own clean errors. Checked on 6 hand-made samples, by transfer_rates and
    through the audit's per-model measurement."""
    from kdaudit.security.evaluate import _Adversarial, adversarial_metrics

    y = np.array([0, 1, 2, 0, 1, 2])
    t_clean = [0, 1, 2, 0, 1, 0]  # sample 5: teacher wrong clean -> not transferable
    t_adv = [1, 2, 0, 0, 0, 1]  # sample 3: teacher not fooled -> not transferable
    s_clean = [0, 1, 0, 0, 1, 2]
    s_adv = [2, 1, 0, 1, 0, 0]
    # transferable T = {0, 1, 2, 4}:
    #   0: student right clean, wrong adv            -> fooled, flipped
    #   1: right clean, right adv                    -> nothing
    #   2: WRONG clean (0), wrong adv (= teacher's 0) -> fooled, follows; not flipped, not in its denominator
    #   4: right clean, wrong adv (= teacher's 0)     -> fooled, follows, flipped
    # samples 3 and 5 flip too but are outside T
    mask = transferable_mask(_one_hot(t_clean), _one_hot(t_adv), y)
    assert mask.tolist() == [True, True, True, False, True, False]
    r = transfer_rates(_one_hot(s_adv), np.array(t_adv), y, _one_hot(s_clean), mask=mask)
    assert r["n"] == 4 and r["n_correct"] == 3
    assert r["fooled"] == pytest.approx(3 / 4)
    assert r["follows_teacher"] == pytest.approx(2 / 4)
    assert r["fooled_of_correct"] == pytest.approx(2 / 3)  # adv_flipped: 2 flipped of 3 right clean

    # a student wrong on every clean transferable input: fooled is defined, flipped is NaN
    wrong_clean = [1, 2, 0, 0, 0, 2]
    r = transfer_rates(_one_hot(s_adv), np.array(t_adv), y, _one_hot(wrong_clean), mask=mask)
    assert r["n_correct"] == 0 and r["fooled"] == pytest.approx(3 / 4) and math.isnan(r["fooled_of_correct"])
    empty = transfer_rates(_one_hot(s_adv), np.array(t_adv), y, _one_hot(s_clean), mask=np.zeros(6, dtype=bool))
    assert math.isnan(empty["fooled"]) and math.isnan(empty["fooled_of_correct"])

    # the same through _Adversarial.measure: inputs 0..5 are clean, 6..11 their adversarial versions
    att = object.__new__(_Adversarial)
    att.levels, att.whitebox = [0.1], 0.1
    att.x = torch.arange(6, dtype=torch.float32)[:, None]
    att.y = torch.tensor(y)
    att.teacher_clean = _one_hot(t_clean)
    att.teacher_adv = {0.1: _one_hot(t_adv)}
    att.adv_inputs = {0.1: att.x + 6}
    att.attack = lambda model, level: att.x + 6  # the white-box attack: unused here
    student = _Lookup(np.concatenate([_one_hot(s_clean), _one_hot(s_adv)]))
    row = att.measure(student, is_teacher=False)
    assert set(row) == set(adversarial_metrics([0.1], 0.1))
    assert row["adv_fooled@0.1"] == pytest.approx(3 / 4)
    assert row["adv_follows@0.1"] == pytest.approx(2 / 4)
    assert row["adv_flipped@0.1"] == pytest.approx(2 / 3)
    assert row["adv_accuracy@0.1"] == pytest.approx(1 / 4)
    hopeless = _Lookup(np.concatenate([_one_hot(wrong_clean), _one_hot(s_adv)]))
    row = att.measure(hopeless, is_teacher=False)
    assert math.isnan(row["adv_flipped@0.1"]) and row["adv_fooled@0.1"] == pytest.approx(3 / 4)
    # the teacher is right on every clean transferable input and fooled on all of them
    row = att.measure(_Lookup(np.concatenate([_one_hot(t_clean), _one_hot(t_adv)])), is_teacher=True)
    assert row["adv_flipped@0.1"] == row["adv_fooled@0.1"] == 1.0
