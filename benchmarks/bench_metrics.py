"""Time :func:`kdaudit.analysis.metrics.functional_metrics_many` against a loop over runs.

Default size: 100 students × 10,000 test samples × 10 classes (float64). Prints the best of
``--repeat`` timings of each way and their ratio, and checks that both give the same numbers.

    python benchmarks/bench_metrics.py [--runs 100] [--samples 10000] [--classes 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kdaudit.analysis.catalogue import metric_keys
from kdaudit.analysis.metrics import functional_metrics, functional_metrics_many


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    r, n, c = args.runs, args.samples, args.classes
    labels = rng.integers(0, c, size=n)
    teacher = 3.0 * np.eye(c)[labels] + rng.standard_normal((n, c))
    students = 0.5 * teacher[None] + rng.standard_normal((r, n, c))

    t_many, many = best_time(lambda: functional_metrics_many(teacher, students, labels), args.repeat)
    t_loop, loop = best_time(lambda: [functional_metrics(teacher, students[i], labels) for i in range(r)], args.repeat)
    worst = max(abs(many[k][i] - loop[i][k]) for k in metric_keys() for i in range(r))  # type: ignore[index]
    print(f"{r} runs × {n} samples × {c} classes (best of {args.repeat})")
    print(f"functional_metrics_many : {t_many:.3f} s")
    print(f"loop of functional_metrics: {t_loop:.3f} s")
    print(f"ratio loop / many       : {t_loop / t_many:.2f}×")
    print(f"max |difference|        : {worst:.2e}")


if __name__ == "__main__":
    main()
