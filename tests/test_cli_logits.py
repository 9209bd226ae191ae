"""``kdaudit metrics`` and ``kdaudit compare`` end to end, and every input error path (§7)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import assert_one_line_error, run_cli
from kdaudit.analysis.catalogue import metric_keys, student_metric_keys
from kdaudit.analysis.compare import METRIC_RESULT_KEYS, compare_logits
from kdaudit.analysis.metrics import functional_metrics
from kdaudit.analysis.transfer import TRANSFER_KEYS
from kdaudit.errors import InputError

REPO = Path(__file__).resolve().parents[1]
N, C, K = 600, 10, 8


def _students(rng: np.random.Generator, labels: np.ndarray, noise: np.ndarray, k: int, copy: float) -> list[np.ndarray]:
    pred = (2.5 * np.eye(C)[labels] + noise).argmax(1)
    wrong = np.flatnonzero(pred != labels)
    out = []
    for _ in range(k):
        z = 2.5 * np.eye(C)[labels] + 0.5 * noise + math.sqrt(0.75) * rng.standard_normal((N, C))
        if copy:
            chosen = wrong[rng.random(wrong.size) < copy]
            z[chosen, pred[chosen]] = z[chosen].max(axis=1) + 1.0
        out.append(z.astype(np.float32))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """teacher.npy, labels.npy, siddo/, kd/ (planted: copies teacher errors), null/ (like siddo)."""
    root = tmp_path_factory.mktemp("logits")
    rng = np.random.default_rng(7)
    labels = rng.integers(0, C, size=N)
    noise = rng.standard_normal((N, C))
    np.save(root / "teacher.npy", (2.5 * np.eye(C)[labels] + noise).astype(np.float32))
    np.save(root / "labels.npy", labels)
    for group, copy in (("siddo", 0.0), ("kd", 0.35), ("null", 0.0)):
        (root / group).mkdir()
        for i, z in enumerate(_students(rng, labels, noise, K, copy), start=1):
            np.save(root / group / f"s{i:02d}.npy", z)
    return root


# --- kdaudit metrics --------------------------------------------------------------------------


def test_metrics_json(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "metrics",
        "--teacher",
        str(files / "teacher.npy"),
        "--student",
        str(files / "kd/s01.npy"),
        "--labels",
        str(files / "labels.npy"),
        "--json",
    ]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and err == ""
    obj = json.loads(out)
    assert list(obj) == metric_keys()
    ref = functional_metrics(
        np.load(files / "teacher.npy"), np.load(files / "kd/s01.npy"), np.load(files / "labels.npy")
    )
    for k in metric_keys():
        assert obj[k] == pytest.approx(ref[k], abs=1e-12)
    assert isinstance(obj["n_teacher_wrong"], int)


def test_metrics_table(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "metrics",
        "--teacher",
        str(files / "teacher.npy"),
        "--student",
        str(files / "kd/s01.npy"),
        "--labels",
        str(files / "labels.npy"),
    ]
    code, out, _ = run_cli(args, capsys)
    assert code == 0
    for k in metric_keys():
        assert k in out


def test_metrics_empty_set_is_null_with_one_warning_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = np.random.default_rng(0).normal(size=(50, 4))
    np.save(tmp_path / "t.npy", t)
    np.save(tmp_path / "y.npy", t.argmax(1))  # teacher always right
    code, out, err = run_cli(
        [
            "metrics",
            "--teacher",
            str(tmp_path / "t.npy"),
            "--student",
            str(tmp_path / "t.npy"),
            "--labels",
            str(tmp_path / "y.npy"),
            "--json",
        ],
        capsys,
    )
    assert code == 0
    assert json.loads(out)["agreement_teacher_wrong"] is None
    assert err.count("\n") == 1 and err.startswith("kdaudit: warning:")


# --- kdaudit compare --------------------------------------------------------------------------


def _compare_args(files: Path, *groups: str, extra: tuple[str, ...] = ()) -> list[str]:
    args = [
        "compare",
        "--teacher",
        str(files / "teacher.npy"),
        "--labels",
        str(files / "labels.npy"),
        "--control",
        str(files / "siddo" / "*.npy"),
    ]
    for g in groups:
        name, pattern = g.split("=", 1)
        args += ["--group", f"{name}={files / pattern}"]
    return args + list(extra)


def test_compare_finds_planted_effect_and_not_the_null(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(_compare_args(files, "kd=kd/*.npy", "null=null/*.npy", extra=("--json",)), capsys)
    assert code == 0, err
    obj = json.loads(out)
    assert list(obj) == ["control", "rcd", "statistics", "groups"] and obj["control"] == {"n": K}
    assert list(obj["groups"]) == ["kd", "null"]
    for g in obj["groups"].values():
        assert list(g)[:3] == ["n", "metrics", "transfer"] and g["n"] == K
        assert {"verdicts", "asymmetry"} <= set(g)
        assert list(g["metrics"]) == student_metric_keys()
        assert all(list(m)[: len(METRIC_RESULT_KEYS)] == METRIC_RESULT_KEYS for m in g["metrics"].values())
        assert list(g["transfer"]) == TRANSFER_KEYS
        assert {"knowledge_transfer", "negative_transfer", "asymmetry", "negative_asymmetric_payoff"} <= set(
            g["verdicts"]
        )
        assert {"statistic", "p_value"} <= set(g["asymmetry"])
    kd, null = obj["groups"]["kd"], obj["groups"]["null"]
    assert kd["metrics"]["agreement_teacher_wrong"]["significant"] is True
    assert kd["metrics"]["agreement"]["significant"] is True
    assert kd["transfer"]["delta_neg"] > 0.1 and kd["transfer"]["p_neg"] < 0.05
    assert kd["transfer"]["h_neg"] > kd["transfer"]["h_pos"]
    assert kd["verdicts"] == {
        "knowledge_transfer": "yes",
        "beyond_regularisation": "not testable",
        "negative_transfer": "yes",
        "asymmetry": "yes",
        "negative_asymmetric_payoff": "yes",
    }
    assert kd["transfer"]["negative_asymmetric_payoff"] == "yes"
    assert kd["transfer"]["p_neg"] == kd["metrics"]["agreement_teacher_wrong"]["p_value"]
    assert null["metrics"]["agreement"]["significant"] is False
    assert null["metrics"]["agreement_teacher_wrong"]["significant"] is False
    assert null["verdicts"]["knowledge_transfer"] == "no" and null["transfer"]["negative_asymmetric_payoff"] == "no"
    # the primary family: H1, H3, H4 of both groups (6 tests), Holm; exact p of 8 vs 8
    assert obj["statistics"]["primary_family_size"] == 6
    assert kd["metrics"]["agreement"]["family"] == "primary" and kd["metrics"]["js_divergence"]["family"] == "secondary"
    assert kd["metrics"]["agreement"]["method"] in ("exact", "permutation")
    prim = [
        g["metrics"][k]["p_value"] for g in obj["groups"].values() for k in ("agreement", "agreement_teacher_wrong")
    ]
    prim += [g["asymmetry"]["p_value"] for g in obj["groups"].values()]
    adj = [
        g["metrics"][k]["p_adjusted"] for g in obj["groups"].values() for k in ("agreement", "agreement_teacher_wrong")
    ]
    adj += [g["asymmetry"]["p_adjusted"] for g in obj["groups"].values()]
    from kdaudit.analysis.stats import adjust_pvalues

    np.testing.assert_allclose(adj, adjust_pvalues(prim, "holm"))


def test_compare_rcd_decides_beyond_regularisation_like_an_audit(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare with --rcd gives the verdicts build_audit_tables gives on the same students."""
    from kdaudit.analysis.audit import RUNS_COLUMNS, build_audit_tables
    from kdaudit.analysis.metrics import functional_metrics_many

    code, out, err = run_cli(
        _compare_args(files, "kd=kd/*.npy", extra=("--rcd", f"rcd-null={files}/null/*.npy", "--json")), capsys
    )
    assert code == 0, err
    obj = json.loads(out)
    kd = obj["groups"]["kd"]
    assert obj["rcd"] == {"rcd-null": {"n": K}} and obj["statistics"]["primary_family_size"] == 4
    assert kd["beyond_regularisation"]["hardest_control"] == "rcd-null"
    t, y = np.load(files / "teacher.npy"), np.load(files / "labels.npy")
    rows = []
    for cond, folder, alpha in (("siddo", "siddo", 0.0), ("kd", "kd", 0.9), ("rcd-null", "null", 0.9)):
        zs = np.stack([np.load(p) for p in sorted((files / folder).glob("*.npy"))])
        m = functional_metrics_many(t, zs, y)
        for i in range(len(zs)):
            rows.append(
                {
                    "run_id": f"{cond}{i}",
                    "role": "student",
                    "condition": cond,
                    "alpha": alpha,
                    "temperature": 1.0,
                    "seed": i + 1,
                    "accuracy": m["student_accuracy"][i],
                    "loss": m["student_loss"][i],
                    **{k: m[k][i] for k in RUNS_COLUMNS[8:]},
                }
            )
    (v,) = build_audit_tables(pd.DataFrame(rows)).verdicts
    assert kd["verdicts"] == {k: getattr(v, k) for k in kd["verdicts"]}
    assert kd["asymmetry"]["p_value"] == pytest.approx(v.tests["H4"]["p_value"])
    # a name given twice, a lone file, or a bad method: one line, exit 2
    code, _, err = run_cli(_compare_args(files, "kd=kd/*.npy", extra=("--rcd", f"kd={files}/null/*.npy")), capsys)
    assert_one_line_error(code, err, "given twice")
    code, _, err = run_cli(_compare_args(files, "kd=kd/*.npy", extra=("--rcd", f"r={files}/null/s01.npy")), capsys)
    assert_one_line_error(code, err, "random control", "at least 2")
    code, _, err = run_cli(_compare_args(files, "kd=kd/*.npy", extra=("--method", "fast")), capsys)
    assert_one_line_error(code, err, "--method")


