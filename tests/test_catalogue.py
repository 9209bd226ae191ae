"""The metric catalogue: every list of metric names derived from it, against literal references."""

from __future__ import annotations

import pytest

from kdaudit.analysis import catalogue as cat


def test_runs_columns() -> None:
    assert cat.runs_columns() == [
        "run_id",
        "role",
        "condition",
        "alpha",
        "temperature",
        "seed",
        "accuracy",
        "loss",
        "activation_distance",
        "js_divergence",
        "prediction_disagreement",
        "agreement",
        "logit_cosine",
        "rank_disagreement",
        "agreement_teacher_correct",
        "agreement_teacher_wrong",
        "n_teacher_correct",
        "n_teacher_wrong",
    ]
    assert [m.key for m in cat.runs_metrics()][:2] == ["student_accuracy", "student_loss"]


def test_metric_keys() -> None:
    assert cat.metric_keys() == [
        "teacher_accuracy",
        "student_accuracy",
        "student_loss",
        "activation_distance",
        "js_divergence",
        "prediction_disagreement",
        "agreement",
        "logit_cosine",
        "rank_disagreement",
        "agreement_teacher_correct",
        "agreement_teacher_wrong",
        "n_teacher_correct",
        "n_teacher_wrong",
    ]
    teacher_only = ("teacher_accuracy", "n_teacher_correct", "n_teacher_wrong")
    assert cat.student_metric_keys() == [k for k in cat.metric_keys() if k not in teacher_only]


def test_tested_summary_and_figure_metrics() -> None:
    assert cat.tested_metrics() == [
        "accuracy",
        "loss",
        "activation_distance",
        "js_divergence",
        "prediction_disagreement",
        "agreement",
        "logit_cosine",
        "rank_disagreement",
        "agreement_teacher_correct",
        "agreement_teacher_wrong",
    ]
    assert cat.summary_metrics() == [
        "accuracy",
        "agreement",
        "js_divergence",
        "activation_distance",
        "agreement_teacher_correct",
        "agreement_teacher_wrong",
    ]
    assert cat.figure_metrics() == [
        "agreement",
        "js_divergence",
        "activation_distance",
        "accuracy",
        "agreement_teacher_correct",
        "agreement_teacher_wrong",
    ]


def test_words() -> None:
    assert [cat.heading(m) for m in cat.summary_metrics()] == [
        "Accuracy",
        "Agreement",
        "JS divergence",
        "Activation distance",
        "Agreement (teacher right)",
        "Agreement (teacher wrong)",
    ]
    assert [(cat.metric(m).terminal, cat.metric(m).scale, cat.metric(m).digits) for m in cat.summary_metrics()] == [
        ("accuracy %", 100.0, 1),
        ("agreement %", 100.0, 1),
        ("JS ×10³ nats", 1e3, 2),
        ("AD ×10²", 100.0, 2),
        ("agree | teacher right %", 100.0, 1),
        ("agree | teacher wrong %", 100.0, 1),
    ]
    assert cat.label("activation_distance") == "Activation distance to teacher (L2)"
    assert cat.label("loss") == "Test loss (CE)"
    assert cat.short("agreement_teacher_wrong") == "agreement (teacher wrong)"
    assert cat.short("js_divergence") == "JS divergence"
    for name in ("asymmetry", "backdoor_asr"):
        assert cat.label(name) == cat.short(name) == cat.heading(name) == name


def test_lookup_and_roles() -> None:
    assert cat.metric("accuracy") is cat.metric("student_accuracy")
    assert cat.metric("accuracy").role == "student" and cat.metric("agreement").role == "comparison"
    assert not cat.metric("n_teacher_wrong").student and cat.metric("n_teacher_wrong").integer
    assert cat.metric("js_divergence").direction == "lower" and cat.metric("agreement").direction == "higher"
    with pytest.raises(KeyError):
        cat.metric("nope")
    names = [m.name for m in cat.METRICS]
    keys = [m.key for m in cat.METRICS]
    assert len(set(names)) == len(names) and len(set(keys)) == len(keys)
    for order in ("summary", "figure"):
        ranks = sorted(getattr(m, order) for m in cat.METRICS if getattr(m, order) is not None)
        assert ranks == list(range(len(ranks)))
