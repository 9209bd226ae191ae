"""The words of the audit report: figure titles and captions, section notes, the terms at their
first use, the glossary ("How to read this report"), the citation, titles and footer.

Everything here is plain text; the renderers escape it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kdaudit.analysis import catalogue
from kdaudit.analysis.audit import AuditTables, Verdict
from kdaudit.report.document import FigureInfo
from kdaudit.report.formatting import fmt_alpha, missing, number

__all__ = [
    "BIBTEX",
    "CITE_NOTE",
    "NO_COMMAND",
    "REPRODUCE_NOTE",
    "FIDELITY_NOTE",
    "HOW_TO_READ",
    "TERMS",
    "NO_VERDICTS",
    "SECURITY_NOTE",
    "SECURITY_NOTE_MARKDOWN",
    "SECURITY_TITLES",
    "SUMMARY_NOTE",
    "SWEEP_CAPTIONS",
    "TESTS_NOTE",
    "TRANSFER_NOTE",
    "TRANSFER_NOTE_MARKDOWN",
    "backdoor_case",
    "compression_note",
    "comparison_label",
    "figure_info",
    "footer",
    "security_caption",
    "security_figure_info",
    "statistics_lines",
    "subtitle",
    "title",
    "verdict_title",
]

TERMS = (
    "Terms: SIDDO (Same Initialisation, Different Data Order) is the control: students from the teacher's "
    "initialisation trained on the labels alone, in another data order. RCD (random control distillation) and LS "
    "(label smoothing) give the KD loss a teacher without knowledge: random noise or smoothed labels. 𝒞 / 𝒲 are "
    "the test samples the teacher gets right / wrong. Δ+ / Δ− is the change in agreement with the teacher on 𝒞 / "
    "𝒲 against SIDDO, in percentage points; h+ / h− the same as a share (0–1) of the headroom SIDDO left there, "
    "and h− − h+ their asymmetry."
)
"""The terms of the verdicts, explained where they first appear (before the verdict cards)."""

NO_VERDICTS = "No verdicts: no distillation condition could be compared with the control."
SUMMARY_NOTE = (
    "Mean ± SEM over seeds of each student group, measured against the teacher on the test set. Accuracy and "
    "agreement in %; JS divergence in nats; activation distance the L2 distance of the probability vectors."
)
_TRANSFER_NOTE = (
    "Δ+ / Δ−: change in agreement with the teacher relative to SIDDO on 𝒞 / 𝒲, in percentage points; h± the same "
    "as a share (0–1) of the headroom the control left; h− − h+: the asymmetry (H4); Δ− − Δ+: the raw-points "
    "reading; p: the primary tests' adjusted p of negative transfer (H3) and asymmetry (H4). ★ marks the reading "
    "that decides the negative asymmetric payoff under this audit's standard."
)
TRANSFER_NOTE = _TRANSFER_NOTE + " Highlighted rows show a negative asymmetric payoff."
TRANSFER_NOTE_MARKDOWN = _TRANSFER_NOTE + " Rows in bold show a negative asymmetric payoff."
SECURITY_NOTE = (
    "Mean ± SEM over seeds. adv_fooled / adv_follows / adv_accuracy: on the teacher's transferable adversarial "
    "examples (teacher right on the clean input, fooled on the adversarial one), the share that fools the student "
    "(also where it was already wrong on the clean input), on which it outputs the teacher's adversarial label, and "
    "its accuracy; adv_flipped: among those transferable examples the student gets right on the clean input, the "
    "share it gets wrong on the adversarial one (n/a if it is right on none); whitebox_accuracy: the model's "
    "accuracy under the same attack crafted on itself; backdoor_asr: share of triggered test inputs (true class not "
    "the target) classified as the target."
)
SECURITY_NOTE_MARKDOWN = "Mean ± SEM over seeds (see the HTML report for the definitions)."


def statistics_lines(tables: AuditTables) -> list[str]:
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


def verdict_title(v: Verdict) -> str:
    """The heading of a verdict: condition and α."""
    return f"{v.condition} · α = {fmt_alpha(v.alpha)}"


def comparison_label(comp: str) -> str:
    """The title of the tests of one comparison (``vs_siddo``, ``vs_rcd-uniform``, ...)."""
    if comp == "vs_siddo":
        return "Against the SIDDO control (same initialisation, CE only)"
    if comp.startswith("vs_rcd-"):
        kind = comp[len("vs_rcd-") :]
        return f"Against random control distillation ({kind} noise) at the same α"
    if comp.startswith("vs_"):
        return f"Against {comp[3:]}"
    return comp


TESTS_NOTE = (
    "Two-sided tests on the per-seed values: Mann–Whitney U, or the Wilcoxon signed-rank test by seed in the "
    "paired comparisons; p-values exact without ties, by permutation with ties. “Mean ± SEM” is the group named in "
    "the row, “reference” the group it is compared with; the difference is mean − reference mean with its 95 % "
    "bootstrap interval, r the rank-biserial effect (positive: the row's group ranks higher). Metrics marked (%) "
    "are shown in percent, their differences in percentage points. The primary tests decide the verdicts and are "
    "corrected together; every other table is exploratory, corrected within its own family. Open a table to see "
    "its rows."
)

FIDELITY_NOTE = (
    "Fidelity to the teacher against the predecessor paper's bar: a group clears it when its mean agreement is at "
    "least 95 %, 1 − JS/ln 2 at least 0.95 and 1 − AD/√2 at least 0.95 (JS: Jensen–Shannon divergence, AD: "
    "activation distance). SIDDO, trained without the teacher, is shown beside the distilled students: where it "
    "clears the bar too, clearing it says nothing about distillation."
)


def compression_note(meta: Mapping[str, Any]) -> str:
    """When the student is smaller than the teacher: the bar then reads as compression. Empty otherwise."""
    s, t = number(meta.get("student_params")), number(meta.get("teacher_params"))
    if s is None or t is None or not s < t:
        return ""
    return (
        f"The student ({int(s):,} parameters) is smaller than the teacher ({int(t):,}): a student that clears the "
        "fidelity bar compresses the teacher in the predecessor paper's sense."
    )


_DECIDES = {
    "kdaudit": "Under kdaudit's standard the asymmetry h− − h+ decides the payoff (tested against SIDDO's own "
    "spread), so the h± panel is marked ★ and shows h− − h+ above each group.",
    "paper": "Under the paper's standard Δ− > Δ+ in points decides the payoff, so the Δ± panel is marked ★ and "
    "shows Δ− − Δ+ above each group.",
}
_FIGURES: dict[str, tuple[str, str]] = {
    "transfer_deltas": (
        "Δ± and h± against the SIDDO control",
        "Change in agreement with the teacher relative to the SIDDO control, in percentage points: Δ+ on the test "
        "samples the teacher gets right (𝒞), Δ− on those it gets wrong (𝒲); beside it h± (0–1), the same change as "
        "a share of the headroom SIDDO left. Error bars: SEM of the difference, √(SEM_X² + SEM_SIDDO²), from the "
        "per-seed values. {decides} A ★ after a group's value marks a negative asymmetric payoff.",
    ),
    "accuracy_vs_agreement": (
        "Accuracy vs agreement",
        "One point per student: agreement with the teacher (x, %) against test accuracy "
        "(y, %); colour = condition, marker = α. The dashed line is the teacher's accuracy.",
    ),
}
_DIST_CAPTION = (
    "Each point is one student (one seed); the boxes span the quartiles, with the "
    "median as a line and whiskers to 1.5 × IQR, for groups with at least two seeds."
)


def _dist_caption(metric: str) -> str:
    """The per-seed caption with the metric's unit: shares in %, the others in their own unit."""
    unit = catalogue.metric(metric).unit
    return _DIST_CAPTION + (" Shares in %." if unit == "fraction" else f" In {unit}.")


