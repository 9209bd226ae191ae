import math

import numpy as np
import pytest
import torch

from kdaudit.objectives import OBJECTIVES, distillation_loss


def _hand_loss(zs, zt, y, alpha, T, kl=False, t2=False):
    """PROTOCOL §2 with explicit per-sample loops in float64."""
    total = 0.0
    for i in range(len(y)):
        ls = zs[i] - zs[i].max()
        log_q1 = ls - math.log(sum(math.exp(v) for v in ls))
        ce = -log_q1[y[i]]
        st = zs[i] / T
        st = st - st.max()
        log_qT = st - math.log(sum(math.exp(v) for v in st))
        tt = zt[i] / T
        tt = tt - tt.max()
        log_p = tt - math.log(sum(math.exp(v) for v in tt))
        p = np.exp(log_p)
        soft = -sum(p[c] * log_qT[c] for c in range(len(p)))
        if kl:
            soft -= -sum(p[c] * log_p[c] for c in range(len(p)))
        if t2:
            soft *= T * T
        total += (1 - alpha) * ce + alpha * soft
    return total / len(y)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("kl,t2", [(False, False), (True, False), (False, True)])
def test_kd_loss_matches_hand_computation(alpha, T, kl, t2):
    rng = np.random.default_rng(3)
    zs = rng.normal(size=(7, 5)) * 3
    zt = rng.normal(size=(7, 5)) * 3
    y = rng.integers(0, 5, size=7)
    got = distillation_loss(
        torch.tensor(zs),
        torch.tensor(y),
        torch.tensor(zt),
        alpha=alpha,
        temperature=T,
        kd_loss="kl" if kl else "ce",
        t2_scaling=t2,
    )
    assert float(got) == pytest.approx(_hand_loss(zs, zt, y, alpha, T, kl, t2), abs=1e-10)


def test_kl_and_ce_variants_have_the_same_gradient():
    rng = np.random.default_rng(0)
    zt = torch.tensor(rng.normal(size=(6, 4)))
    y = torch.tensor(rng.integers(0, 4, size=6))
    z0 = torch.tensor(rng.normal(size=(6, 4)))
    grads = []
    for kind in ("ce", "kl"):
        zs = z0.clone().requires_grad_(True)
        distillation_loss(zs, y, zt, alpha=0.7, temperature=2.0, kd_loss=kind).backward()
        grads.append(zs.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-12)


def test_alpha_zero_is_plain_cross_entropy_and_registry_has_both():
    zs = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 1, 0])
    ce = torch.nn.functional.cross_entropy(zs, y)
    assert torch.equal(distillation_loss(zs, y, torch.randn(5, 3), alpha=0.0), ce)
    assert torch.equal(OBJECTIVES.get("ce")(zs, y), ce)
    assert OBJECTIVES.get("kd") is distillation_loss


@pytest.mark.parametrize("kd_loss", ["ce", "kl"])
def test_the_stacked_loss_equals_each_jobs_own_objective(kd_loss):
    """K jobs' losses in one call equal distillation_loss / cross-entropy job by job: mixed α
    (0 for SIDDO), temperatures, T² scaling, shared and own target tables."""
    from kdaudit.objectives import OBJECTIVES
    from kdaudit.objectives.stacked import StackedLoss

    g = torch.Generator().manual_seed(3)
    n, c, b = 40, 5, 7
    teacher, noise = torch.randn(n, c, generator=g), torch.rand(n, c, generator=g)
    jobs = [
        ({"alpha": 0.0}, None),
        ({"alpha": 0.5, "temperature": 1.0}, teacher),
        ({"alpha": 0.9, "temperature": 4.0, "t2_scaling": True}, teacher),
        ({"alpha": 0.1, "temperature": 2.0}, noise),
        ({"alpha": 0.3}, None),  # α > 0 without targets: plain cross-entropy, as one job alone
    ]
    params = [{**p, "kd_loss": kd_loss} for p, _ in jobs]
    targets = [t for _, t in jobs]
    logits = torch.randn(len(jobs), b, c, generator=g, requires_grad=True)
    y = torch.randint(0, c, (len(jobs), b), generator=g)
    idx = torch.stack([torch.randperm(n, generator=g)[:b] for _ in jobs])
    got = StackedLoss.of(params, targets, torch.device("cpu"))(logits, y, idx)
    for k, (p, t) in enumerate(zip(params, targets, strict=True)):
        alpha = p["alpha"]
        want = OBJECTIVES.get("ce" if alpha == 0 else "kd")(
            logits[k],
            y[k],
            None if t is None else t[idx[k]],
            alpha=alpha,
            temperature=p.get("temperature", 1.0),
            kd_loss=kd_loss,
            t2_scaling=p.get("t2_scaling", False),
        )
        torch.testing.assert_close(got[k], want, rtol=1e-6, atol=1e-6)
    grad = torch.autograd.grad(got.sum(), logits)[0]
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_jobs_with_different_kd_losses_are_not_stacked():
    from kdaudit.objectives.stacked import StackedLoss

    assert StackedLoss.of([{"kd_loss": "ce"}, {"kd_loss": "kl"}], [None, None], torch.device("cpu")) is None
