"""The report: report.md, a self-contained report.html and the figures."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from browser_check import CHROMIUM, check_in_browser, chromium_available, run_chromium
from helpers import tiny_grid
from kdaudit.analysis.audit import RUNS_COLUMNS, TESTS_COLUMNS, AuditTables, Verdict
from kdaudit.report import figures as kfig
from kdaudit.report.render import fmt_p, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WEIRD = "kd<b>&\"$x$'</b>"  # a condition name full of HTML (and mathtext) specials
SUMMARY_METRICS = [
    "accuracy",
    "agreement",
    "js_divergence",
    "activation_distance",
    "agreement_teacher_correct",
    "agreement_teacher_wrong",
]
TESTED_METRICS = ["agreement", "js_divergence", "agreement_teacher_correct", "agreement_teacher_wrong"]


def _sem(x: pd.Series) -> float:
    x = x.dropna()
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def synthetic_tables(seed: int = 0) -> AuditTables:
    """A small audit: siddo, kd / rcd-uniform at three α, rcd-gaussian with one seed at α=0.9,
    and a condition with an HTML-hostile name; some NaN values."""
    rng = np.random.default_rng(seed)
    groups: list[tuple[str, float, int]] = [("siddo", 0.0, 3)]
    for a in (0.1, 0.5, 0.9):
        groups += [("kd", a, 3), ("rcd-uniform", a, 3)]
    groups += [("rcd-gaussian", 0.9, 1), (WEIRD, 0.5, 3)]

    rows = [
        {c: np.nan for c in RUNS_COLUMNS}
        | {
            "run_id": "teacher",
            "role": "teacher",
            "condition": "teacher",
            "alpha": np.nan,
            "temperature": 1.0,
            "seed": 0,
            "accuracy": 0.93,
            "loss": 0.25,
            "agreement": 1.0,
        }
    ]
    for cond, alpha, n in groups:
        boost = 0.0 if cond == "siddo" else alpha * (0.05 if cond != "rcd-uniform" else 0.01)
        for s in range(1, n + 1):
            atc = min(1.0, 0.95 + boost / 2 + rng.normal(0, 0.004))
            atw = min(1.0, 0.35 + boost * 3 + rng.normal(0, 0.02))
            agr = 0.93 * atc + 0.07 * atw
            rows.append(
                {
                    "run_id": f"{cond}-a{alpha}-s{s}",
                    "role": "student",
                    "condition": cond,
                    "alpha": alpha,
                    "temperature": 1.0,
                    "seed": s,
                    "accuracy": 0.92 + rng.normal(0, 0.004),
                    "loss": 0.3 + rng.normal(0, 0.01),
                    "activation_distance": 0.12 - boost + rng.normal(0, 0.005),
                    "js_divergence": 0.02 - boost / 5 + abs(rng.normal(0, 0.001)),
                    "prediction_disagreement": 1 - agr,
                    "agreement": agr,
                    "logit_cosine": 0.9 + rng.normal(0, 0.01),
                    "rank_disagreement": 0.1 + rng.normal(0, 0.01),
                    "agreement_teacher_correct": atc,
                    "agreement_teacher_wrong": atw,
                    "n_teacher_correct": 930,
                    "n_teacher_wrong": 70,
                }
            )
    runs = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    # a missing value in one seed
    runs.loc[runs["run_id"] == "kd-a0.5-s2", "agreement_teacher_wrong"] = np.nan

    students = runs[runs["role"] == "student"]
    summary_rows = []
    for (cond, alpha), g in students.groupby(["condition", "alpha"], sort=False):
        row = {"condition": cond, "alpha": alpha, "n": len(g)}
        for m in SUMMARY_METRICS:
            row[f"{m}_mean"] = g[m].mean()
            row[f"{m}_sem"] = _sem(g[m])
        summary_rows.append(row)
    summary = pd.DataFrame(summary_rows)

    control = students[students["condition"] == "siddo"]
    test_rows, transfer_rows, verdicts = [], [], []
    for (cond, alpha), g in students.groupby(["condition", "alpha"], sort=False):
        if cond == "siddo":
            continue
        comparisons = [("vs_siddo", control)]
        if cond in ("kd", WEIRD):
            for rcd in ("rcd-uniform", "rcd-gaussian"):
                ref = students[(students["condition"] == rcd) & np.isclose(students["alpha"], alpha)]
                if len(ref):
                    comparisons.append((f"vs_{rcd}", ref))
        for comp, ref in comparisons:
            for m in TESTED_METRICS:
                p = float(rng.uniform(1e-6, 0.3)) if len(g) > 1 else np.nan
                test_rows.append(
                    {
                        "comparison": comp,
                        "condition": cond,
                        "alpha": alpha,
                        "metric": m,
                        "n_a": len(g),
                        "n_b": len(ref),
                        "mean_a": g[m].mean(),
                        "sem_a": _sem(g[m]),
                        "mean_b": ref[m].mean(),
                        "sem_b": _sem(ref[m]),
                        "statistic": float(rng.integers(0, 10)),
                        "p_value": p,
                        "p_adjusted": np.nan if comp != "vs_siddo" else min(1.0, p * 3),
                        "effect_size": float(rng.uniform(-1, 1)),
                        "significant": bool(p < 0.05),
                    }
                )
        d_pos = g["agreement_teacher_correct"].mean() - control["agreement_teacher_correct"].mean()
        d_neg = g["agreement_teacher_wrong"].mean() - control["agreement_teacher_wrong"].mean()
        h_pos = d_pos / (1 - control["agreement_teacher_correct"].mean())
        h_neg = d_neg / (1 - control["agreement_teacher_wrong"].mean())
        payoff = "not testable" if len(g) < 2 else ("yes" if h_neg > h_pos else "no")
        sentence = (
            f"{cond} at α = {alpha:g}: the students copy the teacher's errors "
            f"(Δ− = {d_neg:+.3f}) more than its correct answers (Δ+ = {d_pos:+.3f})."
            if payoff == "yes"
            else f"{cond} at α = {alpha:g}: no negative asymmetric payoff."
        )
        transfer_rows.append(
            {
                "condition": cond,
                "alpha": alpha,
                "delta_pos": d_pos,
                "delta_neg": d_neg,
                "h_pos": h_pos,
                "h_neg": h_neg,
                "p_pos": 0.0001,
                "p_neg": 0.0002,
                "p_neg_adjusted": 0.0003,
                "p_asymmetry_adjusted": 2.1e-05 if len(g) > 1 else np.nan,
                "negative_asymmetric_payoff": payoff,
                "verdict": sentence,
            }
        )
        if cond in ("kd", WEIRD):
            verdicts.append(
                Verdict(
                    condition=cond,
                    alpha=alpha,
                    knowledge_transfer="yes" if alpha > 0.2 else "no",
                    beyond_regularisation="yes" if alpha == 0.9 else "not testable",
                    negative_asymmetric_payoff=payoff,
                    fidelity="no",
                    sentences=[
                        f"At α = {alpha:g}, {cond} students agree with the teacher more than the "
                        f"SIDDO control (p < 0.05) & <differ> from RCD.",
                        sentence,
                    ],
                )
            )
    tests = pd.DataFrame(test_rows, columns=TESTS_COLUMNS)
    transfer = pd.DataFrame(transfer_rows)
    return AuditTables(runs=runs, tests=tests, transfer=transfer, summary=summary, verdicts=verdicts)


META = {
    "title": "Self-distillation audit <digits>",
    "setup": "digits-mlp",
    "dataset": "sklearn digits",
    "model": "MLP 64-128-10",
    "n_train": 1437,
    "n_test": 360,
    "teacher_accuracy": 0.93,
    "n_teacher_wrong": 25,
    "n_models": 21,
    "wall_time_s": 312.4,
    "precision": "fp32",
    "kdaudit_version": "0.1.0",
    "torch_version": "2.3.0",
    "python_version": "3.11.7",
    "numpy_version": "2.0.0",
    "created": "2025-01-01T12:00:00",
    "command": "kdaudit run digits-mlp --set protocol.seeds=3 --out 'my audit'",
    "spec_sha256": "0123456789abcdef" * 4,
}
SPEC = {
    "setup": "digits-mlp",
    "alphas": [0.1, 0.5, 0.9],
    "n_seeds": 3,
    "data": {"source": "https://example.org/not-a-link"},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditTables, dict[str, Path]]:
    tables = synthetic_tables()
    out = tmp_path_factory.mktemp("audit")
    return tables, write_report(out, tables, SPEC, META)


def _img_srcs(doc: str) -> list[str]:
    return re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', doc)


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


# --------------------------------------------------------------------------------------------
def test_files_exist(report):
    _, paths = report
    assert {"report.md", "report.html"} <= set(paths)
    figs = [k for k in paths if k.startswith("figures/")]
    expected = {f"figures/dist_{m}.png" for m in kfig.DIST_METRICS}
    expected |= {"figures/transfer_deltas.png", "figures/accuracy_vs_agreement.png"}
    assert set(figs) == expected | {k[:-4] + ".svg" for k in expected}
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    assert paths["report.html"].parent == paths["figures/transfer_deltas.png"].parent.parent


def test_verdicts_first_and_escaped(report):
    tables, paths = report
    doc = paths["report.html"].read_text(encoding="utf-8")
    first_table = doc.index("<table")
    assert doc.index('id="verdicts"') < first_table
    for v in tables.verdicts:
        for s in v.sentences:
            esc = html.escape(s, quote=True)
            assert esc in doc
            assert doc.index(esc) < first_table
    assert "&lt;differ&gt;" in doc and "<differ>" not in doc


def test_html_self_contained(report):
    tables, paths = report
    doc = paths["report.html"].read_text(encoding="utf-8")
    srcs = _img_srcs(doc)
    assert len(srcs) == len([k for k in paths if k.startswith("figures/") and k.endswith(".png")])
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        w, h = _png_size(data)
        assert w > 0 and h > 0
    imgs = re.findall(r"<img\b[^>]*>", doc)
    ids = [re.search(r'\bid="([^"]+)"', i).group(1) for i in imgs]
    assert len(set(ids)) == len(ids)
    assert all(re.search(r'\balt="[^"]+"', i) for i in imgs)
    for attr in re.findall(r'\b(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', doc, flags=re.I):
        assert not attr.lower().startswith(("http://", "https://", "//"))
    assert "<script" not in doc.lower()
    assert "<link" not in doc.lower()
    assert "url(" not in doc.lower()


def test_special_characters_escaped(report):
    tables, paths = report
    doc = paths["report.html"].read_text(encoding="utf-8")
    assert html.escape(WEIRD, quote=True) in doc
    assert WEIRD not in doc
    assert "<b>" not in doc and "<digits>" not in doc
    assert "Self-distillation audit &lt;digits&gt;" in doc
    md = paths["report.md"].read_text(encoding="utf-8")
    assert "<b>" not in md and "<digits>" not in md


def test_markdown_content(report):
    tables, paths = report
    md = paths["report.md"].read_text(encoding="utf-8")
    order = ["Verdicts", "Figures", "Summary", "Transfer", "Fidelity to the teacher", "Significance tests"]
    order += ["Settings", "Reproduce and cite", "How to read this report"]
    at = [md.index(f"\n## {title}\n") for title in order]
    assert at == sorted(at)
    assert md.index("[Verdicts](#verdicts)") < at[0] and "[Reproduce and cite](#reproduce-and-cite)" in md
    for name in paths:
        if name.startswith("figures/"):
            assert f"]({name})" in md  # the PNG as an image, the SVG as a link
    assert "data:image" not in md
    assert "0.0003" in md and "2.1e-05" in md
    assert "sklearn digits" in md and "5 min 12 s" in md


def test_numbers_and_meta_in_html(report):
    _, paths = report
    doc = paths["report.html"].read_text(encoding="utf-8")
    assert "0.0003" in doc and "2.1e-05" in doc
    for label in ("Teacher test accuracy", "Wall time", "fp32", "PyTorch version", "Created"):
        assert label in doc
    for section in ("summary", "transfer", "tests", "figures", "how-to-read"):
        assert f'id="{section}"' in doc
    assert 'class="hl"' in doc  # highlighted significant rows
    assert "nan" not in re.sub(r"<[^>]+>", " ", doc).lower().split()


def test_fmt_p():
    assert fmt_p(0.0003) == "0.0003"
    assert fmt_p(2.1e-05) == "2.1e-05"
    assert fmt_p(0.0421) == "0.042"
    assert fmt_p(float("nan")) == "—"
    assert fmt_p(None) == "—"


def test_missing_meta_and_sparse_tables(tmp_path):
    """No meta, no spec, only a teacher and a single-seed kd group with NaN: nothing crashes."""
    runs = pd.DataFrame(
        [
            {c: np.nan for c in RUNS_COLUMNS} | {"run_id": "t", "role": "teacher", "condition": "teacher"},
            {c: np.nan for c in RUNS_COLUMNS}
            | {"run_id": "k", "role": "student", "condition": "kd", "alpha": 0.5, "seed": 1, "agreement": 0.9},
        ],
        columns=RUNS_COLUMNS,
    )
    tables = AuditTables(
        runs=runs,
        tests=pd.DataFrame(columns=TESTS_COLUMNS),
        transfer=pd.DataFrame(),
        summary=pd.DataFrame(),
        verdicts=[],
    )
    paths = write_report(tmp_path, tables, {}, {})
    doc = paths["report.html"].read_text(encoding="utf-8")
    assert 'id="verdicts"' in doc and "No verdicts" in doc
    assert paths["report.md"].is_file()
    assert "figures/dist_agreement.png" in paths


def test_figures_robust(tmp_path):
    tables = synthetic_tables(seed=1)
    runs = tables.runs.copy()
    runs.loc[runs["condition"] == "kd", "accuracy"] = np.nan
    written = kfig.plot_metric_distributions(runs, tmp_path)
    assert [p.name for p in written] == [f"dist_{m}.png" for m in kfig.DIST_METRICS]
    # no SIDDO in runs: Δ from the transfer table, no error bars
    no_control = runs[runs["condition"] != "siddo"]
    assert kfig.plot_transfer(no_control, tmp_path, tables.transfer) is not None
    assert kfig.plot_transfer(no_control.iloc[:1], tmp_path / "x", None) is None
    deltas = kfig.transfer_deltas(runs)
    single = deltas[deltas["condition"] == "rcd-gaussian"].iloc[0]
    assert math.isnan(single["sem_pos"]) and math.isfinite(single["delta_pos"])
    kd = deltas[(deltas["condition"] == "kd") & np.isclose(deltas["alpha"], 0.1)].iloc[0]
    ctrl = runs[runs["condition"] == "siddo"]["agreement_teacher_correct"]
    x = runs[(runs["condition"] == "kd") & np.isclose(runs["alpha"], 0.1)]["agreement_teacher_correct"]
    assert kd["sem_pos"] == pytest.approx(math.sqrt(_sem(x) ** 2 + _sem(ctrl) ** 2))
    assert kfig.plot_accuracy_vs_agreement(runs.iloc[:1], tmp_path) is None


# --------------------------------------------------------------------------------------------
@pytest.mark.browser
def test_report_in_browser(report, tmp_path):
    if not chromium_available():
        pytest.skip(f"{CHROMIUM} is not installed")
    _, paths = report
    check = check_in_browser(paths["report.html"], tmp_path)
    assert check["verdicts_visible"] is True
    assert check["headline_first"] is True  # the first text after the title is the headline
    n_figs = len([k for k in paths if k.startswith("figures/") and k.endswith(".png")])
    assert len(check["images"]) == n_figs > 0
    for img_id, complete, natural_width in check["images"]:
        assert img_id.startswith("fig-")
        assert complete is True and natural_width > 0, f"image {img_id} did not load"

    shot = tmp_path / "shot.png"
    res = run_chromium([f"--screenshot={shot}", "--window-size=1200,2400", paths["report.html"].as_uri()], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        colours = im.convert("RGB").getcolors(maxcolors=100_000)
        assert colours is None or len(colours) > 50  # not a blank page


# -------------------------------------------------------------------------------- What is copied
def _tiny(*more: str) -> list[str]:
    """The tiny grid of the end-to-end tests without its MLP size (other setups size their own model)."""
    return [o for o in tiny_grid(1, *more) if not o.startswith("model.kwargs.hidden")]


def _audit_in_browser(setup: str, overrides: list[str], tmp_path: Path) -> dict:
    """Run a tiny audit of ``setup`` and load its report in Chromium; the probe's result."""
    from kdaudit.audit import run_audit
    from kdaudit.config.loader import resolve_spec

    outcome = run_audit(resolve_spec(setup, overrides), tmp_path / setup)
    check = check_in_browser(outcome.out_dir / "report.html", tmp_path)
    for img_id, complete, natural_width in check["images"]:
        assert complete is True and natural_width > 0, f"image {img_id} did not load"
    assert check["copied"] is not None and check["copied"]["heading"] == "What is copied"
    assert outcome.meta["n_teacher_wrong"] > 0
    return check


