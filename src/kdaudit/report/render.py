"""The audit report (PROTOCOL §6): ``report.md``, a self-contained ``report.html`` and figures.

:func:`write_report` is the entry point. The report opens with the verdicts (one block per
:class:`~kdaudit.analysis.audit.Verdict`), followed by the setup facts, the summary table
(mean ± SEM over seeds), the transfer table (Δ±, h±, p), the significance tests, the figures,
a plain-words "How to read this report" section and the resolved specification.

``report.html`` needs nothing but itself: the CSS is inline, every figure is embedded as a
``data:image/png;base64`` ``<img>`` with alt text and an id (``fig-<figure name>``), and there
are no scripts and no external URLs. Every string that comes from the data is escaped.
``report.md`` carries the same content and links the figures as ``figures/NAME.png``.
The verdict section has the id ``verdicts``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdaudit.analysis.audit import AuditTables, Verdict
from kdaudit.report.figures import METRIC_LABELS, condition_order, write_figures

__all__ = [
    "write_report",
    "render_html",
    "render_markdown",
    "FigureInfo",
    "figure_info",
    "fmt_num",
    "fmt_p",
]

#: Metrics of the summary table, in column order: (summary column stem, header).
SUMMARY_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "Accuracy"),
    ("agreement", "Agreement"),
    ("js_divergence", "JS divergence"),
    ("activation_distance", "Activation distance"),
    ("agreement_teacher_correct", "Agreement (teacher right)"),
    ("agreement_teacher_wrong", "Agreement (teacher wrong)"),
)

_SHORT_METRIC = {
    "accuracy": "accuracy",
    "loss": "loss",
    "agreement": "agreement",
    "prediction_disagreement": "prediction disagreement",
    "js_divergence": "JS divergence",
    "activation_distance": "activation distance",
    "logit_cosine": "logit cosine",
    "rank_disagreement": "rank disagreement",
    "agreement_teacher_correct": "agreement (teacher right)",
    "agreement_teacher_wrong": "agreement (teacher wrong)",
}

_VERDICT_FIELDS: tuple[tuple[str, str], ...] = (
    ("knowledge_transfer", "Knowledge transfer"),
    ("beyond_regularisation", "Beyond regularisation"),
    ("negative_transfer", "Negative transfer"),
    ("asymmetry", "Asymmetry"),
    ("negative_asymmetric_payoff", "Negative asymmetric payoff"),
    ("compression", "Compression"),
)

#: meta keys shown under "Setup", in this order, with their labels.
_META_FACTS: tuple[tuple[str, str], ...] = (
    ("setup", "Setup"),
    ("dataset", "Dataset"),
    ("model", "Model"),
    ("distillation", "Distillation"),
    ("teacher_model", "Teacher model"),
    ("teacher_checkpoint", "Teacher checkpoint"),
    ("teacher_epochs", "Teacher epochs"),
    ("hint", "Hint loss"),
    ("student_params", "Student parameters"),
    ("teacher_params", "Teacher parameters"),
    ("n_train", "Training samples"),
    ("n_test", "Test samples"),
    ("teacher_accuracy", "Teacher test accuracy"),
    ("teacher_loss", "Teacher test loss"),
    ("n_teacher_wrong", "Test samples the teacher gets wrong"),
    ("n_models", "Models trained"),
    ("wall_time_s", "Wall time"),
    ("precision", "Precision"),
    ("execution", "Trained on"),
    ("kdaudit_version", "kdaudit version"),
    ("torch_version", "PyTorch version"),
    ("created", "Created"),
)
_META_NOT_FACTS = {"title"}

DASH = "—"


# --------------------------------------------------------------------------------------------
# number formatting
# --------------------------------------------------------------------------------------------
def _num(x: Any) -> float | None:
    """A finite float, or None (None, NaN, ±inf, non-numeric)."""
    if x is None or isinstance(x, str | bytes):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _decimals(a: float, digits: int) -> int:
    """``digits`` decimals, more for small magnitudes so that two significant digits show."""
    return max(digits, min(6, 1 - math.floor(math.log10(a))))


def fmt_num(x: Any, digits: int = 4) -> str:
    """``0.9123``; small values with two significant digits (``0.00036``), tiny or huge ones in
    scientific notation (``3.2e-07``); NaN → ``—``."""
    v = _num(x)
    if v is None:
        return DASH
    if v == 0:
        return "0"
    a = abs(v)
    if a < 1e-5 or a >= 1e6:
        return f"{v:.1e}"
    return f"{v:.{_decimals(a, digits)}f}"


def fmt_signed(x: Any, digits: int = 4) -> str:
    """Like :func:`fmt_num` with an explicit sign (``+0.0123``)."""
    v = _num(x)
    if v is None:
        return DASH
    if v == 0:
        return "0"
    a = abs(v)
    if a < 1e-5 or a >= 1e6:
        return f"{v:+.1e}"
    return f"{v:+.{_decimals(a, digits)}f}"


def fmt_effect(x: Any) -> str:
    v = _num(x)
    return DASH if v is None else f"{v:+.2f}"


def fmt_p(x: Any) -> str:
    """p-values: ``0.042``, ``0.0003``, ``2.1e-05``; NaN → ``—``."""
    v = _num(x)
    if v is None:
        return DASH
    if v == 0:
        return "0"
    if v < 1e-4:
        return f"{v:.1e}"
    if v < 0.01:
        return f"{v:.4f}"
    return f"{v:.3f}"


def fmt_int(x: Any) -> str:
    v = _num(x)
    if v is None:
        return DASH
    if v == int(v):
        return f"{int(v):,}"
    return f"{v:g}"


def fmt_stat(x: Any) -> str:
    v = _num(x)
    if v is None:
        return DASH
    return f"{int(v)}" if v == int(v) else f"{v:.1f}"


def fmt_alpha(x: Any) -> str:
    v = _num(x)
    if v is None:
        return DASH if x is None or _isnan(x) else str(x)
    return f"{v:g}"


def fmt_mean_sem(mean: Any, sem: Any) -> str:
    m = fmt_num(mean)
    if m == DASH:
        return DASH
    s = fmt_num(sem)
    return m if s == DASH else f"{m} ± {s}"


def fmt_duration(seconds: Any) -> str:
    v = _num(seconds)
    if v is None:
        return str(seconds)
    if v < 60:
        return f"{v:.1f} s"
    minutes, sec = divmod(int(round(v)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _isnan(x: Any) -> bool:
    try:
        return isinstance(x, float | np.floating) and math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def _missing(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, str):
        return x.strip() == ""
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def _truthy(x: Any) -> bool:
    if isinstance(x, str):
        return x.strip().lower() in {"true", "yes", "1"}
    if _missing(x):
        return False
    try:
        return bool(x)
    except (TypeError, ValueError):
        return False


def _metric_name(m: Any) -> str:
    return _SHORT_METRIC.get(str(m), str(m))


# --------------------------------------------------------------------------------------------
# content model (plain, unescaped strings; each renderer escapes)
# --------------------------------------------------------------------------------------------
@dataclass
class Table:
    headers: list[str]
    numeric: list[bool]
    rows: list[list[str]]
    highlight: list[bool]
    badge_cols: tuple[int, ...] = ()


@dataclass
class FigureInfo:
    name: str  # file stem
    path: Path
    title: str
    caption: str

    @property
    def html_id(self) -> str:
        return "fig-" + re.sub(r"[^A-Za-z0-9_-]", "-", self.name)


def _sorted_frame(df: pd.DataFrame) -> pd.DataFrame:
    if df is None or len(df) == 0 or "condition" not in df.columns:
        return df
    order = {c: i for i, c in enumerate(condition_order(df["condition"].astype(str)))}
    alpha = pd.to_numeric(df["alpha"], errors="coerce") if "alpha" in df.columns else 0.0
    key = pd.DataFrame(
        {
            "_c": df["condition"].astype(str).map(order),
            "_a": alpha,
            "_i": np.arange(len(df)),
        },
        index=df.index,
    )
    return df.loc[key.sort_values(["_c", "_a", "_i"], na_position="last").index]


def _statistics_lines(tables: AuditTables) -> list[str]:
    """Which rule set decided the verdicts, and what this design cannot decide."""
    st = getattr(tables, "statistics", None) or {}
    if not st:
        return []
    if st.get("standard") == "paper":
        lines = [
            f"Decided by the paper's standard: each test a two-sided Mann–Whitney U at "
            f"{st.get('level', 0.05):g}, no correction, direction from the means, asymmetry read as Δ− > Δ+."
        ]
    else:
        test = "Wilcoxon signed-rank tests by seed" if st.get("paired") else "Mann–Whitney U tests"
        lines = [
            f"Decided by kdaudit's standard: {st.get('primary_family_size')} primary tests ({test}, "
            f"{st.get('method')} p-values) corrected together ({st.get('correction')}) at {st.get('level', 0.05):g}; "
            f"a “yes” needs the adjusted p below the level and the effect in the claimed direction by ranks."
        ]
    lines += [f"Note: {n}." for n in st.get("notes", [])]
    return lines


def _verdict_title(v: Verdict) -> str:
    return f"{v.condition} · α = {fmt_alpha(v.alpha)}"


def _badge_kind(field: str, value: Any) -> str:
    s = str(value).strip().lower()
    if s == "yes":
        return "warn" if field in ("negative_asymmetric_payoff", "negative_transfer") else "yes"
    if s == "no":
        return "no"
    return "nt"


def _facts(meta: Mapping[str, Any], tables: AuditTables) -> list[tuple[str, str]]:
    facts: list[tuple[str, str]] = []
    known = {k for k, _ in _META_FACTS}
    for key, label in _META_FACTS:
        if key not in meta or _missing(meta[key]):
            continue
        value = meta[key]
        if key == "wall_time_s":
            text = fmt_duration(value)
        elif key == "teacher_accuracy":
            v = _num(value)
            text = f"{v:.4f} ({100 * v:.2f} %)" if v is not None and 0 <= v <= 1 else fmt_num(value)
        elif key in {"n_train", "n_test", "n_teacher_wrong", "n_models", "student_params", "teacher_params"}:
            text = fmt_int(value) if _num(value) is not None else str(value)
        else:
            text = str(value)
        facts.append((label, text))
    seeds = _seed_range(tables.summary)
    if seeds:
        facts.append(("Seeds per group", seeds))
    for key, value in meta.items():
        if key in known or key in _META_NOT_FACTS or _missing(value):
            continue
        if isinstance(value, Mapping | list | tuple):
            continue
        facts.append((str(key).replace("_", " ").capitalize(), str(value)))
    return facts


def _seed_range(summary: pd.DataFrame | None) -> str:
    if summary is None or len(summary) == 0 or "n" not in summary.columns:
        return ""
    n = pd.to_numeric(summary["n"], errors="coerce").dropna()
    if n.empty:
        return ""
    lo, hi = int(n.min()), int(n.max())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def _summary_table(summary: pd.DataFrame | None) -> Table | None:
    if summary is None or len(summary) == 0:
        return None
    summary = _sorted_frame(summary)
    metrics = [(m, h) for m, h in SUMMARY_METRICS if f"{m}_mean" in summary.columns]
    headers = ["Condition", "α", "n"] + [h for _, h in metrics]
    numeric = [False, True, True] + [True] * len(metrics)
    rows = []
    for _, r in summary.iterrows():
        row = [str(r.get("condition", "")), fmt_alpha(r.get("alpha")), fmt_int(r.get("n"))]
        row += [fmt_mean_sem(r.get(f"{m}_mean"), r.get(f"{m}_sem")) for m, _ in metrics]
        rows.append(row)
    return Table(headers, numeric, rows, [False] * len(rows))


def _transfer_table(transfer: pd.DataFrame | None) -> Table | None:
    if transfer is None or len(transfer) == 0:
        return None
    transfer = _sorted_frame(transfer)
    headers = [
        "Condition",
        "α",
        "Δ+",
        "Δ−",
        "h+",
        "h−",
        "h− − h+ [95 % CI]",
        "p (Δ−) adjusted",
        "p (h− − h+) adjusted",
        "Negative asymmetric payoff",
        "Verdict",
    ]
    numeric = [False, True, True, True, True, True, True, True, True, False, False]
    rows, hl = [], []
    for _, r in transfer.iterrows():
        payoff = r.get("negative_asymmetric_payoff")
        asym = DASH if _missing(r.get("asymmetry")) else fmt_signed(r.get("asymmetry"), 3)
        if not _missing(r.get("asymmetry_ci_low")) and not _missing(r.get("asymmetry_ci_high")):
            asym += f" [{fmt_signed(r.get('asymmetry_ci_low'), 3)}, {fmt_signed(r.get('asymmetry_ci_high'), 3)}]"
        rows.append(
            [
                str(r.get("condition", "")),
                fmt_alpha(r.get("alpha")),
                fmt_signed(r.get("delta_pos")),
                fmt_signed(r.get("delta_neg")),
                fmt_signed(r.get("h_pos"), 3),
                fmt_signed(r.get("h_neg"), 3),
                asym,
                fmt_p(r.get("p_neg_adjusted")),
                fmt_p(r.get("p_asymmetry_adjusted")),
                DASH if _missing(payoff) else str(payoff),
                "" if _missing(r.get("verdict")) else str(r.get("verdict")),
            ]
        )
        hl.append(str(payoff).strip().lower() == "yes")
    return Table(headers, numeric, rows, hl, badge_cols=(9,))


def _comparison_label(comp: str) -> str:
    if comp == "vs_siddo":
        return "Against the SIDDO control (same initialisation, CE only)"
    if comp.startswith("vs_rcd-"):
        kind = comp[len("vs_rcd-") :]
        return f"Against random control distillation ({kind} noise) at the same α"
    if comp.startswith("vs_"):
        return f"Against {comp[3:]}"
    return comp


_HYPOTHESIS_LABELS = {
    "H1": "H1 transfer",
    "H2": "H2 beyond regularisation",
    "H3": "H3 negative transfer",
    "H4": "H4 asymmetry",
}


def _test_cells(r: pd.Series) -> list[str]:
    diff = r.get("mean_diff")
    ci = ""
    if not _missing(r.get("ci_low")) and not _missing(r.get("ci_high")):
        ci = f" [{fmt_num(r.get('ci_low'))}, {fmt_num(r.get('ci_high'))}]"
    return [
        fmt_int(r.get("n_a")),
        fmt_int(r.get("n_b")),
        fmt_mean_sem(r.get("mean_a"), r.get("sem_a")),
        fmt_mean_sem(r.get("mean_b"), r.get("sem_b")),
        (DASH if _missing(diff) else fmt_signed(diff, 4)) + ci,
        fmt_stat(r.get("statistic")),
        fmt_p(r.get("p_value")),
        fmt_p(r.get("p_adjusted")),
        fmt_effect(r.get("effect_size")),
        "yes" if _truthy(r.get("significant")) else "no",
    ]


_TEST_HEADERS = [
    "n",
    "n ref.",
    "Mean ± SEM",
    "Reference mean ± SEM",
    "Difference [95 % CI]",
    "Statistic",
    "p",
    "p adjusted",
    "Effect size r",
    "Significant",
]


def _tests_tables(tests: pd.DataFrame | None) -> list[tuple[str, Table, bool]]:
    """(label, table, open) per table: the primary family first (open), then every other family
    by comparison (closed; exploratory)."""
    if tests is None or len(tests) == 0:
        return []
    out: list[tuple[str, Table, bool]] = []
    family = tests["family"].astype(str) if "family" in tests.columns else pd.Series("", index=tests.index)
    primary = tests[family == "primary"]
    if len(primary):
        headers = ["Hypothesis", "Condition", "α", "Compared with", "Metric"] + _TEST_HEADERS
        numeric = [False, False, True, False, False] + [True] * 9 + [False]
        rows, hl = [], []
        order = primary.assign(_h=primary["hypothesis"].astype(str)).sort_values(["_h", "alpha"], kind="stable")
        for _, r in order.iterrows():
            comp = str(r.get("comparison", ""))
            rows.append(
                [
                    _HYPOTHESIS_LABELS.get(str(r.get("hypothesis")), str(r.get("hypothesis"))),
                    str(r.get("condition", "")),
                    fmt_alpha(r.get("alpha")),
                    comp[3:] if comp.startswith("vs_") else comp,
                    _metric_name(r.get("metric", "")),
                ]
                + _test_cells(r)
            )
            hl.append(_truthy(r.get("significant")))
        out.append(
            ("Primary tests: the verdicts (one family, corrected together)", Table(headers, numeric, rows, hl), True)
        )
    rest = tests[family != "primary"]
    comps = list(dict.fromkeys(rest["comparison"].astype(str))) if "comparison" in rest.columns else [""]
    headers = ["Condition", "α", "Metric"] + _TEST_HEADERS
    numeric = [False, True, False] + [True] * 9 + [False]
    for comp in comps:
        sub = rest[rest["comparison"].astype(str) == comp] if comp else rest
        if not len(sub):
            continue
        rows, hl = [], []
        for _, r in sub.iterrows():
            rows.append(
                [str(r.get("condition", "")), fmt_alpha(r.get("alpha")), _metric_name(r.get("metric", ""))]
                + _test_cells(r)
            )
            hl.append(_truthy(r.get("significant")))
        fam = str(sub["family"].iloc[0]) if "family" in sub.columns else ""
        label = _comparison_label(comp) if comp else "All tests"
        if fam.startswith("secondary"):
            label += " — exploratory"
        out.append((label, Table(headers, numeric, rows, hl), not fam.startswith("secondary")))
    return out


_TESTS_NOTE = (
    "Two-sided tests on the per-seed values: Mann–Whitney U, or the Wilcoxon signed-rank test by seed in the "
    "paired comparisons; p-values exact without ties, by permutation with ties. “Mean ± SEM” is the group named in "
    "the row, “reference” the group it is compared with; the difference is mean − reference mean with its 95 % "
    "bootstrap interval, r the rank-biserial effect (positive: the row's group ranks higher). The primary tests "
    "decide the verdicts and are corrected together; every other table is exploratory, corrected within its own "
    "family."
)


def figure_info(paths: Iterable[Path]) -> list[FigureInfo]:
    """Titles and captions of the figure files written by :mod:`kdaudit.report.figures`,
    in report order: Δ±, accuracy vs agreement, then the per-metric distributions."""
    infos: list[FigureInfo] = []
    for p in paths:
        p = Path(p)
        name = p.stem
        if name == "transfer_deltas":
            infos.append(
                FigureInfo(
                    name,
                    p,
                    "Δ+ and Δ− against the SIDDO control",
                    "Change in agreement with the teacher relative to the SIDDO control: Δ+ on the "
                    "test samples the teacher gets right, Δ− on those it gets wrong. Error bars: "
                    "SEM of the difference, √(SEM_X² + SEM_SIDDO²), from the per-seed values. A "
                    "taller Δ− than Δ+ means the students copy the teacher's mistakes more than its "
                    "correct answers (mind the headroom: see h± in the transfer table).",
                )
            )
        elif name == "accuracy_vs_agreement":
            infos.append(
                FigureInfo(
                    name,
                    p,
                    "Accuracy vs agreement",
                    "One point per student: agreement with the teacher (x) against test accuracy "
                    "(y); colour = condition, marker = α. The dashed line is the teacher's accuracy.",
                )
            )
        elif name.startswith("dist_"):
            metric = name[len("dist_") :]
            label = METRIC_LABELS.get(metric, metric)
            infos.append(
                FigureInfo(
                    name,
                    p,
                    f"Per-seed values: {label}",
                    "Each point is one student (one seed); the boxes span the quartiles, with the "
                    "median as a line and whiskers to 1.5 × IQR, for groups with at least two seeds.",
                )
            )
        else:
            infos.append(FigureInfo(name, p, name.replace("_", " "), ""))
    rank = {"transfer_deltas": 0, "accuracy_vs_agreement": 1}
    return sorted(infos, key=lambda f: rank.get(f.name, 2))  # stable: keeps metric order


_SECURITY_TITLES = {
    "security_adv_follows": "Adversarial transfer: copying the teacher's adversarial label",
    "security_adv_fooled": "Adversarial transfer: fooled by the teacher's adversarial examples",
    "security_adv_flipped": "Adversarial transfer: correct predictions flipped by the teacher's adversarial examples",
    "security_backdoor": "Backdoor inheritance",
}
_SECURITY_CAPTIONS = {
    "security_adv_follows": "Share of the teacher's transferable adversarial examples on which the student "
    "outputs the teacher's (wrong) adversarial label, against the attack budget; "
    "mean ± SEM over seeds, one panel per α (SIDDO repeated in each).",
    "security_adv_fooled": "Share of the teacher's transferable adversarial examples that also fool the "
    "student (counting those it already got wrong when clean), against the attack "
    "budget; mean ± SEM over seeds.",
    "security_adv_flipped": "Among the teacher's transferable adversarial examples that the student gets right "
    "when clean, the share it gets wrong on the adversarial input (its own prediction "
    "flipped), against the attack budget; mean ± SEM over seeds (students right on none "
    "are left out).",
    "security_backdoor": "Attack success rate of the teacher's backdoor trigger on each group of students "
    "({transfer}); mean ± SEM over seeds; dashed: the teacher.",
}


HOW_TO_READ: tuple[tuple[str, str], ...] = (
    (
        "The question",
        "Knowledge distillation (KD) trains a student on a mix of the true labels and the teacher's "
        "output probabilities, weighted by α (α = 0: labels only, α = 0.9: mostly the teacher). "
        "This report asks whether the students end up functioning like the teacher — making the "
        "same predictions with similar confidence — more than they would without KD, and what "
        "exactly they take from it.",
    ),
    (
        "Agreement",
        "The share of test samples on which the student predicts the same class as the teacher "
        "(1 = always). Prediction disagreement is 1 − agreement.",
    ),
    (
        "JS divergence and activation distance",
        "How far the student's predicted probabilities are from the teacher's, sample by sample: "
        "the Jensen–Shannon divergence (0 = identical, at most ln 2 ≈ 0.693) and the Euclidean "
        "distance between the probability vectors (0 = identical, at most √2). Lower means closer "
        "to the teacher.",
    ),
    (
        "Agreement where the teacher is right / wrong",
        "Agreement computed separately on the test samples the teacher classifies correctly and on "
        "those it gets wrong. On the wrong ones, agreeing means repeating the teacher's mistake.",
    ),
    (
        "SIDDO (the control)",
        "Same Initialisation, Different Data Order: students trained with the labels only (α = 0), "
        "from the same starting weights as the teacher, seeing the data in a different order. Two "
        "such models already agree a lot; KD only shows an effect if it moves the students beyond "
        "this baseline.",
    ),
    (
        "RCD (random control distillation)",
        "The KD loss with the teacher replaced by fixed random noise (uniform or Gaussian) per "
        "training sample, at the same α. Noise carries no knowledge of the task, so whatever RCD "
        "does is regularisation. KD is beyond regularisation only if it beats the better RCD.",
    ),
    (
        "Δ+, Δ− and h±",
        "Δ+ is how much more the KD students agree with the teacher than the SIDDO students on "
        "the samples the teacher gets right; Δ− the same on the samples it gets wrong. Because the "
        "control leaves less room to improve where the teacher is right, h± divides each Δ by the "
        "room the control left (1 − its agreement): the share of the gap that KD closed.",
    ),
    (
        "Negative asymmetric payoff",
        "Said of a condition when Δ− is significantly above zero and h− > h+: the students copy "
        "the teacher's errors more than its correct answers. KD then passes on mistakes more "
        "readily than knowledge.",
    ),
    (
        "Compression",
        "KD is said to compress the teacher into the student only if, on average, agreement ≥ 0.95, "
        "1 − JS/ln 2 ≥ 0.95 and 1 − activation distance/√2 ≥ 0.95.",
    ),
    (
        "Statistics",
        "Each group has one student per seed. Values are mean ± SEM (standard error of the mean, "
        "sample standard deviation / √n). Groups are compared with a two-sided Mann–Whitney U test "
        "on the per-seed values; r = 2U/(n₁n₂) − 1 is the rank-biserial effect size (from −1 to 1, "
        "0 = no difference). Tests are marked significant (highlighted rows) at the audit's "
        "significance level (0.05 unless configured otherwise); where a correction for multiple "
        "tests was configured, the adjusted p is shown next to the raw one. With few seeds a test "
        "cannot reach significance, however large the effect.",
    ),
)


def _spec_text(spec: Mapping[str, Any] | None) -> str:
    if not spec:
        return ""
    try:
        import yaml

        return yaml.safe_dump(_plain(spec), sort_keys=False, allow_unicode=True).rstrip()
    except Exception:  # noqa: BLE001 - fall back to JSON for odd values
        return json.dumps(spec, indent=2, default=str, ensure_ascii=False)


def _plain(obj: Any) -> Any:
    """Spec values as YAML-safe plain types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def _title(meta: Mapping[str, Any]) -> str:
    if not _missing(meta.get("title")):
        return str(meta["title"])
    if not _missing(meta.get("setup")):
        return f"kdaudit report — {meta['setup']}"
    return "kdaudit report"


