"""Tables of a sweep: one audit per value of one or more swept spec fields.

:func:`build_sweep_tables` takes one :class:`SweepPoint` per audit and returns
:class:`SweepTables`:

- ``metrics``: per (point, condition, α, metric) the number of finite per-seed values, their mean
  and SEM, for every per-student metric of :func:`~kdaudit.analysis.catalogue.tested_metrics`; plus
  ``teacher`` rows (accuracy and loss, n = 1, SEM NaN). One column per swept path holds the
  point's value of that path.
- ``transfer``: each point's transfer.csv (conditions other than siddo) with the SEM of Δ±,
  √(SEM_X² + SEM_siddo²) from the per-seed conditional agreements, and the teacher's loss.
- ``scaling`` (≥ 3 distinct student sizes): power laws value = a·N^b of the per-seed student
  loss and agreement against the student's parameter count N, per (condition, α).
- ``trend`` (≥ 3 distinct teacher losses): Spearman correlations of Δ+, Δ− and h− − h+ with the
  teacher's test loss, per (condition other than siddo, α), over points and over seeds.
- ``sentences``: the findings in plain words.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats as sps

from ..errors import InputError
from .audit import CONTROL, TRANSFER_COLUMNS, _prepare, display_name, is_rcd
from .catalogue import tested_metrics
from .exact import spearman_test
from .stats import mean_sem
from .transfer import format_p

__all__ = [
    "PowerLawFit",
    "SweepPoint",
    "SweepTables",
    "TrendResult",
    "build_sweep_tables",
    "group_name",
    "power_law_fit",
    "sweep_axis",
    "swept_paths",
    "trend_test",
]

SCALING_COLUMNS = ["condition", "alpha", "quantity", "exponent", "exponent_se", "prefactor", "r2", "n"]
TREND_COLUMNS = [
    "condition",
    "alpha",
    "quantity",
    "rho",
    "p_value",
    "n_points",
    "rho_seeds",
    "p_seeds",
    "n_seeds",
    "significant",
]
_TRANSFER_STATS = [
    "delta_pos",
    "sem_pos",
    "delta_neg",
    "sem_neg",
    "h_pos",
    "h_neg",
    "p_pos",
    "p_neg",
    "negative_asymmetric_payoff",
]
_FIXED = {"point", "condition", "alpha", "metric", "n", "mean", "sem", "teacher_loss", *_TRANSFER_STATS}
_CONDITIONAL = {"pos": "agreement_teacher_correct", "neg": "agreement_teacher_wrong"}
_DELTA_NAMES = {"delta_pos": "Δ+", "delta_neg": "Δ−", "h_gap": "h− − h+"}


@dataclass
class SweepPoint:
    """One audit of a sweep: its swept values, its tables and the sizes of its models."""

    label: str
    values: dict[str, Any]
    runs: pd.DataFrame
    transfer: pd.DataFrame
    teacher_loss: float
    teacher_accuracy: float
    student_params: int
    teacher_params: int
    path: str


@dataclass(frozen=True)
class PowerLawFit:
    """y = prefactor · x^exponent, fitted by least squares of log y on log x."""

    exponent: float
    exponent_se: float
    prefactor: float
    r2: float
    n: int


@dataclass(frozen=True)
class TrendResult:
    """Spearman's rank correlation of two samples."""

    rho: float
    p_value: float
    n: int


@dataclass
class SweepTables:
    swept: list[str]
    metrics: pd.DataFrame
    transfer: pd.DataFrame
    scaling: pd.DataFrame
    trend: pd.DataFrame
    sentences: list[str] = field(default_factory=list)


