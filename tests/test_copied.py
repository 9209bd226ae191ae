"""Which of the teacher's mistakes the students copy: the pure functions against plain loops,
``copied.csv`` of a tiny audit, and the report's "What is copied" section."""

from __future__ import annotations

import doctest
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import tiny_grid
from kdaudit.analysis import copied
from kdaudit.analysis.copied import (
    PAIR_COLUMNS,
    SAMPLE_COLUMNS,
    compare,
    compare_shares,
    difference_matrix,
    follow_shares,
    group_name,
    parse_group_name,
    teacher_wrong,
)
from kdaudit.errors import InputError
from kdaudit.report.copied import CopiedSource, copied_section, write_copied
from kdaudit.report.html_renderer import render_html_document
from kdaudit.report.markdown_renderer import render_markdown_document
from kdaudit.report.thumbnails import decode_tokens, render_input

# 12 test samples, 4 classes; the teacher is wrong on 1, 2, 4, 5, 7, 8, 10, 11
Y = np.array([0, 1, 2, 3, 1, 1, 0, 2, 2, 3, 3, 0])
T = np.array([0, 2, 1, 3, 2, 2, 0, 1, 3, 3, 0, 3])
# 3 KD and 2 SIDDO students: the pairs (2 → 1), (0 → 3) and (2 → 3) tie on the difference, the
# last two also on the count
KD = np.array(
    [
        [0, 2, 1, 3, 2, 1, 0, 2, 3, 3, 0, 3],
        [0, 2, 2, 3, 2, 2, 0, 1, 2, 3, 1, 0],
        [0, 1, 1, 3, 1, 2, 0, 1, 3, 3, 0, 3],
    ]
)
SIDDO = np.array(
    [
        [0, 1, 1, 3, 1, 1, 0, 2, 2, 3, 3, 0],
        [0, 2, 2, 3, 1, 1, 0, 1, 3, 3, 3, 3],
    ]
)


# -------------------------------------------------------------------------- plain-loop references
def hand_follow(y, t, preds) -> dict[int, Fraction]:
    """Per teacher-wrong sample: the exact share of the students that output the teacher's label."""
    out = {}
    for i in range(len(y)):
        if t[i] == y[i]:
            continue
        hits = 0
        for s in range(len(preds)):
            if preds[s][i] == t[i]:
                hits += 1
        out[i] = Fraction(hits, len(preds))
    return out


def hand_pairs(y, t, kd, siddo) -> list[tuple[int, int, int, Fraction, Fraction, Fraction]]:
    """(label, teacher label, samples, KD share, SIDDO share, difference) over each pair's samples
    and students together, ranked by the difference, then more samples, then the classes."""
    counts: dict[tuple[int, int], list[int]] = {}
    for i in range(len(y)):
        if t[i] == y[i]:
            continue
        c = counts.setdefault((int(y[i]), int(t[i])), [0, 0, 0])
        c[0] += 1
        c[1] += sum(1 for s in range(len(kd)) if kd[s][i] == t[i])
        c[2] += sum(1 for s in range(len(siddo)) if siddo[s][i] == t[i])
    rows = []
    for (a, b), (n, k, s) in counts.items():
        kd_share, siddo_share = Fraction(k, n * len(kd)), Fraction(s, n * len(siddo))
        rows.append((a, b, n, kd_share, siddo_share, kd_share - siddo_share))
    return sorted(rows, key=lambda r: (-r[5], -r[2], r[0], r[1]))


def hand_samples(y, t, kd, siddo) -> list[tuple[int, Fraction]]:
    """(sample, KD − SIDDO share), ranked by the difference, then the index."""
    k, s = hand_follow(y, t, kd), hand_follow(y, t, siddo)
    return sorted(((i, k[i] - s[i]) for i in k), key=lambda r: (-r[1], r[0]))