def _subtitle(meta: Mapping[str, Any]) -> str:
    parts = [str(meta[k]) for k in ("dataset", "model") if not _missing(meta.get(k))]
    lead = "Functional audit of knowledge distillation"
    return lead + (": " + " · ".join(parts) if parts else "")


def _footer(meta: Mapping[str, Any]) -> str:
    text = "Generated by kdaudit"
    if not _missing(meta.get("kdaudit_version")):
        text += f" {meta['kdaudit_version']}"
    if not _missing(meta.get("created")):
        text += f" on {meta['created']}"
    return text + "."


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------
CSS = """
:root {
  --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f6f7f9; --card: #ffffff;
  --accent: #2f6fde; --head: #f3f4f6; --sig: #fff6dc;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
        "Liberation Sans", "DejaVu Sans", sans-serif;
}
main { max-width: 1180px; margin: 0 auto; padding: 36px 28px 56px; }
header.top h1 { font-size: 28px; line-height: 1.25; margin: 0 0 4px; letter-spacing: -0.01em; }
header.top p { margin: 0; color: var(--muted); }
h2 { font-size: 19px; margin: 0 0 14px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 8px; }
section { margin-top: 38px; }
p.note { color: var(--muted); font-size: 13.5px; margin: 0 0 12px; }
#verdicts {
  margin-top: 24px; background: var(--card); border: 1px solid var(--line);
  border-top: 4px solid var(--accent); border-radius: 10px; padding: 20px 22px 22px;
  box-shadow: 0 1px 3px rgba(17, 24, 39, 0.06);
}
#verdicts h2 { border-bottom: none; padding-bottom: 0; margin-bottom: 12px; }
.verdict-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 14px; }
.verdict { border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; background: #fbfbfc; }
.verdict h3 { margin: 0 0 10px; font-size: 16px; }
.badges { display: grid; grid-template-columns: 1fr auto; gap: 5px 12px; font-size: 13.5px;
          align-items: center; margin: 0; }
.badges dt { color: #374151; }
.badges dd { margin: 0; text-align: right; }
.verdict ul { margin: 12px 0 0; padding-left: 18px; font-size: 14px; }
.verdict li { margin: 3px 0; }
.badge { display: inline-block; min-width: 38px; text-align: center; padding: 1px 10px;
         border-radius: 999px; font-size: 12px; font-weight: 600; line-height: 1.6;
         border: 1px solid transparent; white-space: nowrap; }
.badge.yes { background: #dcfce7; color: #166534; border-color: #bbf7d0; }
.badge.no { background: #eef0f3; color: #374151; border-color: #e2e5ea; }
.badge.warn { background: #fde2e1; color: #9b1c1c; border-color: #fbcaca; }
.badge.nt { background: transparent; color: var(--muted); border: 1px dashed #c9ced6; }
.legend { margin-top: 14px; font-size: 12.5px; color: var(--muted); }
.legend .badge { margin: 0 3px; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 10px; margin: 0; }
.fact { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 9px 12px; }
.fact dt { font-size: 11.5px; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted); }
.fact dd { margin: 2px 0 0; font-weight: 600; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; }
th, td { padding: 6px 9px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; color: #374151; vertical-align: bottom; }
tbody tr:last-child td { border-bottom: none; }
td.num, th.num { text-align: right; }
td.num, td.nw, th.nw { white-space: nowrap; }
td.wide { min-width: 260px; }
tr.hl td { background: var(--sig); }
tr.hl td:first-child { box-shadow: inset 3px 0 0 #e0a100; }
.figures { display: grid; grid-template-columns: 1fr; gap: 18px; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
figure h3 { margin: 0 0 8px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 8px; }
dl.read { margin: 0; }
dl.read dt { font-weight: 600; margin-top: 12px; }
dl.read dd { margin: 2px 0 0; }
details { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
summary { cursor: pointer; font-weight: 600; }
details.tests { background: transparent; border: none; padding: 0; margin: 20px 0 0; }
details.tests > summary { font-size: 15px; margin-bottom: 8px; }
details.tests .count { font-weight: 400; color: var(--muted); font-size: 13px; margin-left: 6px; }
pre { font: 12.5px/1.5 ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono",
      "DejaVu Sans Mono", monospace; white-space: pre-wrap; overflow-wrap: anywhere; margin: 10px 0 0; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; }
@media print {
  body { background: #fff; }
  #verdicts, figure, .table-wrap, .fact { box-shadow: none; break-inside: avoid; }
}
""".strip()


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _html_badge(field: str, value: Any) -> str:
    text = DASH if _missing(value) else str(value)
    return f'<span class="badge {_badge_kind(field, text)}">{_e(text)}</span>'