def _pairs(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of ``x`` and ``y`` where both are finite."""
    try:
        xa = np.asarray(x, dtype=np.float64).reshape(-1)
        ya = np.asarray(y, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise InputError("x, y: values must be numbers") from None
    if xa.size != ya.size:
        raise InputError(f"x, y: need samples of equal length, got {xa.size} and {ya.size}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep]


def power_law_fit(x: ArrayLike, y: ArrayLike) -> PowerLawFit:
    """Fit y = a·x^b by least squares of log y on log x (:func:`scipy.stats.linregress`).

    Non-finite and non-positive pairs are dropped; with fewer than 3 distinct x the fit is NaN.
    ``exponent_se`` is the slope's standard error, ``r2`` the squared correlation on the logs.
    """
    xa, ya = _pairs(x, y)
    keep = (xa > 0) & (ya > 0)
    xa, ya = xa[keep], ya[keep]
    if np.unique(xa).size < 3:
        return PowerLawFit(math.nan, math.nan, math.nan, math.nan, int(xa.size))
    res = sps.linregress(np.log(xa), np.log(ya))
    return PowerLawFit(
        float(res.slope), float(res.stderr), float(math.exp(res.intercept)), float(res.rvalue) ** 2, int(xa.size)
    )


TREND_SEED = 0
"""Seed of the Monte-Carlo permutations of :func:`trend_test` (more than 9 pairs), so that the
tables are deterministic."""


def trend_test(x: ArrayLike, y: ArrayLike) -> TrendResult:
    """Spearman's ρ and its two-sided permutation p over the finite pairs.

    The p is :func:`kdaudit.analysis.exact.spearman_test` with ``method="auto"``: exact, by
    enumerating all n! orderings, for up to 9 pairs (3 points in perfect order give p = 1/3,
    where the t-approximation of :func:`scipy.stats.spearmanr` says 0); above, a Monte-Carlo of
    100,000 random permutations seeded with :data:`TREND_SEED`. NaN for fewer than 3 pairs or a
    constant sample.
    """
    xa, ya = _pairs(x, y)
    if xa.size < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return TrendResult(math.nan, math.nan, int(xa.size))
    rho, p = spearman_test(xa, ya, method="auto", seed=TREND_SEED)
    return TrendResult(rho, p.p, int(xa.size))


def swept_paths(points: Sequence[SweepPoint]) -> list[str]:
    """The swept spec paths, in order of first appearance."""
    return list(dict.fromkeys(k for p in points for k in p.values))


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def sweep_axis(points: Sequence[SweepPoint]) -> tuple[str | None, list[float]]:
    """The x axis of the sweep's figures: the first swept path whose values are numbers at
    every point, with those values; else ``None`` and the point positions 0, 1, …"""
    for path in swept_paths(points):
        if all(_is_number(p.values.get(path)) for p in points):
            return path, [float(p.values[path]) for p in points]
    return None, [float(i) for i in range(len(points))]


def _students(point: SweepPoint) -> pd.DataFrame:
    """The point's student rows with numeric metrics; siddo's α is 0."""
    try:
        st = _prepare(point.runs)
    except InputError as exc:
        raise InputError(f"sweep point {point.label!r}: {exc}") from None
    st.loc[st["condition"] == CONTROL, "alpha"] = 0.0
    return st


def _groups(students: pd.DataFrame) -> list[tuple[tuple[str, float], pd.DataFrame]]:
    """(condition, α) groups: siddo first, then by condition name and α."""
    groups = [((str(c), float(a)), g) for (c, a), g in students.groupby(["condition", "alpha"])]
    return sorted(groups, key=lambda kg: (kg[0][0] != CONTROL, kg[0][0], kg[0][1]))


def _select(students: pd.DataFrame, cond: str, alpha: float) -> pd.DataFrame:
    return students.loc[(students["condition"] == cond) & np.isclose(students["alpha"], alpha)]


def group_name(cond: str, alpha: float) -> str:
    """``SIDDO`` for the control, else e.g. ``KD α=0.9``."""
    return display_name(cond) if cond == CONTROL else f"{display_name(cond)} α={alpha:g}"


def _sig(v: float) -> str:
    """Two significant digits and at least two decimals (``-0.21``, ``0.0031``); NaN → ``n/a``."""
    if not math.isfinite(v):
        return "n/a"
    text = f"{v:.{min(6, max(2, 1 - math.floor(math.log10(abs(v))))) if v else 2}f}"
    return "0.00" if float(text) == 0 else text


def _p(p: float) -> str:
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def build_sweep_tables(points: Sequence[SweepPoint], level: float = 0.05) -> SweepTables:
    """Metrics, transfer, scaling and trend tables and sentences of a sweep (see the module doc)."""
    if not points:
        raise InputError("sweep: no points to analyse")
    if not 0.0 < level < 1.0:
        raise InputError(f"significance level must lie in (0, 1), got {level}")
    labels = [p.label for p in points]
    if len(set(labels)) != len(labels):
        raise InputError("sweep: point labels must be unique")
    paths = swept_paths(points)
    if clash := sorted(set(paths) & _FIXED):
        raise InputError(f"sweep: swept path(s) {', '.join(clash)} clash with table columns")
    students = {p.label: _students(p) for p in points}

    metric_rows: list[dict[str, Any]] = []
    transfer_rows: list[dict[str, Any]] = []
    for p in points:
        base = {"point": p.label, **{k: p.values.get(k, math.nan) for k in paths}}
        for metric, value in (("accuracy", p.teacher_accuracy), ("loss", p.teacher_loss)):
            metric_rows.append(
                {
                    **base,
                    "condition": "teacher",
                    "alpha": math.nan,
                    "metric": metric,
                    "n": 1,
                    "mean": float(value),
                    "sem": math.nan,
                }
            )
        st = students[p.label]
        for (cond, alpha), g in _groups(st):
            for metric in tested_metrics():
                v = g[metric].to_numpy(np.float64)
                mean, sem = mean_sem(v)
                metric_rows.append(
                    {
                        **base,
                        "condition": cond,
                        "alpha": alpha,
                        "metric": metric,
                        "n": int(np.isfinite(v).sum()),
                        "mean": mean,
                        "sem": sem,
                    }
                )
        missing = [c for c in TRANSFER_COLUMNS[:-1] if c not in p.transfer.columns]
        if missing:
            raise InputError(f"sweep point {p.label!r}: transfer table lacks {', '.join(missing)}")
        control = st.loc[st["condition"] == CONTROL]
        for _, r in p.transfer.iterrows():
            cond, alpha = str(r["condition"]), float(r["alpha"])
            if cond == CONTROL:
                continue
            g = _select(st, cond, alpha)
            row = {**base, "teacher_loss": float(p.teacher_loss), "condition": cond, "alpha": alpha}
            for key, metric in _CONDITIONAL.items():
                row[f"delta_{key}"] = float(r[f"delta_{key}"])
                row[f"sem_{key}"] = math.hypot(mean_sem(g[metric])[1], mean_sem(control[metric])[1])
            row.update({k: float(r[k]) for k in ("h_pos", "h_neg", "p_pos", "p_neg")})
            payoff = r["negative_asymmetric_payoff"]
            row["negative_asymmetric_payoff"] = "" if pd.isna(payoff) else str(payoff)
            transfer_rows.append(row)
    metrics = pd.DataFrame(
        metric_rows, columns=["point", *paths, "condition", "alpha", "metric", "n", "mean", "sem"]
    ).astype({"n": "int64"})
    transfer = pd.DataFrame(
        transfer_rows, columns=["point", *paths, "teacher_loss", "condition", "alpha", *_TRANSFER_STATS]
    )

    sentences = _axis_sentences(points, transfer)
    scaling, scaling_sentences = _scaling(points, students)
    trend, trend_sentences = _trend(points, students, transfer, level)
    return SweepTables(paths, metrics, transfer, scaling, trend, sentences + scaling_sentences + trend_sentences)


def _axis_sentences(points: Sequence[SweepPoint], transfer: pd.DataFrame) -> list[str]:
    """Δ± at the smallest and the largest swept value, when each value has one point."""
    path, xs = sweep_axis(points)
    if path is None or len(set(xs)) != len(xs) or len(xs) < 2 or transfer.empty:
        return []
    lo, hi = points[int(np.argmin(xs))].label, points[int(np.argmax(xs))].label
    out = []
    for (cond, alpha), g in transfer.groupby(["condition", "alpha"], sort=True):
        if is_rcd(cond) or not {lo, hi} <= set(g["point"]):
            continue
        a, b = g.set_index("point").loc[lo], g.set_index("point").loc[hi]
        out.append(
            f"Sweep: as {path} goes from {min(xs):g} to {max(xs):g}, {group_name(cond, alpha)}'s Δ− goes "
            f"from {100 * a['delta_neg']:+.1f} to {100 * b['delta_neg']:+.1f} points and Δ+ from "
            f"{100 * a['delta_pos']:+.1f} to {100 * b['delta_pos']:+.1f} points."
        )
    return out


def _scaling(points: Sequence[SweepPoint], students: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, list[str]]:
    sizes = sorted({int(p.student_params) for p in points})
    if len(sizes) < 3:
        return pd.DataFrame(columns=SCALING_COLUMNS), []
    every = pd.concat([students[p.label].assign(_n=float(p.student_params)) for p in points])
    rows: list[dict[str, Any]] = []
    for (cond, alpha), g in _groups(every):
        for quantity in ("loss", "agreement"):
            fit = power_law_fit(g["_n"], g[quantity])
            rows.append({"condition": cond, "alpha": alpha, "quantity": quantity, **asdict(fit)})
    table = pd.DataFrame(rows, columns=SCALING_COLUMNS).astype({"n": "int64"})
    sentences = [
        f"Scaling: N is the number of student parameters, from {sizes[0]:,} to {sizes[-1]:,} "
        f"over {len(points)} points; each exponent is the least-squares slope of log value on "
        "log N over all students (± its standard error)."
    ]
    fits = {(r.condition, r.alpha, r.quantity): r for r in table.itertuples()}
    for r in table.itertuples():
        if r.condition == CONTROL or is_rcd(r.condition) or not math.isfinite(r.exponent):
            continue
        text = (
            f"Scaling: {group_name(r.condition, r.alpha)} student {r.quantity} "
            f"∝ N^{_sig(r.exponent)} ± {_sig(r.exponent_se)}"
        )
        ref = [f for (c, _, q), f in fits.items() if c == CONTROL and q == r.quantity]
        if ref and math.isfinite(ref[0].exponent):
            text += f" (SIDDO {_sig(ref[0].exponent)} ± {_sig(ref[0].exponent_se)})"
        sentences.append(text + ".")
    return table, sentences


def _seed_deltas(
    points: Sequence[SweepPoint],
    students: dict[str, pd.DataFrame],
    cond: str,
    alpha: float,
    metric: str,
    against: str = CONTROL,
) -> tuple[list[float], list[float]]:
    """Per KD seed: (the point's teacher loss, its value minus the point's mean of ``against``:
    SIDDO, or a random control at the same α)."""
    xs: list[float] = []
    ys: list[float] = []
    for p in points:
        st = students[p.label]
        ref = st.loc[st["condition"] == CONTROL] if against == CONTROL else _select(st, against, alpha)
        ctrl = mean_sem(ref[metric])[0]
        vals = _select(st, cond, alpha)[metric].to_numpy(np.float64) - ctrl
        xs += [float(p.teacher_loss)] * vals.size
        ys += vals.tolist()
    return xs, ys


def _trend(
    points: Sequence[SweepPoint], students: dict[str, pd.DataFrame], transfer: pd.DataFrame, level: float
) -> tuple[pd.DataFrame, list[str]]:
    losses = np.asarray([p.teacher_loss for p in points], dtype=np.float64)
    losses = losses[np.isfinite(losses)]
    if np.unique(losses).size < 3 or transfer.empty:
        return pd.DataFrame(columns=TREND_COLUMNS), []
    rows: list[dict[str, Any]] = []
    sentences: list[str] = []
    for (cond, alpha), g in transfer.groupby(["condition", "alpha"], sort=True):
        for quantity in ("delta_pos", "delta_neg", "h_gap"):
            y = g["h_neg"] - g["h_pos"] if quantity == "h_gap" else g[quantity]
            pt = trend_test(g["teacher_loss"], y)
            seeds = TrendResult(math.nan, math.nan, 0)
            if quantity != "h_gap":
                seeds = trend_test(*_seed_deltas(points, students, cond, alpha, _CONDITIONAL[quantity[6:]]))
            use = seeds if math.isfinite(seeds.p_value) else pt
            significant = bool(math.isfinite(use.p_value) and use.p_value < level)
            rows.append(
                {
                    "condition": cond,
                    "alpha": alpha,
                    "quantity": quantity,
                    "rho": pt.rho,
                    "p_value": pt.p_value,
                    "n_points": pt.n,
                    "rho_seeds": seeds.rho,
                    "p_seeds": seeds.p_value,
                    "n_seeds": seeds.n,
                    "significant": significant,
                }
            )
            if is_rcd(cond) or quantity == "h_gap":
                continue
            head = (
                f"Teacher loss: as the teacher's test loss rises from {losses.min():.2f} to "
                f"{losses.max():.2f}, {group_name(cond, alpha)}'s {_DELTA_NAMES[quantity]}"
            )
            unit = "students" if use is seeds else "points"
            stat = f"(Spearman ρ = {use.rho:.2f}, {_p(use.p_value)} over {use.n} {unit})"
            if not math.isfinite(use.p_value):
                sentences.append(f"{head}: trend not testable.")
            elif significant:
                word = "rises" if use.rho > 0 else "falls"
                kind = "amplification" if use.rho > 0 else "attenuation"
                sentences.append(f"{head} {word} {stat}: significant {kind}.")
            else:
                sentences.append(f"{head} shows no significant trend {stat}.")
    rows_beyond, sentences_beyond = _trend_beyond_rcd(points, students, transfer, level)
    table = pd.DataFrame(rows + rows_beyond, columns=TREND_COLUMNS).astype(
        {"n_points": "int64", "n_seeds": "int64", "significant": "bool"}
    )
    return table, sentences + sentences_beyond


def _trend_beyond_rcd(
    points: Sequence[SweepPoint], students: dict[str, pd.DataFrame], transfer: pd.DataFrame, level: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """The teacher-loss trend of KD's Δ± minus a random control's (quantity ``delta_neg-rcd-uniform``…).

    A random control's Δ± moves with the teacher too, because the teacher's right / wrong split of
    the test set changes with its quality; only what KD adds on top of the control is the
    teacher's doing. Per seed: a KD student's conditional agreement minus the control's mean."""
    rows: list[dict[str, Any]] = []
    sentences: list[str] = []
    rcds = sorted({c for c in transfer["condition"] if is_rcd(c)})
    for (cond, alpha), g in transfer.groupby(["condition", "alpha"], sort=True):
        if is_rcd(cond):
            continue
        for rcd in rcds:
            r = transfer[(transfer["condition"] == rcd) & (transfer["alpha"] == alpha)]
            if r.empty:
                continue
            merged = g.merge(r[["point", "delta_pos", "delta_neg"]], on="point", suffixes=("", "_rcd"))
            for quantity in ("delta_pos", "delta_neg"):
                pt = trend_test(merged["teacher_loss"], merged[quantity] - merged[quantity + "_rcd"])
                seeds = trend_test(*_seed_deltas(points, students, cond, alpha, _CONDITIONAL[quantity[6:]], rcd))
                use = seeds if math.isfinite(seeds.p_value) else pt
                significant = bool(math.isfinite(use.p_value) and use.p_value < level)
                rows.append(
                    {
                        "condition": cond,
                        "alpha": alpha,
                        "quantity": f"{quantity}-{rcd}",
                        "rho": pt.rho,
                        "p_value": pt.p_value,
                        "n_points": pt.n,
                        "rho_seeds": seeds.rho,
                        "p_seeds": seeds.p_value,
                        "n_seeds": seeds.n,
                        "significant": significant,
                    }
                )
                if quantity != "delta_neg" or not math.isfinite(use.p_value):
                    continue
                stat = f"(Spearman ρ = {use.rho:.2f}, {_p(use.p_value)})"
                verdict = (
                    f"{'rises' if use.rho > 0 else 'falls'} significantly"
                    if significant
                    else "shows no significant trend"
                )
                sentences.append(
                    f"Beyond the random control: {group_name(cond, alpha)}'s Δ− minus "
                    f"{display_name(rcd)}'s {verdict} with the teacher's loss {stat}."
                )
    return rows, sentences
