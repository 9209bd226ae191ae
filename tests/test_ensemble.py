"""Students trained as one vectorised ensemble equal the same students trained one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kdaudit.execute.ensemble as ens
from kdaudit.data.base import DataBundle, load_dataset
from kdaudit.errors import TrainingError
from kdaudit.execute.ensemble import Member, group_key, train_ensemble, why_not
from kdaudit.execute.train import TrainResult, init_weights, noise_table, train_model
from kdaudit.models import build_model
from kdaudit.objectives.hints import noise_feature_table, teacher_feature_table

HAS_CUDA = torch.cuda.is_available()
MLP = {"name": "mlp", "kwargs": {"hidden": [16]}}
CNN = {"name": "small-cnn", "kwargs": {"width": 4}}
N_TRAIN = 192


def job(model: dict, seed: int, alpha: float = 0.0, condition: str = "siddo", **train) -> dict:
    """A job's params as the plan gives them to train_model; ``train`` overrides the settings."""
    t = {
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 1e-3,
        "schedule": "constant",
        "step_epochs": [],
        "step_gamma": 0.1,
        "warmup_epochs": 0,
        "grad_clip": None,
        "epochs": 2,
        "batch_size": 32,
        "precision": "fp32",
        "channels_last": False,
        "compile": False,
        **train,
    }
    p = {"model": model, "train": t, "seed": seed, "condition": condition, "alpha": alpha}
    if alpha > 0:
        p.update(temperature=2.0, kd_loss="ce", t2_scaling=False)
    return p


@pytest.fixture(scope="module")
def flat() -> DataBundle:
    return load_dataset("digits", train_subset=N_TRAIN, test_subset=48)


@pytest.fixture(scope="module")
def images() -> DataBundle:
    return load_dataset("digits", train_subset=N_TRAIN, test_subset=48, flatten=False)


@pytest.fixture(scope="module")
def teacher_logits(flat) -> torch.Tensor:
    m0 = init_weights({"model": MLP, "init_seed": 5}, flat)
    teacher = train_model(job(MLP, 0, epochs=1), flat, m0, keep_train_logits=True)
    assert teacher.train_logits is not None
    return torch.from_numpy(teacher.train_logits)


def m0_of(model: dict, data: DataBundle) -> dict[str, torch.Tensor]:
    return init_weights({"model": model, "init_seed": 0}, data)


def sequential(m: Member, data: DataBundle, m0: dict[str, torch.Tensor]) -> TrainResult:
    return train_model(
        m.params,
        data,
        m0,
        target_logits=m.target_logits,
        hint_targets=m.hint_targets,
        keep_train_logits=m.keep_train_logits,
        name=m.name,
    )