def test_compare_options_and_table(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(_compare_args(files, "kd=kd/*.npy", extra=("--correction", "none", "--json")), capsys)
    assert code == 0
    m = json.loads(out)["groups"]["kd"]["metrics"]["agreement"]
    assert m["p_adjusted"] == m["p_value"]
    code, out, _ = run_cli(_compare_args(files, "kd=kd/*.npy", extra=("--level", "1e-9", "--json")), capsys)
    g = json.loads(out)["groups"]["kd"]
    assert g["metrics"]["agreement"]["significant"] is False
    assert g["verdicts"]["knowledge_transfer"] == "not testable"  # 8 vs 8 cannot reach 1e-9
    code, out, err = run_cli(_compare_args(files, "kd=kd/*.npy"), capsys)
    assert code == 0 and err == ""
    assert "agreement_teacher_wrong" in out and "knowledge transfer: yes" in out
    assert "negative asymmetric payoff" in out and "Primary family: 3 tests" in out


def test_compare_logits_json_safe_and_errors(files: Path) -> None:
    t = np.load(files / "teacher.npy")
    y = np.load(files / "labels.npy")
    ctrl = [np.load(p) for p in sorted((files / "siddo").glob("*.npy"))]
    same = [ctrl[0], ctrl[0]]
    res = compare_logits(t, y, ctrl[:2], {"same": same})
    json.dumps(res, allow_nan=False)
    with pytest.raises(InputError, match="at least 2"):
        compare_logits(t, y, ctrl[:1], {"g": same})
    with pytest.raises(InputError, match="at least 2"):
        compare_logits(t, y, ctrl, {"g": ctrl[:1]})
    with pytest.raises(InputError, match="shape"):
        compare_logits(t, y, ctrl, {"g": [ctrl[0], ctrl[1][:-1]]})
    with pytest.raises(InputError, match="no group"):
        compare_logits(t, y, ctrl, {})


def test_example_files_show_the_planted_effect(capsys: pytest.CaptureFixture[str]) -> None:
    ex = REPO / "examples" / "logits"
    if not (ex / "teacher.npy").exists():
        pytest.skip("examples/logits not generated")
    args = [
        "compare",
        "--teacher",
        str(ex / "teacher.npy"),
        "--labels",
        str(ex / "labels.npy"),
        "--control",
        str(ex / "siddo" / "*.npy"),
        "--group",
        f"kd={ex / 'kd' / '*.npy'}",
        "--json",
    ]
    code, out, _ = run_cli(args, capsys)
    assert code == 0
    kd = json.loads(out)["groups"]["kd"]
    assert kd["n"] == 6 and kd["transfer"]["negative_asymmetric_payoff"] == "yes"


def test_module_entry_point_subprocess(files: Path) -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdaudit.cli",
            "compare",
            "--teacher",
            "teacher.npy",
            "--labels",
            "labels.npy",
            "--control",
            "siddo/*.npy",
            "--group",
            "kd=kd/*.npy",
            "--json",
        ],
        cwd=files,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["groups"]["kd"]["transfer"]["negative_asymmetric_payoff"] == "yes"
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdaudit.cli",
            "metrics",
            "--teacher",
            "missing.npy",
            "--student",
            "kd/s01.npy",
            "--labels",
            "labels.npy",
            "--json",
        ],
        cwd=files,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.stdout == ""
    assert_one_line_error(bad.returncode, bad.stderr, "not found", "missing.npy")