def _figure(p: Path, standard: str) -> FigureInfo:
    name = p.stem
    if name in _FIGURES:
        title, caption = _FIGURES[name]
        return FigureInfo(name, p, title, caption.replace("{decides}", _DECIDES.get(standard, _DECIDES["kdaudit"])))
    if name.startswith("dist_"):
        metric = name[len("dist_") :]
        return FigureInfo(name, p, f"Per-seed values: {catalogue.label(metric)}", _dist_caption(metric))
    return FigureInfo(name, p, name.replace("_", " "), "")


def figure_info(paths: Iterable[Path], standard: str = "kdaudit") -> list[FigureInfo]:
    """Titles and captions of the figure files written by :mod:`kdaudit.report.figures`,
    in report order: Δ±, accuracy vs agreement, then the per-metric distributions; ``standard``
    names the reading that decides the payoff in the Δ± caption."""
    infos = [_figure(Path(p), standard) for p in paths]
    rank = {"transfer_deltas": 0, "accuracy_vs_agreement": 1}
    return sorted(infos, key=lambda f: rank.get(f.name, 2))  # stable: keeps metric order


def security_figure_info(paths: Iterable[Path], meta: Mapping[str, Any]) -> list[FigureInfo]:
    """Titles and captions of the security figures (:mod:`kdaudit.report.security_figures`)."""
    return [FigureInfo(p.stem, p, SECURITY_TITLES.get(p.stem, p.stem), security_caption(p.stem, meta)) for p in paths]