def assert_same(got: TrainResult, want: TrainResult, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Every state tensor, the logits and the per-epoch losses equal within float tolerance."""
    assert got.state.keys() == want.state.keys()
    for k in want.state:
        torch.testing.assert_close(got.state[k], want.state[k], atol=atol, rtol=rtol, msg=k)
    np.testing.assert_allclose(got.test_logits, want.test_logits, atol=atol * 10, rtol=rtol)
    np.testing.assert_array_equal(got.test_labels, want.test_labels)
    assert (got.train_logits is None) == (want.train_logits is None)
    if want.train_logits is not None:
        np.testing.assert_allclose(got.train_logits, want.train_logits, atol=atol * 10, rtol=rtol)
    assert [h["epoch"] for h in got.history] == [h["epoch"] for h in want.history]
    np.testing.assert_allclose(
        [h["train_loss"] for h in got.history], [h["train_loss"] for h in want.history], atol=atol, rtol=rtol
    )


def check_against_sequential(members: list[Member], data: DataBundle, m0, **tol) -> list[TrainResult]:
    results = train_ensemble(members, data, m0)
    assert len(results) == len(members)
    for m, r in zip(members, results):
        assert_same(r, sequential(m, data, m0), **tol)
    return results


# ------------------------------------------------------------------------------------ equality


def test_mlp_sgd_siddo_kd_and_rcd_members_equal_sequential(flat, teacher_logits):
    m0 = m0_of(MLP, flat)
    members = [
        Member(job(MLP, 1), name="siddo-s01", keep_train_logits=True),
        Member(job(MLP, 1, 0.5, "kd"), target_logits=teacher_logits, name="kd-a0.5-s01"),  # shares seed 1
        Member(
            job(MLP, 2, 0.9, "rcd-uniform"),
            target_logits=noise_table("rcd-uniform", 2, N_TRAIN, 10),
            name="rcd-uniform-a0.9-s02",
        ),
        Member(
            {**job(MLP, 3, 0.5, "rcd-gaussian"), "temperature": 4.0, "kd_loss": "kl", "t2_scaling": True},
            target_logits=noise_table("rcd-gaussian", 3, N_TRAIN, 10),
            name="rcd-gaussian-a0.5-s03",
        ),
    ]
    assert len({group_key(m.params) for m in members}) == 1
    seen: list[tuple[int, int, list[float]]] = []
    results = train_ensemble(members, flat, m0, on_epoch=lambda e, n, losses: seen.append((e, n, losses)))
    for m, r in zip(members, results):
        assert_same(r, sequential(m, flat, m0))
        assert not torch.equal(r.state["head.weight"], m0["head.weight"])
    assert [(e, n) for e, n, _ in seen] == [(1, 2), (2, 2)]
    for k, r in enumerate(results):
        assert [losses[k] for _, _, losses in seen] == [h["train_loss"] for h in r.history]
    assert results[0].train_logits is not None and results[1].train_logits is None
    # the members differ: the ensemble did not train one model K times
    assert not torch.allclose(results[0].state["head.weight"], results[1].state["head.weight"])


@pytest.mark.parametrize(
    "train",
    [
        {"optimizer": "adam", "lr": 0.01, "weight_decay": 1e-4, "schedule": "step", "step_epochs": [1]},
        {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 1, "epochs": 3},
    ],
    ids=["adam-step", "adamw-cosine-warmup"],
)
def test_mlp_adam_and_adamw_with_schedules(flat, teacher_logits, train):
    m0 = m0_of(MLP, flat)
    members = [
        Member(job(MLP, 4, **train), name="siddo"),
        Member(job(MLP, 5, 0.5, "kd", **train), target_logits=teacher_logits, name="kd"),
    ]
    check_against_sequential(members, flat, m0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_small_cnn_with_batchnorm_running_stats(images, optimizer):
    m0 = m0_of(CNN, images)
    lr = 0.05 if optimizer == "sgd" else 0.005
    members = [
        Member(job(CNN, 1, optimizer=optimizer, lr=lr), name="siddo", keep_train_logits=True),
        Member(
            job(CNN, 2, 0.5, "rcd-gaussian", optimizer=optimizer, lr=lr),
            target_logits=noise_table("rcd-gaussian", 2, N_TRAIN, 10),
            name="rcd",
        ),
    ]
    results = check_against_sequential(members, images, m0)
    steps = 2 * -(-N_TRAIN // 32)
    for r in results:
        assert int(r.state["features.1.num_batches_tracked"]) == steps
        assert int(r.state["features.5.num_batches_tracked"]) == steps
        assert not torch.equal(r.state["features.1.running_mean"], m0["features.1.running_mean"])
    # each member's running statistics come from its own batches
    assert not torch.allclose(results[0].state["features.1.running_var"], results[1].state["features.1.running_var"])


def test_hint_members_equal_sequential(flat):
    m0 = m0_of(MLP, flat)
    torch.manual_seed(7)
    teacher = build_model("mlp", flat.input_shape, 10, hidden=[8])
    t_feats = teacher_feature_table(teacher, teacher.features[2], flat.x_train, (8,))
    hint = {"weight": 2.0, "student_layer": "features.2", "teacher_layer": "features.2", "teacher_model": MLP}
    members = [
        Member(
            {**job(MLP, 1, 0.5, "kd"), "hint": hint},
            target_logits=torch.randn(N_TRAIN, 10, generator=torch.Generator().manual_seed(0)),
            hint_targets=t_feats,
            name="kd-hint",
        ),
        Member(
            {**job(MLP, 2, 0.5, "rcd-uniform"), "hint": hint},
            target_logits=noise_table("rcd-uniform", 2, N_TRAIN, 10),
            hint_targets=noise_feature_table("rcd-uniform", 2, N_TRAIN, (8,)),
            name="rcd-hint",
        ),
    ]
    check_against_sequential(members, flat, m0)


def test_hint_with_a_conv_regressor_on_the_cnn(images):
    m0 = m0_of(CNN, images)
    hint = {"weight": 1.0, "student_layer": "features.3", "teacher_layer": "features.3", "teacher_model": CNN}
    members = [
        Member(
            {**job(CNN, s, 0.5, "rcd-gaussian"), "hint": hint},
            target_logits=noise_table("rcd-gaussian", s, N_TRAIN, 10),
            hint_targets=noise_feature_table("rcd-gaussian", s, N_TRAIN, (3, 2, 2)),  # pooled, 1×1 conv
            name=f"rcd-hint-s{s}",
        )
        for s in (1, 2)
    ]
    check_against_sequential(members, images, m0)


def test_grad_clip_is_per_member(flat, teacher_logits):
    m0 = m0_of(MLP, flat)
    members = [
        Member(job(MLP, 1, grad_clip=0.05), name="siddo"),
        Member(job(MLP, 2, 0.9, "kd", grad_clip=0.05), target_logits=teacher_logits, name="kd"),
    ]
    clipped = check_against_sequential(members, flat, m0)
    free = train_ensemble([Member(job(MLP, 1), name="siddo")], flat, m0)[0]
    assert not torch.allclose(clipped[0].state["head.weight"], free.state["head.weight"], atol=1e-4)


def test_a_member_trains_the_same_in_any_group(flat, teacher_logits):
    m0 = m0_of(MLP, flat)
    a = Member(job(MLP, 1), name="a")
    b = Member(job(MLP, 2, 0.5, "kd"), target_logits=teacher_logits, name="b")
    c = Member(job(MLP, 2, 0.9, "rcd-uniform"), target_logits=noise_table("rcd-uniform", 2, N_TRAIN, 10), name="c")
    d = Member(job(MLP, 3), name="d")
    pair = train_ensemble([a, b], flat, m0)
    four = train_ensemble([d, b, c, a], flat, m0)
    alone = train_ensemble([b], flat, m0)
    assert_same(four[3], pair[0])
    assert_same(four[1], pair[1])
    assert_same(alone[0], pair[1])


def test_the_global_rng_is_left_alone(flat):
    m0 = m0_of(MLP, flat)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train_ensemble([Member(job(MLP, 1), name="a"), Member(job(MLP, 2), name="b")], flat, m0)
    assert torch.equal(before, torch.get_rng_state())


def test_bf16_trains_close_to_sequential_bf16_or_is_refused_with_a_reason(flat, images, teacher_logits):
    """bf16 autocast must reach the vmapped forward; where it does not, the job trains on its own."""
    for model, data in ((MLP, flat), (CNN, images)):
        m0 = m0_of(model, data)
        members = [
            Member(job(model, 1, precision="bf16"), name="siddo"),
            Member(job(model, 2, 0.5, "kd", precision="bf16"), target_logits=teacher_logits, name="kd"),
        ]
        reason = why_not(members[0].params, data)
        assert why_not(job(model, 1), data) is None  # the same model in fp32
        if reason is not None:
            assert "train.precision bf16" in reason
            with pytest.raises(ValueError, match="siddo cannot train as an ensemble member: train.precision bf16"):
                train_ensemble(members, data, m0)
            continue
        for m, r in zip(members, train_ensemble(members, data, m0)):
            assert all(torch.isfinite(v).all() for v in r.state.values())
            assert np.isfinite(r.test_logits).all()
            assert_same(r, sequential(m, data, m0), atol=5e-2, rtol=5e-2)


# ------------------------------------------------------------------------------------ refusals


def test_dropout_compile_and_checkpoints_are_refused(flat):
    assert why_not(job(MLP, 1), flat) is None
    reason = why_not(job({"name": "mlp", "kwargs": {"hidden": [16], "dropout": 0.1}}, 1), flat)
    assert reason is not None and "dropout" in reason and "0.1" in reason
    assert "train.compile" in (why_not(job(MLP, 1, compile=True), flat) or "")
    assert "checkpoint" in (why_not({**job(MLP, 0), "checkpoint": {"path": "t.safetensors"}}, flat) or "")
    assert "snapshot" in (why_not({**job(MLP, 0), "snapshots": [1, 2]}, flat) or "")
    assert "train.precision" in (why_not(job(MLP, 1, precision="fp16"), flat) or "")
    dropped = Member(job({"name": "mlp", "kwargs": {"hidden": [16], "dropout": 0.1}}, 1), name="drop")
    with pytest.raises(ValueError, match="drop.*dropout"):
        train_ensemble([dropped], flat, m0_of(MLP, flat))


def test_a_dropout_module_is_found_by_the_probe(flat, monkeypatch):
    monkeypatch.setattr(ens, "_PROBES", {})
    real = build_model("mlp", flat.input_shape, 10, hidden=[16])
    real.features.append(torch.nn.Dropout(0.25))  # dropout the kwargs do not show
    monkeypatch.setattr(ens, "make_model", lambda params, data: real)
    assert "dropout (p = 0.25)" in (why_not(job(MLP, 1), flat) or "")


def test_the_probe_runs_once_per_model(flat, monkeypatch):
    monkeypatch.setattr(ens, "_PROBES", {})
    calls = []
    real = ens._probe
    monkeypatch.setattr(ens, "_probe", lambda p, d: calls.append(1) or real(p, d))
    assert why_not(job(MLP, 1), flat) is None
    assert why_not(job(MLP, 2, 0.5, "kd"), flat) is None
    assert why_not(job({"name": "mlp", "kwargs": {"hidden": [8]}}, 1), flat) is None
    assert len(calls) == 2


def test_members_of_different_groups_are_refused(flat):
    m0 = m0_of(MLP, flat)
    with pytest.raises(ValueError, match=r"b cannot train with a: train\.lr differs"):
        train_ensemble([Member(job(MLP, 1), name="a"), Member(job(MLP, 2, lr=0.1), name="b")], flat, m0)
    with pytest.raises(ValueError, match=r"model\.kwargs\.hidden differs"):
        train_ensemble(
            [Member(job(MLP, 1), name="a"), Member(job({"name": "mlp", "kwargs": {"hidden": [8]}}, 1), name="b")],
            flat,
            m0,
        )
    # what does not change the numbers does not split a group
    assert group_key(job(MLP, 1, threads=4, eval_batch_size=8)) == group_key(job(MLP, 2, 0.5, "kd"))


def test_hint_targets_for_some_members_only_are_refused(flat):
    hint = {"weight": 1.0, "student_layer": "features.2"}
    a = Member({**job(MLP, 1), "hint": hint}, hint_targets=noise_feature_table("rcd-uniform", 1, N_TRAIN, (8,)))
    b = Member({**job(MLP, 2), "hint": hint}, name="no-targets")
    with pytest.raises(ValueError, match="no-targets: no hint targets"):
        train_ensemble([a, b], flat, m0_of(MLP, flat))


def test_a_non_finite_loss_names_its_member(flat, teacher_logits):
    m0 = m0_of(MLP, flat)
    bad = teacher_logits.clone()
    bad[:, 0] = float("nan")
    members = [
        Member(job(MLP, 1), name="fine"),
        Member(job(MLP, 1, 0.5, "kd"), target_logits=bad, name="broken-kd"),
        Member(job(MLP, 2), name="also-fine"),
    ]
    with pytest.raises(TrainingError, match="broken-kd: the training loss became nan at epoch 1"):
        train_ensemble(members, flat, m0)
    huge = [Member(job(MLP, 1, lr=1e30), name="siddo-s01"), Member(job(MLP, 2, lr=1e30), name="siddo-s02")]
    with pytest.raises(TrainingError, match="siddo-s0[12]: the training loss became"):
        train_ensemble(huge, flat, m0)


def test_an_lstm_trains_as_an_ensemble_or_is_refused_with_a_reason():
    g = torch.Generator().manual_seed(0)
    frames = DataBundle(
        name="frames",
        x_train=torch.randn(24, 6, 5, generator=g),
        y_train=torch.randint(0, 3, (24,), generator=g),
        x_test=torch.randn(8, 6, 5, generator=g),
        y_test=torch.randint(0, 3, (8,), generator=g),
        num_classes=3,
    )
    lstm = {"name": "lstm", "kwargs": {"embed": 4, "hidden": 8}}
    params = job(lstm, 1, batch_size=8, epochs=1)
    reason = why_not(params, frames)
    m0 = m0_of(lstm, frames)
    if reason is None:
        members = [Member(params, name="a"), Member(job(lstm, 2, batch_size=8, epochs=1), name="b")]
        check_against_sequential(members, frames, m0)
    else:
        assert isinstance(reason, str) and reason.strip()
        with pytest.raises(ValueError, match="cannot train as an ensemble member"):
            train_ensemble([Member(params, name="a")], frames, m0)


# ------------------------------------------------------------------------------------ on a GPU


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_cuda_ensemble_equals_sequential_cuda_training(flat, images, teacher_logits):
    for model, data in ((MLP, flat), (CNN, images)):
        m0 = m0_of(model, data)
        members = [
            Member(job(model, 1), name="siddo", keep_train_logits=True),
            Member(job(model, 1, 0.5, "kd"), target_logits=teacher_logits, name="kd"),
            Member(
                job(model, 2, 0.9, "rcd-uniform"),
                target_logits=noise_table("rcd-uniform", 2, N_TRAIN, 10),
                name="rcd",
            ),
        ]
        results = train_ensemble(members, data, m0, device="cuda")
        for m, r in zip(members, results):
            assert all(v.device.type == "cpu" for v in r.state.values())
            want = train_model(
                m.params,
                data,
                m0,
                target_logits=m.target_logits,
                keep_train_logits=m.keep_train_logits,
                device="cuda",
            )
            assert_same(r, want, atol=1e-4, rtol=1e-3)
