"""The power table of the primary family, from simulated per-seed values (no training).

    python scripts/power_table.py [--sims N] [--out docs/statistics.md] [--seed S] [--jobs J]

Every group (SIDDO, and KD, RCD-uniform and RCD-gaussian at each of 3 α) is drawn from one
distribution per value: agreement ~ N(0.90, 0.01), agreement on the teacher-correct samples
~ N(0.95, 0.006), agreement on the teacher-wrong samples ~ N(0.35, 0.03), clipped to [0, 1],
seeds 1..n. A shift of δ moves the mean of one value of the KD group at the first α by δ SIDDO
standard deviations; the KD groups at the other α stay null. Each audit is decided by
:func:`kdaudit.analysis.hypotheses.decide` with the default design (Holm, method auto, level
0.05, both RCDs: a family of 12) unpaired and paired, without bootstrap intervals.

The share of audits with "yes" is reported for
  (a) knowledge transfer, KD's agreement shifted by δ;
  (b) negative transfer, KD's teacher-wrong agreement shifted by δ;
  (c) negative asymmetric payoff, the same audits as (b) (the teacher-correct agreement is not
      shifted),
and, with nothing shifted (δ = 0), the yes-rate of every verdict over every unit. A design
whose smallest attainable adjusted p is not below the level gives "not testable" for every
verdict whatever the data (checked on one audit) and is shown as n.t. without simulating.

The tables are printed and written into ``--out`` between the markers
``<!-- power-table:start -->`` and ``<!-- power-table:end -->`` (the file is created if absent).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kdaudit.analysis.hypotheses import VERDICT_KEYS, Design, Group, Unit, decide, smallest_adjusted_p
from kdaudit.analysis.simulate import ALPHAS, simulated_audit

START, END = "<!-- power-table:start -->", "<!-- power-table:end -->"
LEVEL = 0.05
DELTAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
SEEDS = (5, 6, 8, 10, 20)
DESIGNS = {"unpaired": False, "paired": True}
# scenario -> the KD value shifted at the first α (None: the null)
SCENARIOS = {"null": None, "agreement": "agreement", "wrong": "agreement_teacher_wrong"}
LABELS = {
    "knowledge_transfer": "knowledge transfer",
    "beyond_regularisation": "beyond regularisation",
    "negative_transfer": "negative transfer",
    "asymmetry": "asymmetry",
    "negative_asymmetric_payoff": "negative asymmetric payoff",
}


def audit(rng: np.random.Generator, n: int, metric: str | None, delta: float) -> tuple[Group, list[Unit]]:
    """SIDDO and KD at 3 α with both RCDs; ``metric`` of the KD group at the first α shifted by δ."""
    return simulated_audit(rng, n, len(ALPHAS), kd_shift={metric: delta} if metric else None, shifted_units=1)


def testable(n: int, paired: bool) -> bool:
    design = Design(paired=paired, bootstrap=0)
    m = 4 * len(ALPHAS)
    bound = smallest_adjusted_p(n, n, m, design)
    ctrl, units = audit(np.random.default_rng(0), n, None, 0.0)
    all_nt = all(v == "not testable" for d in decide(units, ctrl, design) for v in d.verdicts.values())
    if bound < design.level:
        return True
    assert all_nt, f"n = {n}, paired = {paired}: bound {bound} ≥ level but some verdict is testable"
    return False


def cell(job: tuple[str, int, str, float, int, np.random.SeedSequence]) -> tuple[tuple[Any, ...], dict[str, float]]:
    """One (design, seeds, scenario, δ): yes-rates of every verdict, of the first unit and of all units."""
    design_name, n, scenario, delta, sims, ss = job
    design = Design(paired=DESIGNS[design_name], bootstrap=0)
    rng = np.random.default_rng(ss)
    first = dict.fromkeys(VERDICT_KEYS, 0)
    every = dict.fromkeys(VERDICT_KEYS, 0)
    fw_any = 0
    for _ in range(sims):
        ctrl, units = audit(rng, n, SCENARIOS[scenario], delta)
        decisions = decide(units, ctrl, design)
        for k in VERDICT_KEYS:
            first[k] += decisions[0].verdicts[k] == "yes"
            every[k] += sum(d.verdicts[k] == "yes" for d in decisions)
        fw_any += any(v == "yes" for d in decisions for v in d.verdicts.values())
    out = {f"first:{k}": v / sims for k, v in first.items()}
    out.update({f"all:{k}": v / (sims * len(ALPHAS)) for k, v in every.items()})
    out["family_wise_any"] = fw_any / sims
    return (design_name, n, scenario, delta), out


def fmt(x: float | None) -> str:
    return "n.t." if x is None else f"{x:.3f}"


def table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render(res: dict[tuple[Any, ...], dict[str, float]], ok: dict[tuple[str, int], bool]) -> str:
    parts = []
    for design_name, paired in DESIGNS.items():
        test = "Wilcoxon signed-rank by seed" if paired else "Mann–Whitney U"
        parts.append(f"#### {design_name.capitalize()} ({test}, 3 α, both RCDs, Holm over 12 tests)\n")
        parts.append(
            "Null: the yes-rate of each verdict over all units (3 per audit), and the share of audits with any yes.\n"
        )
        rows = []
        for n in SEEDS:
            r = res.get((design_name, n, "null", 0.0)) if ok[(design_name, n)] else None
            rows.append([str(n)] + [fmt(r and r[f"all:{k}"]) for k in VERDICT_KEYS] + [fmt(r and r["family_wise_any"])])
        parts.append(table(rows, ["seeds"] + [LABELS[k] for k in VERDICT_KEYS] + ["any yes (family-wise)"]) + "\n")
        for title, scenario, verdict in (
            ("(a) knowledge transfer; KD's agreement shifted by δ", "agreement", "knowledge_transfer"),
            ("(b) negative transfer; KD's teacher-wrong agreement shifted by δ", "wrong", "negative_transfer"),
            (
                (
                    "(c) negative asymmetric payoff; KD's teacher-wrong agreement shifted by δ, teacher-correct "
                    "agreement unshifted (the audits of (b))"
                ),
                "wrong",
                "negative_asymmetric_payoff",
            ),
        ):
            parts.append(f"{title}: share of audits with yes at the shifted α (δ = 0: the null rate over all units).\n")
            rows = []
            for n in SEEDS:
                row = [str(n)]
                for delta in DELTAS:
                    if not ok[(design_name, n)]:
                        row.append(fmt(None))
                    elif delta == 0.0:
                        row.append(fmt(res[(design_name, n, "null", 0.0)][f"all:{verdict}"]))
                    else:
                        row.append(fmt(res[(design_name, n, scenario, delta)][f"first:{verdict}"]))
                rows.append(row)
            parts.append(table(rows, ["seeds"] + [f"δ = {d:g}" for d in DELTAS]) + "\n")
    return "\n".join(parts)


def write_block(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Statistics\n\n{START}\n{END}\n"
    if START not in text or END not in text or text.index(START) > text.index(END):
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}{START}\n{block}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sims", type=int, default=1000, help="simulated audits per cell (default 1000)")
    ap.add_argument("--out", type=Path, default=Path("docs/statistics.md"), help="the page to update")
    ap.add_argument("--seed", type=int, default=20240601, help="generator seed (default 20240601)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    args = ap.parse_args(argv)
    if args.sims < 1 or args.jobs < 1:
        ap.error("--sims and --jobs must be positive")

    start = time.perf_counter()
    ok = {(d, n): testable(n, p) for d, p in DESIGNS.items() for n in SEEDS}
    keys = [(d, n, "null", 0.0) for d in DESIGNS for n in SEEDS if ok[(d, n)]]
    keys += [
        (d, n, s, delta)
        for d in DESIGNS
        for n in SEEDS
        if ok[(d, n)]
        for s in ("agreement", "wrong")
        for delta in DELTAS
        if delta > 0
    ]
    streams = np.random.SeedSequence(args.seed).spawn(len(keys))
    jobs = [(*k, args.sims, ss) for k, ss in zip(keys, streams)]
    if args.jobs == 1:
        results = dict(map(cell, jobs))
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = dict(pool.map(cell, jobs))
    took = time.perf_counter() - start

    cmd = "python scripts/power_table.py" + (f" --sims {args.sims}" if args.sims != 1000 else "")
    if args.seed != 20240601:
        cmd += f" --seed {args.seed}"
    header = (
        f"Generated by `{cmd}` on {dt.date.today().isoformat()}: {args.sims} simulated audits per "
        f"cell, generator seed {args.seed}, {took / 60:.1f} min on {args.jobs} process"
        f"{'es' if args.jobs > 1 else ''}. n.t.: not testable with this many seeds (every verdict).\n"
    )
    block = header + "\n" + render(results, ok)
    print(block)
    write_block(args.out, block)
    print(f"wrote {args.out} ({took:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