def _html_table(t: Table, caption: str | None = None, cls: str = "") -> str:
    out = ['<div class="table-wrap">', f'<table class="{_e(cls)}">' if cls else "<table>"]
    if caption:
        out.append(f"<caption>{_e(caption)}</caption>")
    out.append("<thead><tr>")
    for h, num in zip(t.headers, t.numeric, strict=True):
        classes = (["num"] if num else []) + (["nw"] if len(h) <= 8 else [])
        cls_attr = f' class="{" ".join(classes)}"' if classes else ""
        out.append(f'<th scope="col"{cls_attr}>{_e(h)}</th>')
    out.append("</tr></thead><tbody>")
    for row, hl in zip(t.rows, t.highlight, strict=True):
        out.append('<tr class="hl">' if hl else "<tr>")
        for i, (cell, num) in enumerate(zip(row, t.numeric, strict=True)):
            if i in t.badge_cols:
                out.append(f"<td>{_html_badge('negative_asymmetric_payoff', cell)}</td>")
            elif num:
                out.append(f'<td class="num">{_e(cell)}</td>')
            elif len(cell) > 60:
                out.append(f'<td class="wide">{_e(cell)}</td>')
            elif len(cell) <= 32:
                out.append(f'<td class="nw">{_e(cell)}</td>')
            else:
                out.append(f"<td>{_e(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html_figures(figures: Sequence[FigureInfo]) -> str:
    """Each figure embedded as a data URI, with its title and caption."""
    parts = []
    for f in figures:
        parts.append("<figure>")
        parts.append(f"<h3>{_e(f.title)}</h3>")
        parts.append(f'<img id="{_e(f.html_id)}" src="{_data_uri(f.path)}" alt="{_e(f.title)}">')
        if f.caption:
            parts.append(f"<figcaption>{_e(f.caption)}</figcaption>")
        parts.append("</figure>")
    return "\n".join(parts)


def render_html(
    tables: AuditTables,
    spec: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    figures: Sequence[FigureInfo] = (),
    security: Any = None,
    security_figures: Sequence[FigureInfo] = (),
) -> str:
    """The self-contained HTML report as a string (figures read from their paths and embedded)."""
    meta = dict(meta or {})
    title = _title(meta)
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>\n{CSS}\n</style>",
        "</head>",
        "<body>",
        "<main>",
        '<header class="top">',
        f"<h1>{_e(title)}</h1>",
        f"<p>{_e(_subtitle(meta))}</p>",
        "</header>",
    ]

    # verdicts first
    parts.append('<section id="verdicts" aria-labelledby="verdicts-h">')
    parts.append('<h2 id="verdicts-h">Verdicts</h2>')
    for line in _statistics_lines(tables):
        parts.append(f'<p class="note">{_e(line)}</p>')
    if tables.verdicts:
        parts.append('<div class="verdict-grid">')
        for v in tables.verdicts:
            parts.append('<article class="verdict">')
            parts.append(f"<h3>{_e(_verdict_title(v))}</h3>")
            parts.append('<dl class="badges">')
            for field, label in _VERDICT_FIELDS:
                parts.append(f"<dt>{_e(label)}</dt><dd>{_html_badge(field, getattr(v, field, None))}</dd>")
            parts.append("</dl>")
            sentences = [s for s in (v.sentences or []) if not _missing(s)]
            if sentences:
                parts.append("<ul>" + "".join(f"<li>{_e(s)}</li>" for s in sentences) + "</ul>")
            parts.append("</article>")
        parts.append("</div>")
        parts.append(
            '<p class="legend">'
            '<span class="badge yes">yes</span> supported by the data · '
            '<span class="badge warn">yes</span> the students copy the teacher\'s errors (for the payoff: more '
            'than its correct answers) · <span class="badge no">no</span> not supported · '
            '<span class="badge nt">not testable</span> not enough data to decide</p>'
        )
    else:
        parts.append('<p class="note">No verdicts: no distillation condition could be compared with the control.</p>')
    parts.append("</section>")

    facts = _facts(meta, tables)
    if facts:
        parts.append('<section id="setup"><h2>Setup</h2><dl class="facts">')
        for label, value in facts:
            parts.append(f'<div class="fact"><dt>{_e(label)}</dt><dd>{_e(value)}</dd></div>')
        parts.append("</dl></section>")

    summary = _summary_table(tables.summary)
    parts.append('<section id="summary"><h2>Summary</h2>')
    parts.append(
        '<p class="note">Mean ± SEM over seeds of each student group, measured against the teacher on the test set.</p>'
    )
    parts.append(_html_table(summary) if summary else '<p class="note">No summary available.</p>')
    parts.append("</section>")

    transfer = _transfer_table(tables.transfer)
    parts.append('<section id="transfer"><h2>Transfer</h2>')
    parts.append(
        '<p class="note">Δ+ / Δ−: change in agreement with the teacher relative to SIDDO '
        "where the teacher is right / wrong; h± the same as a share of the room the "
        "control left; h− − h+: the asymmetry (H4); p: the primary tests' adjusted p of negative "
        "transfer (H3) and asymmetry (H4). Highlighted rows show a negative asymmetric payoff.</p>"
    )
    parts.append(_html_table(transfer) if transfer else '<p class="note">No transfer table available.</p>')
    parts.append("</section>")

    if security is not None:
        parts.append('<section id="security"><h2>Security</h2>')
        parts.append("<ul>" + "".join(f"<li>{_e(s)}</li>" for s in security.sentences) + "</ul>")
        if _backdoor_case(security):
            parts.append(f'<p class="note">{_e(_backdoor_case(security))}</p>')
        sec_table = _security_table(security)
        if sec_table:
            parts.append(
                '<p class="note">Mean ± SEM over seeds. adv_fooled / adv_follows / adv_accuracy: '
                "on the teacher's transferable adversarial examples (teacher right on the clean "
                "input, fooled on the adversarial one), the share that fools the student (also "
                "where it was already wrong on the clean input), on which it outputs the "
                "teacher's adversarial label, and its accuracy; adv_flipped: among those "
                "transferable examples the student gets right on the clean input, the share it "
                "gets wrong on the adversarial one (n/a if it is right on none); "
                "whitebox_accuracy: the model's accuracy under the same attack crafted on "
                "itself; backdoor_asr: share of triggered test inputs (true class not the "
                "target) classified as the target.</p>"
            )
            parts.append(_html_table(sec_table))
        sec_tests = _tests_tables(security.tests)
        for label, t, _ in sec_tests:
            n_sig = sum(t.highlight)
            parts.append(
                f'<details class="tests"><summary>Security tests: {_e(label)} '
                f'<span class="count">{len(t.rows)} tests · {n_sig} significant</span></summary>'
            )
            parts.append(_html_table(t))
            parts.append("</details>")
        if security_figures:
            parts.append('<div class="figures">' + _html_figures(security_figures) + "</div>")
        parts.append("</section>")

    parts.append('<section id="tests"><h2>Significance tests</h2>')
    tests = _tests_tables(tables.tests)
    if tests:
        parts.append(f'<p class="note">{_e(_TESTS_NOTE)}</p>')
        for label, t, is_open in tests:
            n_sig = sum(t.highlight)
            count = f"{len(t.rows)} test{'s' if len(t.rows) != 1 else ''} · {n_sig} significant"
            parts.append(
                f'<details class="tests"{" open" if is_open else ""}><summary>{_e(label)} '
                f'<span class="count">{_e(count)}</span></summary>'
            )
            parts.append(_html_table(t))
            parts.append("</details>")
    else:
        parts.append('<p class="note">No tests available.</p>')
    parts.append("</section>")

    if figures:
        parts.append('<section id="figures"><h2>Figures</h2><div class="figures">')
        parts.append(_html_figures(figures))
        parts.append("</div></section>")

    parts.append('<section id="how-to-read"><h2>How to read this report</h2><dl class="read">')
    for term, text in HOW_TO_READ:
        parts.append(f"<dt>{_e(term)}</dt><dd>{_e(text)}</dd>")
    parts.append("</dl></section>")

    spec_text = _spec_text(spec)
    if spec_text:
        parts.append(
            '<section id="spec"><h2>Specification</h2><details><summary>Resolved '
            f"specification</summary><pre>{_e(spec_text)}</pre></details></section>"
        )

    parts.append(f"<footer>{_e(_footer(meta))}</footer>")
    parts += ["</main>", "</body>", "</html>", ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#$])")


def _m(s: Any) -> str:
    """Markdown-safe inline text: HTML-escaped, Markdown specials backslash-escaped, one line."""
    text = " ".join(str(s).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def _md_table(t: Table) -> str:
    lines = [
        "| " + " | ".join(_m(h) for h in t.headers) + " |",
        "| " + " | ".join("---:" if n else "---" for n in t.numeric) + " |",
    ]
    for row, hl in zip(t.rows, t.highlight, strict=True):
        cells = [_m(c) for c in row]
        if hl and cells:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md_badge(value: Any) -> str:
    text = DASH if _missing(value) else str(value)
    s = text.strip().lower()
    if s == "yes":
        return f"**{_m(text)}**"
    if s == "no":
        return _m(text)
    return f"*{_m(text)}*"


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(
    tables: AuditTables,
    spec: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    figures: Sequence[FigureInfo] = (),
    security: Any = None,
    security_figures: Sequence[FigureInfo] = (),
) -> str:
    """The Markdown report; figures are linked as ``figures/NAME.png``."""
    meta = dict(meta or {})
    out: list[str] = [f"# {_m(_title(meta))}", "", _m(_subtitle(meta)), "", "## Verdicts", ""]
    for line in _statistics_lines(tables):
        out += [_m(line), ""]
    if tables.verdicts:
        for v in tables.verdicts:
            out += [f"### {_m(_verdict_title(v))}", ""]
            out += [
                "| " + " | ".join(_m(label) for _, label in _VERDICT_FIELDS) + " |",
                "| " + " | ".join("---" for _ in _VERDICT_FIELDS) + " |",
                "| " + " | ".join(_md_badge(getattr(v, f, None)) for f, _ in _VERDICT_FIELDS) + " |",
                "",
            ]
            sentences = [s for s in (v.sentences or []) if not _missing(s)]
            out += [f"- {_m(s)}" for s in sentences]
            if sentences:
                out.append("")
    else:
        out += ["No verdicts: no distillation condition could be compared with the control.", ""]

    facts = _facts(meta, tables)
    if facts:
        out += ["## Setup", ""]
        out += [f"- **{_m(label)}:** {_m(value)}" for label, value in facts]
        out.append("")

    out += [
        "## Summary",
        "",
        "Mean ± SEM over seeds of each student group, measured against the teacher on the test set.",
        "",
    ]
    summary = _summary_table(tables.summary)
    out += [_md_table(summary) if summary else "No summary available.", ""]

    out += [
        "## Transfer",
        "",
        "Δ+ / Δ−: change in agreement with the teacher relative to SIDDO where the teacher is "
        "right / wrong; h± the same as a share of the room the control left; h− − h+: the asymmetry "
        "(H4); p: the primary tests' adjusted p of negative transfer (H3) and asymmetry (H4). Rows in "
        "bold show a negative asymmetric payoff.",
        "",
    ]
    transfer = _transfer_table(tables.transfer)
    out += [_md_table(transfer) if transfer else "No transfer table available.", ""]

    if security is not None:
        out += ["## Security", ""]
        out += [f"- {_m(s)}" for s in security.sentences] + [""]
        if _backdoor_case(security):
            out += [_m(_backdoor_case(security)), ""]
        sec_table = _security_table(security)
        if sec_table:
            out += ["Mean ± SEM over seeds (see the HTML report for the definitions).", "", _md_table(sec_table), ""]
        for f in security_figures:
            out += [f"![{_m(f.title)}](figures/{f.path.name})", ""]

    out += ["## Significance tests", ""]
    tests = _tests_tables(tables.tests)
    if tests:
        out += [_TESTS_NOTE + " Significant rows are in bold.", ""]
        for label, t, _ in tests:
            out += [f"### {_m(label)}", "", _md_table(t), ""]
    else:
        out += ["No tests available.", ""]

    if figures:
        out += ["## Figures", ""]
        for f in figures:
            out += [f"### {_m(f.title)}", "", f"![{_m(f.title)}](figures/{f.path.name})", ""]
            if f.caption:
                out += [f"*{_m(f.caption)}*", ""]

    out += ["## How to read this report", ""]
    for term, text in HOW_TO_READ:
        out += [f"**{_m(term)}.** {_m(text)}", ""]

    spec_text = _spec_text(spec)
    if spec_text:
        fence = _fence(spec_text)
        out += ["## Specification", "", f"{fence}yaml", spec_text, fence, ""]

    out += ["---", "", _m(_footer(meta)), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
def _backdoor_case(security: Any) -> str:
    """Which backdoor case was audited: the clean transfer set, or ``transfer_poison`` = r with n
    triggered samples (empty without a backdoor)."""
    t = (getattr(security, "meta", None) or {}).get("backdoor", {}).get("transfer")
    if not t:
        return ""
    if t.get("case") != "transfer_poison":
        return "Backdoor case audited: clean transfer set (the students never see a triggered input in training)."
    return (
        f"Backdoor case audited: poisoned transfer set, transfer_poison = {float(t['transfer_poison']):g} "
        f"({t['n_triggered']} of {t['n_train']} training inputs carry the trigger, true labels kept; the KD "
        "targets on them are the teacher's outputs on the triggered inputs)."
    )


def _security_caption(stem: str, meta: Mapping[str, Any]) -> str:
    t = (meta or {}).get("backdoor", {}).get("transfer") or {}
    transfer = (
        "distilled on a transfer set with a transfer_poison share of triggered inputs"
        if t.get("case") == "transfer_poison"
        else "distilled on clean data"
    )
    return _SECURITY_CAPTIONS.get(stem, "").replace("{transfer}", transfer)


def _security_table(security: Any) -> Table | None:
    """Mean ± SEM of every security metric per group (teacher first)."""
    summary = getattr(security, "summary", None)
    if summary is None or len(summary) == 0:
        return None
    metrics = [c[:-5] for c in summary.columns if c.endswith("_mean")]
    headers = ["condition", "α", "n"] + metrics
    rows = []
    for _, r in summary.iterrows():
        rows.append(
            [str(r["condition"]), fmt_alpha(r["alpha"]) if r["condition"] != "teacher" else "—", fmt_int(r["n"])]
            + [fmt_mean_sem(r[f"{m}_mean"], r[f"{m}_sem"]) for m in metrics]
        )
    return Table(
        headers=headers, numeric=[False, True, True] + [True] * len(metrics), rows=rows, highlight=[False] * len(rows)
    )


def write_report(
    out_dir: Path | str,
    tables: AuditTables,
    spec: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
    security: Any = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` into ``out_dir``.

    ``meta`` may hold title, setup, dataset, model, n_train, n_test, teacher_accuracy,
    n_teacher_wrong, n_models, wall_time_s, precision, kdaudit_version, torch_version and
    created; missing keys are left out of the report. ``spec`` (the resolved spec) is shown
    in an appendix. Returns the written paths by name: ``"report.md"``, ``"report.html"`` and
    ``"figures/<NAME>.png"`` for each figure.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig_paths = write_figures(out, tables)
    infos = figure_info(fig_paths)
    sec_infos: list[FigureInfo] = []
    if security is not None:
        from .security_figures import write_security_figures

        sec_paths = write_security_figures(security.runs, security.meta, out)
        fig_paths = list(fig_paths) + sec_paths
        sec_infos = [
            FigureInfo(p.stem, p, _SECURITY_TITLES.get(p.stem, p.stem), _security_caption(p.stem, security.meta))
            for p in sec_paths
        ]
    md_path = out / "report.md"
    html_path = out / "report.html"
    md_path.write_text(render_markdown(tables, spec, meta, infos, security, sec_infos), encoding="utf-8")
    html_path.write_text(render_html(tables, spec, meta, infos, security, sec_infos), encoding="utf-8")
    written: dict[str, Path] = {"report.md": md_path, "report.html": html_path}
    for p in fig_paths:
        written[f"figures/{Path(p).name}"] = Path(p)
    return written