@pytest.mark.browser
def test_copied_section_in_browser(tmp_path):
    if not chromium_available():
        pytest.skip(f"{CHROMIUM} is not installed")
    copied = _audit_in_browser("digits-mlp", tiny_grid(1), tmp_path)["copied"]
    ids = [img_id for img_id, _, _ in copied["images"]]
    assert "fig-copied_kd_0-9" in ids  # the heat map of the largest α, shown open
    assert copied["table_rows"] > 0 and copied["examples"] > 0
    assert copied["example_images"] >= 1 and any(i.startswith("ex-kd-") for i in ids)
    for img_id, complete, natural_width in copied["images"]:
        assert complete is True and natural_width > 0, f"image {img_id} did not load"


@pytest.mark.slow
@pytest.mark.browser
def test_default_audit_report_in_browser(tmp_path):
    """The default setup (Fashion-MNIST, MLP) on a small subset: the headline is the first text
    after the title, "What is copied" has its heat map, ranked pairs and image examples, no image
    is broken and the tests tables are collapsed."""
    from kdaudit.config.schema import DEFAULT_SETUP
    from kdaudit.data.fashion_mnist import DEBIAN_DIR

    if not chromium_available():
        pytest.skip(f"{CHROMIUM} is not installed")
    if not DEBIAN_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST is not installed in {DEBIAN_DIR} (apt-get install dataset-fashion-mnist)")
    small = ["data.train_subset=2000", "data.test_subset=1000", "protocol.seeds=2", "train.epochs=2"]
    check = _audit_in_browser(DEFAULT_SETUP, small, tmp_path)
    assert check["headline_first"] is True
    assert check["tests_collapsed"] and all(check["tests_collapsed"])
    copied = check["copied"]
    ids = [img_id for img_id, _, _ in copied["images"]]
    assert "fig-copied_kd_0-9" in ids and copied["table_rows"] > 0
    assert copied["example_images"] >= 1