# --- error paths ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad(files: Path) -> Path:
    """Broken input files next to the good ones."""
    d = files / "bad"
    d.mkdir()
    rng = np.random.default_rng(1)
    z = rng.normal(size=(N, C))
    np.save(d / "fewer_rows.npy", z[:-5])
    np.save(d / "fewer_classes.npy", z[:, :-1])
    np.save(d / "labels_short.npy", np.zeros(N - 1, dtype=np.int64))
    np.save(d / "labels_2d.npy", np.zeros((N, C), dtype=np.int64))
    np.save(d / "labels_range.npy", np.full(N, C, dtype=np.int64))
    np.save(d / "labels_frac.npy", np.full(N, 0.5))
    with_nan = z.copy()
    with_nan[3, 2] = np.nan
    np.save(d / "nan.npy", with_nan)
    with_inf = z.copy()
    with_inf[0, 0] = np.inf
    with_inf[1, 0] = -np.inf
    np.save(d / "inf.npy", with_inf)
    np.save(d / "one_d.npy", z[:, 0])
    np.save(d / "three_d.npy", z[None])
    np.save(d / "ints.npy", (z * 10).astype(np.int64))
    np.save(d / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(d / "archive.npz", z=z)
    (d / "text.npy").write_text("not an array\n")
    (d / "empty.npy").write_bytes(b"")
    (d / "single").mkdir()
    np.save(d / "single" / "only.npy", z.astype(np.float32))
    return d


METRICS_ERRORS = [
    ("teacher", "nope.npy", ["not found", "nope.npy"]),
    ("student", "bad/fewer_rows.npy", ["shape"]),
    ("student", "bad/fewer_classes.npy", ["shape"]),
    ("labels", "bad/labels_short.npy", ["599 labels for 600 samples"]),
    ("labels", "bad/labels_2d.npy", ["1-D"]),
    ("labels", "bad/labels_range.npy", ["outside [0, 10)"]),
    ("labels", "bad/labels_frac.npy", ["integers"]),
    ("student", "bad/nan.npy", ["1 non-finite", "NaN", "nan.npy"]),
    ("teacher", "bad/inf.npy", ["2 non-finite", "Inf"]),
    ("student", "bad/one_d.npy", ["2-D", "one_d.npy"]),
    ("student", "bad/three_d.npy", ["2-D"]),
    ("teacher", "bad/ints.npy", ["floating point", "int64"]),
    ("student", "bad/object.npy", ["pickled", "object.npy"]),
    ("student", "bad/archive.npz", [".npz", "archive.npz"]),
    ("student", "bad/text.npy", ["not a .npy", "text.npy"]),
    ("student", "bad/empty.npy", ["not a .npy"]),
    ("student", "bad", ["directory"]),
]


@pytest.mark.parametrize(("which", "path", "needles"), METRICS_ERRORS, ids=[e[1] for e in METRICS_ERRORS])
def test_metrics_errors(
    files: Path, bad: Path, capsys: pytest.CaptureFixture[str], which: str, path: str, needles: list[str]
) -> None:
    paths = {"teacher": files / "teacher.npy", "student": files / "kd/s01.npy", "labels": files / "labels.npy"}
    paths[which] = files / path
    args = ["metrics", "--json"] + [x for k, p in paths.items() for x in (f"--{k}", str(p))]
    code, out, err = run_cli(args, capsys)
    assert out == ""
    assert_one_line_error(code, err, *needles)


def test_metrics_missing_option(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        ["metrics", "--teacher", str(files / "teacher.npy"), "--labels", str(files / "labels.npy")], capsys
    )
    assert_one_line_error(code, err, "--student")


def _compare_error_cases(files: Path, bad: Path) -> dict[str, tuple[list[str], list[str]]]:
    t, y = str(files / "teacher.npy"), str(files / "labels.npy")
    ctrl = str(files / "siddo" / "*.npy")
    kd = f"kd={files / 'kd' / '*.npy'}"
    base = ["compare", "--teacher", t, "--labels", y]
    return {
        "group with one file": (
            base + ["--control", ctrl, "--group", f"g={bad / 'single' / '*.npy'}"],
            ["group 'g' has 1", "at least 2"],
        ),
        "control with one file": (
            base + ["--control", str(bad / "single" / "*.npy"), "--group", kd],
            ["control has 1"],
        ),
        "bad group syntax": (base + ["--control", ctrl, "--group", str(files / "kd" / "*.npy")], ["NAME=GLOB"]),
        "empty group name": (base + ["--control", ctrl, "--group", "=kd/*.npy"], ["NAME=GLOB"]),
        "duplicate group": (base + ["--control", ctrl, "--group", kd, "--group", kd], ["twice"]),
        "glob matches nothing": (
            base + ["--control", str(files / "nowhere" / "*.npy"), "--group", kd],
            ["matches no file"],
        ),
        "no group": (base + ["--control", ctrl], ["--group"]),
        "missing teacher": (
            ["compare", "--teacher", str(files / "t.npy"), "--labels", y, "--control", ctrl, "--group", kd],
            ["not found"],
        ),
        "labels mismatch": (
            ["compare", "--teacher", t, "--labels", str(bad / "labels_short.npy"), "--control", ctrl, "--group", kd],
            ["599 labels"],
        ),
        "labels out of range": (
            ["compare", "--teacher", t, "--labels", str(bad / "labels_range.npy"), "--control", ctrl, "--group", kd],
            ["outside"],
        ),
        "shape mismatch in a group": (base + ["--control", ctrl, "--group", f"g={bad / 'fewer_*.npy'}"], ["shape"]),
        "NaN in a group": (
            base + ["--control", ctrl, "--group", f"g={bad / 'nan.npy'}", "--group", kd],
            ["has 1 logits file"],
        ),
        "NaN logits": (base + ["--control", ctrl, "--group", f"g={bad / '[ni][an][nf].npy'}"], ["non-finite"]),
        "integer teacher": (
            ["compare", "--teacher", str(bad / "ints.npy"), "--labels", y, "--control", ctrl, "--group", kd],
            ["floating point"],
        ),
        "3-D teacher": (
            ["compare", "--teacher", str(bad / "three_d.npy"), "--labels", y, "--control", ctrl, "--group", kd],
            ["2-D"],
        ),
        "1-D student": (base + ["--control", ctrl, "--group", f"g={bad / '*_d.npy'}"], ["2-D"]),
        "bad correction": (base + ["--control", ctrl, "--group", kd, "--correction", "bonferroni"], ["--correction"]),
        "bad level": (base + ["--control", ctrl, "--group", kd, "--level", "2"], ["--level"]),
    }


CASES = [
    "group with one file",
    "control with one file",
    "bad group syntax",
    "empty group name",
    "duplicate group",
    "glob matches nothing",
    "no group",
    "missing teacher",
    "labels mismatch",
    "labels out of range",
    "shape mismatch in a group",
    "NaN in a group",
    "NaN logits",
    "integer teacher",
    "3-D teacher",
    "1-D student",
    "bad correction",
    "bad level",
]


@pytest.mark.parametrize("case", CASES)
def test_compare_errors(files: Path, bad: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    args, needles = _compare_error_cases(files, bad)[case]
    code, out, err = run_cli(args, capsys)
    assert out == ""
    assert_one_line_error(code, err, *needles)
