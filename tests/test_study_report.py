"""The study report: its CSV and JSON tables, study.md (the copyable block, one row per setup and α,
the intervals in points), the self-contained study.html and the forest plots, on a synthetic study."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kdaudit.analysis.study import POOLED_COLUMNS, QUANTITIES, STUDY_COLUMNS, StudyTables
from kdaudit.report.study_figures import forest_lines, write_forest_plots
from kdaudit.report.study_report import MARK_BEGIN, MARK_END, ci_text, render_study_markdown, write_study_report

PNG = b"\x89PNG\r\n\x1a\n"
ODD = "agnews <b>&</b> bilstm"
ODD_DIR = "text/agnews <b>&</b>"
SETUPS = [  # setup, modality, dataset, architecture, dir
    ("mnist-mlp", "image", "mnist", "mlp", "image/mnist-mlp"),
    ("cifar10-resnet18", "image", "cifar10", "resnet18", "cifar10-resnet18"),
    (ODD, "text", "ag_news", "bilstm", ODD_DIR),
]
ALPHAS = (0.5, 0.9)
META = {
    "title": "Study <core>",
    "command": "kdaudit study --sets core --out runs/study",
    "date": "2025-06-01T12:00:00Z",
    "machine": "AMD EPYC 9R14, 2 cores",
    "wall_time_s": 3725.0,
    "n_setups": 4,
    "n_failed": 1,
    "n_models": 42,
    "trained_now": 17,
    "preset": "quick",
    "sets": ["core"],
    "kdaudit": "0.9.0",
    "torch": "2.5.1",
}


def _row(i: int, setup: tuple[str, ...], alpha: float) -> dict:
    name, modality, dataset, arch, d = setup
    row: dict = dict(setup=name, modality=modality, dataset=dataset, architecture=arch, dir=d)
    row.update(condition="kd", alpha=alpha, n_seeds=5, teacher_accuracy=0.9123 + 0.01 * i)
    row.update(n_teacher_wrong=877 - 10 * i, n_test=10000)
    verdicts = ["yes", "yes", "no", "yes", "yes" if i == 2 else "no"]
    row.update(zip(STUDY_COLUMNS[11:16], verdicts, strict=True))
    row["p_transfer"] = 0.0012 * (i + 1)
    for j, q in enumerate(QUANTITIES):
        scale = 10 if q.startswith("h") else 1
        est = (0.0123 + 0.0037 * i) * (1 if j % 2 == 0 else -1) * scale
        se = (0.0021 + 0.0002 * i) * scale
        row.update({q: est, f"{q}_se": se, f"{q}_ci_low": est - 1.96 * se, f"{q}_ci_high": est + 1.96 * se})
    row.update(p_pos=0.01, p_neg_adjusted=0.02, p_asymmetry_adjusted=float("nan"))
    return row


def _pooled(alphas: tuple[float, ...] = ALPHAS) -> pd.DataFrame:
    out = []
    for a in alphas:
        for j, q in enumerate(QUANTITIES):
            est = 0.015 * (1 if j % 2 == 0 else -1)
            out.append(
                dict(condition="kd", alpha=a, quantity=q, k=3, estimate=est, se=0.004, ci_low=est - 0.017)
                | dict(ci_high=est + 0.017, p_value=0.03, tau2=2.5e-5, i2=0.41, q=3.4, q_p=0.18, method="hksj")
            )
    out[0].update(k=1, method="single", tau2=0.0, i2=float("nan"), q=0.0, q_p=float("nan"))
    out[1].update(dict.fromkeys(["estimate", "se", "ci_low", "ci_high", "p_value", "tau2", "i2", "q", "q_p"], np.nan))
    out[1].update(k=0, method="none")
    return pd.DataFrame(out, columns=POOLED_COLUMNS)


def _tables() -> StudyTables:
    rows = [_row(i, s, a) for i, s in enumerate(SETUPS) for a in ALPHAS]
    nan_row = rows[1]  # mnist-mlp, α = 0.9: no intervals, a verdict not testable
    for q in QUANTITIES:
        nan_row[f"{q}_se"] = nan_row[f"{q}_ci_low"] = nan_row[f"{q}_ci_high"] = float("nan")
    nan_row["knowledge_transfer"] = "not testable"
    nan_row["p_transfer"] = float("nan")
    failed = pd.DataFrame({"setup": ["svhn-vgg"], "error": ["CUDA out of memory <oops>"]})
    sentences = ["KD transfers knowledge in 3 of 3 setups.", "Δ− is negative overall."]
    return StudyTables(pd.DataFrame(rows, columns=STUDY_COLUMNS), _pooled(), failed, sentences)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyTables, dict[str, Path]]:
    tables = _tables()
    return tables, write_study_report(tmp_path_factory.mktemp("study"), tables, META)


def _points(lo: float, hi: float) -> str:
    """The interval in points as Markdown writes it (brackets escaped)."""
    return f"\\[{100 * lo:.1f}, {100 * hi:.1f}\\]"


def test_ci_text_in_points() -> None:
    assert ci_text(0.012, 0.004, 0.02) == "+1.2 [0.4, 2.0]"
    assert ci_text(-0.0234, -0.0412, -0.0056) == "-2.3 [-4.1, -0.6]"
    assert ci_text(0.012, float("nan"), 0.02) == "+1.2"
    assert ci_text(float("nan"), 0.0, 0.1) == "—"
    assert ci_text(-0.0004, -0.0004, 0.0) == "+0.0 [0.0, 0.0]"  # no "-0.0"
    assert ci_text(0.1234, 0.01, 0.2, scale=1.0, digits=3) == "+0.123 [0.010, 0.200]"


def test_files_and_csv_round_trip(report: tuple[StudyTables, dict[str, Path]]) -> None:
    tables, paths = report
    names = {"study.csv", "pooled.csv", "study.json", "study.md", "study.html"}
    assert set(paths) == names | {"figures/forest_delta.png", "figures/forest_h.png"}
    assert all(p.is_file() for p in paths.values())
    assert not list(paths["study.md"].parent.rglob(".*tmp-*"))
    back = pd.read_csv(paths["study.csv"])
    assert list(back.columns) == STUDY_COLUMNS
    pd.testing.assert_frame_equal(back, tables.rows, check_dtype=False, rtol=1e-12)
    pooled = pd.read_csv(paths["pooled.csv"])
    assert list(pooled.columns) == POOLED_COLUMNS
    pd.testing.assert_frame_equal(pooled, tables.pooled, check_dtype=False, rtol=1e-12)


def test_json_is_strict_and_complete(report: tuple[StudyTables, dict[str, Path]]) -> None:
    tables, paths = report
    text = paths["study.json"].read_text(encoding="utf-8")

    def no_constants(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    doc = json.loads(text, parse_constant=no_constants)
    assert doc["meta"]["machine"] == META["machine"] and doc["meta"]["sets"] == ["core"]
    assert doc["sentences"] == tables.sentences
    assert len(doc["rows"]) == 6 and list(doc["rows"][0]) == STUDY_COLUMNS
    nan_row = doc["rows"][1]
    assert nan_row["setup"] == "mnist-mlp" and nan_row["alpha"] == 0.9
    assert nan_row["delta_neg_ci_low"] is None and nan_row["p_transfer"] is None
    assert nan_row["knowledge_transfer"] == "not testable"
    assert doc["rows"][4]["delta_neg"] == pytest.approx(tables.rows["delta_neg"].iloc[4])
    assert [r["method"] for r in doc["pooled"]][:3] == ["single", "none", "hksj"]
    assert doc["pooled"][1]["estimate"] is None and doc["pooled"][1]["k"] == 0
    assert doc["failed"] == [{"setup": "svhn-vgg", "error": "CUDA out of memory <oops>"}]


def _block(md: str, start: str, end: str) -> str:
    return md[md.index(start) : md.index(end, md.index(start))]


def test_markdown(report: tuple[StudyTables, dict[str, Path]]) -> None:
    tables, paths = report
    md = paths["study.md"].read_text(encoding="utf-8")
    lines = md.splitlines()
    assert lines[0].startswith("# Study") and lines.count(MARK_BEGIN) == 1 and lines.count(MARK_END) == 1
    block = _block(md, MARK_BEGIN, MARK_END)
    assert block.index("Run on 2025-06-01T12:00:00Z") < block.index("## Cross-setup answer")
    assert block.index("## Setups") < block.index("## Pooled across setups")
    assert "`kdaudit study --sets core --out runs/study`" in block and "1 h 02 min" in block
    assert "42 models, of which 17 trained now" in block and "Hartung–Knapp" in block
    assert all(f"- {s}" in block for s in tables.sentences)
    assert "## Forest plots" not in block and md.index(MARK_END) < md.index("## Forest plots")
    setups = [line for line in _block(md, "## Setups", "## Pooled").splitlines() if line.startswith("|")][2:]
    assert len(setups) == len(tables.rows) == 6
    for _, r in tables.rows.iterrows():
        name = r["setup"] if r["setup"] != ODD else "agnews &lt;b&gt;&amp;&lt;/b&gt; bilstm"
        (line,) = [s for s in setups if f"[{name}](" in s and f"| {r['alpha']:g} |" in s]
        cells = [c.strip() for c in line.strip("|").split("|")]
        neg = f"{100 * r['delta_neg']:+.1f}"
        if math.isnan(r["delta_neg_ci_low"]):
            assert neg in cells and "not testable" in cells
        else:
            assert f"{neg} {_points(r['delta_neg_ci_low'], r['delta_neg_ci_high'])}" in cells
        assert f"{100 * r['teacher_accuracy']:.2f}" in cells and f"{r['h_pos']:+.3f}" in cells
    assert "(image/mnist-mlp/report.html)" in md
    pooled = [line for line in _block(md, "## Pooled", MARK_END).splitlines() if line.startswith("|")][2:]
    assert len(pooled) == 8 and "single setup" in pooled[0] and "| none |" in pooled[1]
    assert "](figures/forest_delta.png)" in md and "](figures/forest_h.png)" in md
    assert "## Failed setups" in md and "svhn-vgg" in md and "CUDA out of memory &lt;oops&gt;" in md
    assert "Generated by kdaudit 0.9.0" in md


def test_html_is_self_contained_and_escaped(report: tuple[StudyTables, dict[str, Path]]) -> None:
    _, paths = report
    doc = paths["study.html"].read_text(encoding="utf-8")
    assert "<script" not in doc.lower() and "<link" not in doc.lower() and "url(" not in doc.lower()
    for attr in re.findall(r'\b(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', doc, flags=re.I):
        assert not attr.lower().startswith(("http://", "https://", "//", "javascript:", "/"))
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', doc)
    assert len(srcs) == 2
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG)
    assert "agnews &lt;b&gt;&amp;&lt;/b&gt; bilstm" in doc and "<b>&" not in doc
    assert "Study &lt;core&gt;" in doc and "CUDA out of memory &lt;oops&gt;" in doc
    assert 'href="cifar10-resnet18/report.html"' in doc and 'href="image/mnist-mlp/report.html"' in doc
    assert 'href="text/agnews%20%3Cb%3E%26%3C/b%3E/report.html"' in doc
    assert '<span class="badge nt">not testable</span>' in doc
    assert '<span class="badge warn">yes</span>' in doc  # the negative asymmetric payoff
    assert "<code>kdaudit study --sets core --out runs/study</code>" in doc
    order = [doc.index(s) for s in ("Cross-setup answer", "<h2>Setups", "Pooled across", "Forest plots", "Failed")]
    assert order == sorted(order)


def test_forest_plots_are_pngs(report: tuple[StudyTables, dict[str, Path]]) -> None:
    _, paths = report
    for name in ("forest_delta", "forest_h"):
        png = paths[f"figures/{name}.png"]
        assert png.read_bytes().startswith(PNG) and png.with_suffix(".svg").is_file()


def test_forest_layout_groups_by_modality() -> None:
    lines = forest_lines(_tables().rows)
    assert lines == [
        ("modality", "image", ""),
        ("setup", "image", "cifar10-resnet18"),
        ("setup", "image", "mnist-mlp"),
        ("modality", "text", ""),
        ("setup", "text", ODD),
    ]


def test_single_setup_several_conditions_and_empty(tmp_path: Path) -> None:
    one = pd.DataFrame([_row(0, SETUPS[0], 0.9)], columns=STUDY_COLUMNS)
    infos = write_forest_plots(tmp_path / "one", one, _pooled((0.9,)).iloc[2:])
    assert [f.name for f in infos] == ["forest_delta", "forest_h"]
    assert all(f.path.read_bytes().startswith(PNG) and f.title and f.caption for f in infos)
    two = pd.concat([one, one.assign(condition="rcd-uniform", delta_pos_ci_low=np.nan)], ignore_index=True)
    assert len(write_forest_plots(tmp_path / "two", two, pd.DataFrame(columns=POOLED_COLUMNS))) == 2
    md = render_study_markdown(StudyTables(two, _pooled((0.9,))), META)
    assert "| Condition |" in md and "| RCD-uniform |" in md and "| KD |" in md
    empty = StudyTables(pd.DataFrame(columns=STUDY_COLUMNS), pd.DataFrame(columns=POOLED_COLUMNS))
    assert write_forest_plots(tmp_path / "empty", empty.rows, empty.pooled) == []
    paths = write_study_report(tmp_path / "empty", empty, {"wall_time_s": None})
    assert not any(k.startswith("figures/") for k in paths) and not list(tmp_path.glob("empty/figures/*.png"))
    md = paths["study.md"].read_text(encoding="utf-8")
    assert "wall time not recorded" in md and "No setup finished its audit." in md and "## Failed" not in md
    assert json.loads(paths["study.json"].read_text(encoding="utf-8"))["rows"] == []
    assert pd.read_csv(paths["study.csv"]).columns.tolist() == STUDY_COLUMNS