def _word_lists_installed() -> bool:
    from kdaudit.data.text import DICT_DIR, WORD_LISTS

    return all((DICT_DIR / fname).exists() for fname, _ in WORD_LISTS.values())


def _audio_tools_installed() -> bool:
    import shutil

    return all(shutil.which(t) for t in ("espeak-ng", "flite", "sox"))


_SMALL = ("protocol.alphas=[0.9]", "protocol.conditions=[siddo,kd]")


@pytest.mark.slow
@pytest.mark.browser
def test_copied_examples_of_an_audio_audit_in_browser(tmp_path):
    if not chromium_available():
        pytest.skip(f"{CHROMIUM} is not installed")
    if not _audio_tools_installed():
        pytest.skip("needs espeak-ng, flite and sox")
    audio = _tiny(
        *_SMALL,
        "model.kwargs.width=8",
        "data.options.n_speakers=4",
        "data.options.takes=1",
        f"data.data_dir={tmp_path / 'data'}",
    )
    copied = _audit_in_browser("spoken-digits-m5", audio, tmp_path)["copied"]
    assert copied["example_images"] >= 1 and copied["examples"] == copied["example_images"]


@pytest.mark.slow
@pytest.mark.browser
def test_copied_examples_of_a_text_audit_in_browser(tmp_path):
    if not chromium_available():
        pytest.skip(f"{CHROMIUM} is not installed")
    if not _word_lists_installed():
        pytest.skip("Debian word lists not installed")
    text = _tiny(*_SMALL, "model.kwargs.embed=8", "model.kwargs.hidden=16", "data.options.per_class=60")
    copied = _audit_in_browser("word-language-lstm", text, tmp_path)["copied"]
    assert copied["example_texts"] and all(t.strip() for t in copied["example_texts"])
    assert copied["example_images"] == 0
