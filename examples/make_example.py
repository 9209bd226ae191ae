"""Write a small, deterministic synthetic example for ``kdaudit compare``.

The files go to ``examples/logits/`` (next to this script)::

    teacher.npy        teacher test logits, 2000 × 10, float32
    labels.npy         test labels, 2000, int64
    siddo/s1..s6.npy   6 control students (same architecture, different data order)
    kd/s1..s6.npy      6 distilled students with a planted effect

Every model's logits are ``margin · onehot(label) + noise``. A student's noise shares a part
with the teacher's noise (``shared``), which gives the control students their baseline
agreement with the teacher. The planted effect: each KD student copies the teacher's wrong
label on a random fraction ``copy_fraction`` of the samples the teacher gets wrong (and is left
unchanged elsewhere), so ``kdaudit compare`` should find a positive Δ− (negative knowledge),
Δ+ ≈ 0 and a negative asymmetric payoff.

Run ``python examples/make_example.py`` then, from ``examples/logits``::

    kdaudit compare --teacher teacher.npy --labels labels.npy \\
        --control 'siddo/*.npy' --group 'kd=kd/*.npy'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_SAMPLES = 2000
N_CLASSES = 10
N_STUDENTS = 6
MARGIN = 2.5
SHARED = 0.5
COPY_FRACTION = 0.3
SEED = 20251014


def student_logits(
    rng: np.random.Generator,
    labels: np.ndarray,
    teacher_noise: np.ndarray,
    teacher_pred: np.ndarray,
    *,
    shared: float = SHARED,
    copy_fraction: float = 0.0,
    margin: float = MARGIN,
) -> np.ndarray:
    """One synthetic student's logits (N × C, float64).

    ``shared`` ∈ [0, 1] is the correlation of the student's noise with the teacher's.
    With ``copy_fraction`` > 0 the student predicts the teacher's (wrong) label on that
    fraction of the teacher-wrong samples, drawn at random for each student.
    """
    n, c = teacher_noise.shape
    own = rng.standard_normal((n, c))
    z = margin * np.eye(c)[labels] + shared * teacher_noise + np.sqrt(1.0 - shared**2) * own
    if copy_fraction > 0:
        wrong = np.flatnonzero(teacher_pred != labels)
        chosen = wrong[rng.random(wrong.size) < copy_fraction]
        z[chosen, teacher_pred[chosen]] = z[chosen].max(axis=1) + 1.0
    return z


def make_example(
    n: int = N_SAMPLES, c: int = N_CLASSES, n_students: int = N_STUDENTS, seed: int = SEED
) -> dict[str, object]:
    """Teacher logits, labels and the two groups of student logits (float64)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    teacher_noise = rng.standard_normal((n, c))
    teacher = MARGIN * np.eye(c)[labels] + teacher_noise
    pred = teacher.argmax(axis=1)
    siddo = [student_logits(rng, labels, teacher_noise, pred) for _ in range(n_students)]
    kd = [
        student_logits(rng, labels, teacher_noise, pred, copy_fraction=COPY_FRACTION)
        for _ in range(n_students)
    ]
    return {"teacher": teacher, "labels": labels, "siddo": siddo, "kd": kd}


def write_example(out_dir: Path) -> list[Path]:
    """Write the example as float32 logits and int64 labels; return the written paths."""
    ex = make_example()
    written: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)

    def save(path: Path, arr: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, arr)
        written.append(path)

    save(out_dir / "teacher.npy", np.asarray(ex["teacher"], dtype=np.float32))
    save(out_dir / "labels.npy", np.asarray(ex["labels"], dtype=np.int64))
    for group in ("siddo", "kd"):
        for i, z in enumerate(ex[group], start=1):  # type: ignore[arg-type]
            save(out_dir / group / f"s{i}.npy", np.asarray(z, dtype=np.float32))
    return written


if __name__ == "__main__":
    paths = write_example(Path(__file__).resolve().parent / "logits")
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files ({total / 1e6:.2f} MB) to {paths[0].parent}")
