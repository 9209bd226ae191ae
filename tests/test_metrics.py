"""§3 metrics against independent references, closed forms, invariances and input checks."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax as sp_log_softmax
from scipy.special import rel_entr
from scipy.special import softmax as sp_softmax

from kdaudit.analysis import metrics as M
from kdaudit.analysis.catalogue import metric_keys, student_metric_keys
from kdaudit.errors import InputError

TOL = 1e-9


def _logits(rng: np.random.Generator, n: int, c: int, scale: float = 2.0) -> np.ndarray:
    return rng.normal(scale=scale, size=(n, c))


def _case(c: int, n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + c)
    t = _logits(rng, n, c)
    s = 0.6 * t + _logits(rng, n, c, 1.5)
    # labels: the teacher's prediction on ~60 % of the samples, random elsewhere
    y = np.where(rng.random(n) < 0.6, np.argmax(t, axis=1), rng.integers(0, c, size=n))
    return t, s, y


# --- references, written differently from the implementation ---------------------------------


def ref_accuracy(z: np.ndarray, y: np.ndarray) -> float:
    return sum(int(np.argmax(sp_softmax(row)) == lab) for row, lab in zip(z, y)) / len(y)


def ref_ce(z: np.ndarray, y: np.ndarray) -> float:
    lp = sp_log_softmax(z, axis=1)
    return -float(np.mean(lp[np.arange(len(y)), y]))


def ref_ad(t: np.ndarray, s: np.ndarray) -> float:
    p, q = sp_softmax(t, axis=1), sp_softmax(s, axis=1)
    return float(np.mean([math.sqrt(sum((a - b) ** 2 for a, b in zip(pi, qi))) for pi, qi in zip(p, q)]))


def ref_js_scipy(t: np.ndarray, s: np.ndarray) -> float:
    p, q = sp_softmax(t, axis=1), sp_softmax(s, axis=1)
    return float(np.mean([jensenshannon(pi, qi) ** 2 for pi, qi in zip(p, q)]))


def ref_js_rel_entr(t: np.ndarray, s: np.ndarray) -> float:
    p, q = sp_softmax(t, axis=1), sp_softmax(s, axis=1)
    m = (p + q) / 2
    return float(np.mean(0.5 * rel_entr(p, m).sum(1) + 0.5 * rel_entr(q, m).sum(1)))


def ref_disagreement(t: np.ndarray, s: np.ndarray) -> float:
    p, q = sp_softmax(t, axis=1), sp_softmax(s, axis=1)
    return sum(int(np.argmax(a) != np.argmax(b)) for a, b in zip(p, q)) / len(p)


def ref_cosine(t: np.ndarray, s: np.ndarray) -> float:
    vals = []
    for a, b in zip(t, s):
        dot = na = nb = 0.0
        for x, w in zip(a, b):
            dot += x * w
            na += x * x
            nb += w * w
        vals.append(dot / math.sqrt(na * nb))
    return sum(vals) / len(vals)


def ref_rank(t: np.ndarray, s: np.ndarray) -> float:
    p, q = sp_softmax(t, axis=1), sp_softmax(s, axis=1)
    c = p.shape[1]
    fractions = []
    for pi, qi in zip(p, q):
        discordant = 0
        for a, b in itertools.combinations(range(c), 2):
            if (pi[a] - pi[b]) * (qi[a] - qi[b]) < 0:
                discordant += 1
        fractions.append(discordant / (c * (c - 1) / 2))
    return sum(fractions) / len(fractions)


def ref_conditional(t: np.ndarray, s: np.ndarray, y: np.ndarray) -> tuple[float, float, int, int]:
    pt = [int(np.argmax(r)) for r in sp_softmax(t, axis=1)]
    ps = [int(np.argmax(r)) for r in sp_softmax(s, axis=1)]
    corr = [i for i in range(len(y)) if pt[i] == y[i]]
    wrong = [i for i in range(len(y)) if pt[i] != y[i]]
    ac = sum(pt[i] == ps[i] for i in corr) / len(corr) if corr else math.nan
    aw = sum(pt[i] == ps[i] for i in wrong) / len(wrong) if wrong else math.nan
    return ac, aw, len(corr), len(wrong)


# --- against the references -------------------------------------------------------------------


@pytest.mark.parametrize("c", [2, 10, 100])
def test_single_metrics_match_references(c: int) -> None:
    t, s, y = _case(c, n=40 if c < 100 else 25)
    np.testing.assert_allclose(M.softmax(t), sp_softmax(t, axis=1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(M.softmax(t, temperature=3.0), sp_softmax(t / 3.0, axis=1), atol=1e-12)
    assert M.accuracy(t, y) == pytest.approx(ref_accuracy(t, y), abs=TOL)
    assert M.cross_entropy(s, y) == pytest.approx(ref_ce(s, y), abs=TOL)
    assert M.activation_distance(t, s) == pytest.approx(ref_ad(t, s), abs=TOL)
    assert M.js_divergence(t, s) == pytest.approx(ref_js_scipy(t, s), abs=TOL)
    assert M.js_divergence(t, s) == pytest.approx(ref_js_rel_entr(t, s), abs=TOL)
    assert M.prediction_disagreement(t, s) == pytest.approx(ref_disagreement(t, s), abs=TOL)
    assert M.agreement(t, s) == pytest.approx(1 - ref_disagreement(t, s), abs=TOL)
    assert M.logit_cosine(t, s) == pytest.approx(ref_cosine(t, s), abs=TOL)
    assert M.rank_disagreement(t, s) == pytest.approx(ref_rank(t, s), abs=TOL)
    ac, aw, nc, nw = M.conditional_agreement(t, s, y)
    rac, raw, rnc, rnw = ref_conditional(t, s, y)
    assert (nc, nw) == (rnc, rnw)
    assert ac == pytest.approx(rac, abs=TOL) and aw == pytest.approx(raw, abs=TOL)


@pytest.mark.parametrize("c", [2, 10, 100])
def test_functional_metrics_matches_single_functions(c: int) -> None:
    t, s, y = _case(c, n=60)
    res = M.functional_metrics(t, s, y)
    assert list(res) == metric_keys()
    ac, aw, nc, nw = M.conditional_agreement(t, s, y)
    expected = {
        "teacher_accuracy": M.accuracy(t, y),
        "student_accuracy": M.accuracy(s, y),
        "student_loss": M.cross_entropy(s, y),
        "activation_distance": ref_ad(t, s),
        "js_divergence": ref_js_scipy(t, s),
        "prediction_disagreement": ref_disagreement(t, s),
        "agreement": 1 - ref_disagreement(t, s),
        "logit_cosine": ref_cosine(t, s),
        "rank_disagreement": M.rank_disagreement(t, s),
        "agreement_teacher_correct": ac,
        "agreement_teacher_wrong": aw,
    }
    for k, v in expected.items():
        assert res[k] == pytest.approx(v, abs=TOL), k
    assert res["n_teacher_correct"] == nc and res["n_teacher_wrong"] == nw
    assert isinstance(res["n_teacher_correct"], int) and isinstance(res["n_teacher_wrong"], int)
    assert all(isinstance(res[k], float) for k in metric_keys() if not k.startswith("n_"))


def test_metric_key_lists() -> None:
    assert metric_keys() == [
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
    assert [
        k for k in metric_keys() if k not in ("teacher_accuracy", "n_teacher_correct", "n_teacher_wrong")
    ] == student_metric_keys()


# --- closed forms -----------------------------------------------------------------------------


@pytest.mark.parametrize("c", [2, 10, 100])
def test_identical_models(c: int) -> None:
    t, _, y = _case(c)
    res = M.functional_metrics(t, t.copy(), y)
    assert res["activation_distance"] == pytest.approx(0.0, abs=1e-15)
    assert res["js_divergence"] == pytest.approx(0.0, abs=1e-15)
    assert res["agreement"] == 1.0 and res["prediction_disagreement"] == 0.0
    assert res["rank_disagreement"] == 0.0
    assert res["logit_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert res["student_accuracy"] == res["teacher_accuracy"]


@pytest.mark.parametrize("c", [2, 10])
def test_opposite_one_hot_models(c: int) -> None:
    n = 30
    rng = np.random.default_rng(c)
    a = rng.integers(0, c, size=n)
    b = (a + rng.integers(1, c, size=n)) % c
    t = np.zeros((n, c))
    s = np.zeros((n, c))
    t[np.arange(n), a] = 1000.0
    s[np.arange(n), b] = 1000.0
    assert M.js_divergence(t, s) == pytest.approx(math.log(2), abs=1e-12)
    assert M.activation_distance(t, s) == pytest.approx(math.sqrt(2), abs=1e-12)
    assert M.agreement(t, s) == 0.0
    assert M.logit_cosine(t, s) == pytest.approx(0.0, abs=1e-12)
    assert M.js_divergence(t, -t) == pytest.approx(math.log(2), abs=1e-12)
    assert M.logit_cosine(t, -t) == pytest.approx(-1.0, abs=1e-12)


def test_extreme_logits_stay_finite() -> None:
    t = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]])
    s = np.array([[-1e4, 1e4, 0.0], [0.0, 1e-300, 0.0]])
    res = M.functional_metrics(t, s, np.array([0, 1]))
    assert all(np.isfinite(v) for k, v in res.items() if "teacher_wrong" not in k)
    assert 0 <= res["js_divergence"] <= math.log(2) + 1e-12


def test_argmax_ties_take_lowest_index() -> None:
    t = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    s = np.array([[0.0, 1.0, 1.0], [0.0, 2.0, 2.0], [0.0, 5.0, 5.0]])
    y = np.array([0, 1, 0])
    assert M.accuracy(t, y) == 1.0  # predictions 0, 1, 0
    assert M.accuracy(s, y) == pytest.approx(1 / 3)  # predictions 1, 1, 1
    assert M.prediction_disagreement(t, s) == pytest.approx(2 / 3)
    with pytest.warns(M.EmptySubsetWarning):
        ac, aw, nc, nw = M.conditional_agreement(t, s, y)
    assert (nc, nw) == (3, 0) and ac == pytest.approx(1 / 3)


def test_rank_ties_are_not_discordant() -> None:
    t = np.array([[1.0, 1.0, 0.0]])  # classes 0 and 1 tied for the teacher
    s = np.array([[0.0, 2.0, 1.0]])
    # pairs: (0,1) tied in p -> no; (0,2) p:+ q:- -> yes; (1,2) p:+ q:+ -> no
    assert M.rank_disagreement(t, s) == pytest.approx(1 / 3, abs=1e-15)
    # reversed: (0,1) tied in p, (1,2) tied in q -> only (0,2) is discordant
    assert M.rank_disagreement(t, t[:, ::-1].copy()) == pytest.approx(1 / 3, abs=1e-15)
    u = np.array([[3.0, 2.0, 1.0, 0.0]])
    assert M.rank_disagreement(u, u[:, ::-1].copy()) == 1.0


# --- invariances ------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [2, 10, 100])
def test_sample_permutation_invariance(c: int) -> None:
    t, s, y = _case(c, n=50)
    perm = np.random.default_rng(1).permutation(len(y))
    a = M.functional_metrics(t, s, y)
    b = M.functional_metrics(t[perm], s[perm], y[perm])
    for k in metric_keys():
        assert a[k] == pytest.approx(b[k], abs=1e-12), k


@pytest.mark.parametrize("c", [2, 10, 100])
def test_row_shift_invariance(c: int) -> None:
    t, s, y = _case(c, n=50)
    rng = np.random.default_rng(2)
    a = M.functional_metrics(t, s, y)
    b = M.functional_metrics(t + rng.normal(scale=5, size=(50, 1)), s + rng.normal(scale=5, size=(50, 1)), y)
    for k in metric_keys():
        if k == "logit_cosine":  # depends on the raw logits, not on the softmax
            continue
        assert a[k] == pytest.approx(b[k], abs=1e-10), k


# --- many runs and streaming ------------------------------------------------------------------


@pytest.mark.parametrize("c", [2, 10, 100])
def test_many_equals_loop(c: int) -> None:
    rng = np.random.default_rng(c)
    n, r = 300, 7
    t = _logits(rng, n, c)
    students = 0.5 * t + _logits(rng, r * n, c).reshape(r, n, c)
    y = rng.integers(0, c, size=n)
    many = M.functional_metrics_many(t, students, y)
    assert list(many) == metric_keys()
    for i in range(r):
        one = M.functional_metrics(t, students[i], y)
        for k in metric_keys():
            assert many[k].shape == (r,)
            assert many[k][i] == pytest.approx(one[k], abs=1e-12), k
    assert many["n_teacher_correct"].dtype == np.int64
    listed = M.functional_metrics_many(t, [students[i] for i in range(r)], y)
    np.testing.assert_array_equal(listed["js_divergence"], many["js_divergence"])


def test_many_spans_several_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    t, s, y = _case(10, n=203)
    ref = M.functional_metrics(t, s, y)
    monkeypatch.setattr(M, "_BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(M, "_MIN_PAIR_ELEMENTS", 1)
    blocked = M.functional_metrics_many(t, s[None], y)
    for k in metric_keys():
        assert blocked[k][0] == pytest.approx(ref[k], abs=1e-12), k
    assert M.rank_disagreement(t, s) == pytest.approx(ref["rank_disagreement"], abs=1e-12)


@pytest.mark.parametrize("c", [2, 10, 100])
def test_accumulator_equals_one_shot(c: int) -> None:
    t, s, y = _case(c, n=157)
    acc = M.MetricAccumulator()
    bounds = [0, 1, 8, 58, 100, 157]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        acc.update(t[lo:hi], s[lo:hi], y[lo:hi])
    assert acc.n_samples == 157
    got, ref = acc.compute(), M.functional_metrics(t, s, y)
    assert list(got) == metric_keys()
    for k in metric_keys():
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k
    assert type(got["n_teacher_wrong"]) is int


def test_accumulator_errors() -> None:
    acc = M.MetricAccumulator()
    with pytest.raises(InputError):
        acc.compute()
    t, s, y = _case(10, n=20)
    acc.update(t, s, y)
    t5, s5, y5 = _case(5, n=20)
    with pytest.raises(InputError, match="classes"):
        acc.update(t5, s5, y5)


# --- empty conditional sets -------------------------------------------------------------------


def test_empty_teacher_wrong_set_gives_nan_and_warning() -> None:
    t, s, _ = _case(10)
    y = np.argmax(t, axis=1)  # teacher always right
    with pytest.warns(M.EmptySubsetWarning, match="wrong"):
        res = M.functional_metrics(t, s, y)
    assert math.isnan(res["agreement_teacher_wrong"]) and res["n_teacher_wrong"] == 0
    assert res["n_teacher_correct"] == len(y)
    with pytest.warns(M.EmptySubsetWarning):
        ac, aw, nc, nw = M.conditional_agreement(t, s, y)
    assert math.isnan(aw) and nw == 0 and not math.isnan(ac)


def test_empty_teacher_correct_set_gives_nan_and_warning() -> None:
    t, s, _ = _case(10)
    y = (np.argmax(t, axis=1) + 1) % 10  # teacher always wrong
    with pytest.warns(M.EmptySubsetWarning, match="correct"):
        many = M.functional_metrics_many(t, np.stack([s, s]), y)
    assert np.isnan(many["agreement_teacher_correct"]).all()
    assert issubclass(M.EmptySubsetWarning, RuntimeWarning)


# --- input checks -----------------------------------------------------------------------------

GOOD = np.zeros((4, 3))
LABELS = np.array([0, 1, 2, 0])


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        ([[0.0, 1.0]], "numpy array"),
        (np.zeros((4, 3), dtype=np.int64), "floating point"),
        (np.zeros((4, 3), dtype=bool), "floating point"),
        (np.zeros(4), "2-D"),
        (np.zeros((2, 4, 3)), "2-D"),
        (np.zeros((0, 3)), "no samples"),
        (np.zeros((4, 1)), "at least 2 classes"),
        (np.array([[0.0, np.nan, 1.0], [np.inf, 0.0, np.nan]]), "3 non-finite"),
    ],
)
def test_validate_logits_errors(arr: object, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        M.validate_logits(arr, "T.npy")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("T.npy")


def test_validate_logits_converts_to_float64() -> None:
    out = M.validate_logits(np.ones((2, 3), dtype=np.float32))
    assert out.dtype == np.float64


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ([0, 1, 2, 0], "numpy array"),
        (np.zeros((4, 1), dtype=int), "1-D"),
        (np.array([0, 1, 2]), "3 labels for 4 samples"),
        (np.array([0, 1, 3, 0]), "outside"),
        (np.array([0, -1, 2, 0]), "outside"),
        (np.array([0.0, 1.5, 2.0, 0.0]), "not whole numbers"),
        (np.array([0.0, np.nan, 2.0, 0.0]), "not whole numbers"),
        (np.array([True, False, True, True]), "integers"),
        (np.array(["a", "b", "c", "d"]), "integers"),
    ],
)
def test_validate_labels_errors(labels: object, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        M.validate_labels(labels, 4, 3)
    assert "\n" not in str(info.value)


def test_float_labels_that_are_whole_numbers_are_accepted() -> None:
    out = M.validate_labels(np.array([0.0, 1.0, 2.0, 0.0]), 4, 3)
    assert out.dtype == np.int64 and out.tolist() == [0, 1, 2, 0]


def test_metric_functions_validate_inputs() -> None:
    with pytest.raises(InputError, match="shape"):
        M.js_divergence(GOOD, np.zeros((5, 3)))
    with pytest.raises(InputError, match="floating point"):
        M.agreement(GOOD, GOOD.astype(int))
    with pytest.raises(InputError, match="outside"):
        M.functional_metrics(GOOD, GOOD, np.array([0, 1, 2, 3]))
    with pytest.raises(InputError, match="shape"):
        M.functional_metrics_many(GOOD, np.zeros((2, 4, 4)), LABELS)
    with pytest.raises(InputError, match="R runs"):
        M.functional_metrics_many(GOOD, GOOD, LABELS)
    with pytest.raises(InputError, match="non-finite"):
        M.functional_metrics_many(GOOD, np.full((2, 4, 3), np.nan), LABELS)
    with pytest.raises(InputError, match="temperature"):
        M.softmax(GOOD, temperature=0.0)


def test_large_class_count_runs_in_bounded_memory() -> None:
    rng = np.random.default_rng(5)
    t = _logits(rng, 2000, 100)
    s = 0.5 * t + _logits(rng, 2000, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        val = M.rank_disagreement(t, s)
    sub = slice(0, 10)
    assert 0.0 < val < 0.5
    assert M.rank_disagreement(t[sub], s[sub]) == pytest.approx(ref_rank(t[sub], s[sub]), abs=TOL)