# -------------------------------------------------------------------------- the pure functions
def test_module_examples():
    assert doctest.testmod(copied, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


def test_follow_shares_match_the_loops():
    df = follow_shares(Y, T, {"siddo": SIDDO, "kd@0.9": KD})
    assert list(df.columns) == ["sample", "label", "teacher_label", "siddo", "kd@0.9"]
    assert df["sample"].tolist() == teacher_wrong(Y, T).tolist() == [1, 2, 4, 5, 7, 8, 10, 11]
    assert df["label"].tolist() == Y[df["sample"]].tolist()
    assert df["teacher_label"].tolist() == T[df["sample"]].tolist()
    for name, preds in (("siddo", SIDDO), ("kd@0.9", KD)):
        expected = hand_follow(Y, T, preds)
        assert df[name].tolist() == pytest.approx([float(expected[i]) for i in df["sample"]])


def test_pairs_and_samples_match_the_loops_with_their_tie_breaks():
    c = compare(Y, T, KD, SIDDO)
    assert c.available and c.reason == ""
    assert list(c.pairs.columns) == PAIR_COLUMNS and list(c.samples.columns) == SAMPLE_COLUMNS
    expected = hand_pairs(Y, T, KD, SIDDO)
    got = list(c.pairs.itertuples(index=False, name=None))
    assert [(r[0], r[1], r[2]) for r in got] == [(r[0], r[1], r[2]) for r in expected]
    for g, e in zip(got, expected, strict=True):
        assert g[3:] == pytest.approx([float(v) for v in e[3:]])
    # the fixed inputs exercise both tie-breaks
    diffs = [r[5] for r in expected]
    assert len(diffs) > len(set(diffs))
    samples = hand_samples(Y, T, KD, SIDDO)
    assert c.samples["sample"].tolist() == [i for i, _ in samples]
    assert c.samples["difference"].tolist() == pytest.approx([float(d) for _, d in samples])
    assert c.top_samples(3)["sample"].tolist() == [i for i, _ in samples[:3]]
    assert len(c.top_pairs(2)) == 2


def test_shares_from_the_table_give_the_same_comparison():
    df = follow_shares(Y, T, {"siddo": SIDDO, "kd@0.9": KD})
    c = compare_shares(df["sample"], df["label"], df["teacher_label"], df["kd@0.9"], df["siddo"])
    pd.testing.assert_frame_equal(c.pairs, compare(Y, T, KD, SIDDO).pairs)
    pd.testing.assert_frame_equal(c.samples, compare(Y, T, KD, SIDDO).samples)


def test_difference_matrix():
    c = compare(Y, T, KD, SIDDO)
    m = difference_matrix(c.pairs, 4)
    for label, teacher, _, _, _, diff in hand_pairs(Y, T, KD, SIDDO):
        assert m[label, teacher] == pytest.approx(float(diff))
    assert np.isnan(m).sum() == 16 - len(c.pairs) and np.isnan(np.diag(m)).all()


def test_no_teacher_wrong_sample():
    df = follow_shares(Y, Y, {"siddo": SIDDO, "kd@0.9": KD})
    assert len(df) == 0 and list(df.columns) == ["sample", "label", "teacher_label", "siddo", "kd@0.9"]
    c = compare(Y, Y, KD, SIDDO)
    assert not c.available and "every test sample right" in c.reason
    assert len(c.pairs) == len(c.samples) == 0 and list(c.pairs.columns) == PAIR_COLUMNS


def test_a_single_student():
    one_kd, one_siddo = KD[0], SIDDO[1]  # a vector is one student
    df = follow_shares(Y, T, {"kd@0.5": one_kd, "siddo": one_siddo[None, :]})
    assert set(df["kd@0.5"]) <= {0.0, 1.0}
    c = compare(Y, T, one_kd, one_siddo)
    expected = hand_pairs(Y, T, one_kd[None, :], one_siddo[None, :])
    assert [(r.label, r.teacher_label) for r in c.pairs.itertuples()] == [(r[0], r[1]) for r in expected]


def test_missing_siddo_is_not_available():
    c = compare(Y, T, KD, None)
    assert not c.available and "not available" in c.reason and "SIDDO" in c.reason
    assert len(c.pairs) == 0 and len(c.top_samples()) == 0
    df = follow_shares(Y, T, {"kd@0.9": KD})
    assert not compare_shares(df["sample"], df["label"], df["teacher_label"], df["kd@0.9"], None).available


def test_bad_shapes_are_input_errors():
    with pytest.raises(InputError, match="students × 12"):
        follow_shares(Y, T, {"kd@0.9": KD[:, :5]})
    with pytest.raises(InputError, match="equal-length"):
        compare(Y, T[:3], KD, SIDDO)


def test_group_names():
    assert group_name("kd", 0.1) == "kd@0.1" and group_name("rcd-uniform", 0.9) == "rcd-uniform@0.9"
    assert group_name("siddo", 0.0) == "siddo"
    assert parse_group_name("kd@0.5") == ("kd", 0.5) and parse_group_name("siddo") == ("siddo", 0.0)
    cond, alpha = parse_group_name("custom")
    assert cond == "custom" and np.isnan(alpha)


# -------------------------------------------------------------------------- copied.csv of an audit
@pytest.fixture(scope="module")
def tiny_audit(tmp_path_factory):
    from kdaudit.audit import run_audit
    from kdaudit.config.loader import resolve_spec

    spec = resolve_spec(
        "digits-mlp", tiny_grid(1, "protocol.alphas=[0.1,0.9]", "protocol.conditions=[siddo,kd,rcd-uniform]")
    )
    return run_audit(spec, tmp_path_factory.mktemp("copied") / "audit")


def test_copied_csv_of_an_audit_matches_the_stored_outputs(tiny_audit):
    out, plan = tiny_audit.out_dir, tiny_audit.plan
    from kdaudit.audit import store_for

    store = store_for(tiny_audit.spec, out)
    df = pd.read_csv(out / "copied.csv")
    assert list(df.columns) == [
        "sample",
        "label",
        "teacher_label",
        "siddo",
        "kd@0.1",
        "kd@0.9",
        "rcd-uniform@0.1",
        "rcd-uniform@0.9",
    ]
    t_out = store.load_outputs(plan.teacher.key)
    y, t = t_out["test_labels"], t_out["test_logits"].argmax(1)
    assert len(df) == int((t != y).sum()) == tiny_audit.meta["n_teacher_wrong"] > 0
    for col in df.columns[3:]:
        cond, alpha = parse_group_name(col)
        jobs = [j for j in plan.students if j.condition == cond and np.isclose(j.alpha, alpha)]
        preds = [store.load_outputs(j.key)["test_logits"].argmax(1) for j in jobs]
        expected = hand_follow(y, t, preds)
        assert df[col].tolist() == pytest.approx([float(expected[i]) for i in df["sample"]]), col
    assert tiny_audit.paths["copied.csv"] == out / "copied.csv"


def test_report_section_of_an_audit(tiny_audit):
    out = tiny_audit.out_dir
    html, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert html.index('id="figures"') < html.index('id="copied"') < html.index('id="how-to-read"')
    section = html[html.index('<section id="copied"') :]
    section = section[: section.index("</section>")]
    assert "What is copied" in section and "𝒲" in section and "SIDDO" in section
    assert 'id="fig-copied_kd_0-9"' in section and "<table>" in section and 'class="thumb"' in section
    assert '<details class="group"><summary>KD at α = 0.1' in section
    for name in ("copied_kd_0.9.png", "copied_kd_0.1.png"):
        assert (out / "figures" / name).stat().st_size > 0
    assert "## What is copied" in md and "](figures/copied_kd_0.9.png)" in md
    assert re.search(r"!\[Test sample \d+\]\(figures/examples/test-\d+\.png\)", md)
    thumbs = [k for k in tiny_audit.paths if k.startswith("figures/examples/")]
    assert thumbs and all((out / k).is_file() for k in thumbs)


# -------------------------------------------------------------------------- the section's blocks
def _render(source: CopiedSource, tmp: Path) -> tuple[str, str]:
    from kdaudit.report.document import Document

    section = copied_section(write_copied(tmp, source))
    assert section is not None and section.id == "copied"
    doc = Document("t", "s", [section], "f")
    return render_html_document(doc), render_markdown_document(doc)


def _source(inputs=None, info=None, drop=()) -> CopiedSource:
    follow = follow_shares(Y, T, {"siddo": SIDDO, "kd@0.5": KD[::-1], "kd@0.9": KD}).drop(columns=list(drop))
    return CopiedSource(follow, info or {"classes": ["zero", "one", "two", "three"]}, inputs, n_test=len(Y))


def test_section_with_images_undoes_the_standardisation(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, (len(Y), 1, 8, 8))
    info = {
        "modality": "image",
        "classes": ["zero", "one", "two", "three"],
        "normalization": {"mean": 0.4, "std": 0.2},
        "raw_range": [0.0, 1.0],
    }
    html, md = _render(_source((raw - 0.4) / 0.2, info), tmp_path)
    top = compare(Y, T, KD, SIDDO).top_samples()["sample"].tolist()
    for i in top:
        assert (tmp_path / "figures" / "examples" / f"test-{i}.png").is_file()
    from PIL import Image

    with Image.open(tmp_path / "figures" / "examples" / f"test-{top[0]}.png") as im:
        pixels = np.asarray(im)
    assert pixels.shape == (72, 72)
    assert np.abs(pixels[::9, ::9] / 255 - raw[top[0], 0]).max() < 0.01
    assert html.count('class="thumb"') == 2 * len(top) and html.count("<details") >= 2
    assert "one → two" in html and "one → two" in md
    assert (tmp_path / "figures" / "copied_kd_0.9.png").is_file()


def test_section_without_inputs_shows_indices(tmp_path):
    html, md = _render(_source(), tmp_path)
    assert "show their test indices only" in html and 'class="thumb"' not in html
    assert "Test sample 1" in md and not (tmp_path / "figures" / "examples").exists()


def test_section_without_siddo_or_kd_or_mistakes(tmp_path):
    html, _ = _render(_source(drop=["siddo"]), tmp_path)
    assert "Not available: the audit has no SIDDO students" in html and "<table>" not in html
    html, _ = _render(_source(drop=["kd@0.5", "kd@0.9"]), tmp_path)
    assert "no KD students" in html
    empty = follow_shares(Y, Y, {"siddo": SIDDO, "kd@0.9": KD})
    html, _ = _render(CopiedSource(empty, {}, None, n_test=12), tmp_path)
    assert "every test sample right" in html


def test_text_and_audio_inputs():
    info = {"modality": "text", "vocab": ["<pad>", "<unk>", "a", "b", "c"], "tokenizer": {"kind": "char"}}
    assert decode_tokens(np.array([2, 3, 4, 0, 0]), info) == "abc"
    words = {**info, "tokenizer": {"kind": "word"}}
    assert render_input(np.array([2, 1, 3, 0]), words).text == "a <unk> b"
    assert decode_tokens(np.array([5, 6, 0]), {}) == "token ids: 5 6"
    wave = np.sin(np.linspace(0, 800 * np.pi, 8000))[None, :].astype(np.float32)
    picture = render_input(wave, {"modality": "audio"}).picture
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    logmel = np.random.default_rng(1).normal(size=(1, 32, 32)).astype(np.float32)
    assert render_input(logmel, {"modality": "audio"}).picture.shape == (96, 96, 3)
    assert render_input(np.zeros(7, np.float32), {"modality": "image"}) is None