SECURITY_TITLES = {
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
        "The share of test samples on which the student predicts the same class as the teacher, in % "
        "(100 % = always). Prediction disagreement is 1 − agreement.",
    ),
    (
        "JS divergence and activation distance",
        "How far the student's predicted probabilities are from the teacher's, sample by sample: "
        "the Jensen–Shannon divergence (0 = identical, at most ln 2 ≈ 0.693) and the Euclidean "
        "distance between the probability vectors (0 = identical, at most √2). Lower means closer "
        "to the teacher.",
    ),
    (
        "Agreement where the teacher is right / wrong (𝒞 / 𝒲)",
        "Agreement computed separately on the test samples the teacher classifies correctly (𝒞) and on "
        "those it gets wrong (𝒲). On the wrong ones, agreeing means repeating the teacher's mistake.",
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
        "does is regularisation. KD is beyond regularisation only if it beats every such control.",
    ),
    (
        "LS (label smoothing)",
        "The KD loss with a virtual teacher that puts most of its probability on the true class and "
        "spreads the rest evenly: a teacher without knowledge of the task beyond the labels, at the same α.",
    ),
    (
        "Δ+, Δ− and h±",
        "Δ+ is how much more the KD students agree with the teacher than the SIDDO students on "
        "the samples the teacher gets right (𝒞), in percentage points; Δ− the same on the samples it "
        "gets wrong (𝒲). Because the control leaves less room to improve where the teacher is right, "
        "h± divides each Δ by the room the control left (1 − its agreement): the share (0–1) of the "
        "gap that KD closed.",
    ),
    (
        "Negative asymmetric payoff",
        "Said of a condition when the students copy the teacher's errors significantly (negative "
        "transfer: agreement on 𝒲 above SIDDO's) and more than its correct answers: under kdaudit's "
        "standard h− − h+ above SIDDO's own spread, under the paper's Δ− > Δ+ in points. KD then "
        "passes on mistakes more readily than knowledge.",
    ),
    (
        "Fidelity ≥ 0.95 bar",
        "The predecessor paper's bar of fidelity to the teacher: mean agreement ≥ 95 %, "
        "1 − JS/ln 2 ≥ 0.95 and 1 − activation distance/√2 ≥ 0.95. It is shown for SIDDO as well: "
        "students trained without the teacher can clear it too.",
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

BIBTEX = """@article{masonwilliams2025rethinking,
  title={Rethinking Knowledge Distillation: A Data Dependent Regulariser With a Negative Asymmetric Payoff},
  author={Mason-Williams, Israel and Mason-Williams, Gabryel and Yannakoudakis, Helen},
  journal={arXiv preprint arXiv:2510.12615},
  year={2025}
}"""
"""The method's citation."""

REPRODUCE_NOTE = (
    "Run again with the kdaudit, PyTorch, Python and NumPy versions below, it trains the models from the same "
    "seeds; the resolved specification below is spec.yaml of the audit directory, identified by its hash."
)
NO_COMMAND = (
    "The command line was not recorded (the audit was started from Python, not from the kdaudit command); "
    "the resolved specification below, spec.yaml of the audit directory, reproduces it."
)
CITE_NOTE = "If you use these results, cite the method:"


def title(meta: Mapping[str, Any]) -> str:
    """The report's title: ``meta["title"]``, else one naming the setup."""
    if not missing(meta.get("title")):
        return str(meta["title"])
    if not missing(meta.get("setup")):
        return f"kdaudit report — {meta['setup']}"
    return "kdaudit report"


def subtitle(meta: Mapping[str, Any]) -> str:
    """The line under the title: dataset and model."""
    parts = [str(meta[k]) for k in ("dataset", "model") if not missing(meta.get(k))]
    lead = "Functional audit of knowledge distillation"
    return lead + (": " + " · ".join(parts) if parts else "")


def footer(meta: Mapping[str, Any]) -> str:
    """Which kdaudit wrote the report, and when."""
    text = "Generated by kdaudit"
    if not missing(meta.get("kdaudit_version")):
        text += f" {meta['kdaudit_version']}"
    if not missing(meta.get("created")):
        text += f" on {meta['created']}"
    return text + "."


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def backdoor_case(security: Any) -> str:
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


def security_caption(stem: str, meta: Mapping[str, Any]) -> str:
    """The caption of a security figure, naming the backdoor case where it matters."""
    t = (meta or {}).get("backdoor", {}).get("transfer") or {}
    transfer = (
        "distilled on a transfer set with a transfer_poison share of triggered inputs"
        if t.get("case") == "transfer_poison"
        else "distilled on clean data"
    )
    return _SECURITY_CAPTIONS.get(stem, "").replace("{transfer}", transfer)


#: Titles and captions of the sweep's figures (:mod:`kdaudit.report.sweep_figures`), by file stem.
SWEEP_CAPTIONS: dict[str, tuple[str, str]] = {
    "sweep_metrics": (
        "Metrics across the sweep",
        "Mean ± SEM over seeds of every student metric at each point, one line per "
        "condition and α; the dashed line is the teacher.",
    ),
    "sweep_transfer": (
        "Δ+ and Δ− across the sweep",
        "Change in agreement with the teacher relative to SIDDO where the teacher is "
        "right (Δ+) and wrong (Δ−); error bars √(SEM_X² + SEM_SIDDO²).",
    ),
    "scaling": (
        "Scaling with the student's size",
        "Mean ± SEM of the student loss and agreement against the number of student "
        "parameters N (log–log), with the fitted power laws a·N^b.",
    ),
    "teacher_loss": (
        "Transfer against the teacher's loss",
        "Δ+ and Δ− of each point against its teacher's test loss (± SEM).",
    ),
}
