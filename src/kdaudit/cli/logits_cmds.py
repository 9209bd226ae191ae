"""``kdaudit metrics`` and ``kdaudit compare``: the analysis from saved logit files (PROTOCOL §7).

Every file is a ``.npy`` array loaded with ``allow_pickle=False``: teacher and student logits
are N × C floating-point arrays, labels an N-vector of class indices. Globs (``'siddo/*.npy'``)
are expanded by kdaudit itself, sorted, so they should be quoted on the shell. Any bad input is
a :class:`~kdaudit.errors.InputError`: one line on stderr and exit code 2. With ``--out DIR``,
``compare`` also writes the outputs of an audit there (:mod:`kdaudit.logits_audit`).
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ..analysis.catalogue import metric_keys, student_metric_keys
from ..analysis.compare import compare_logits, json_safe
from ..analysis.design import STANDARDS, Design
from ..analysis.metrics import functional_metrics
from ..analysis.stats import CORRECTIONS, METHODS
from ..analysis.transfer import format_p, payoff_sentence
from ..analysis.validation import validate_labels, validate_logits
from ..errors import InputError

_NPY_MAGIC = b"\x93NUMPY"

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def load_npy(path: str | os.PathLike[str], what: str = "array") -> np.ndarray:
    """Load one ``.npy`` array without pickles; every failure is a one-line InputError."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} file not found: {path}")
    if p.is_dir():
        raise InputError(f"{what} path is a directory, not a .npy file: {path}")
    try:
        with open(p, "rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise InputError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    if head != _NPY_MAGIC:
        kind = " (it is an .npz archive; save each array with np.save)" if head.startswith(b"PK") else ""
        raise InputError(f"{what} file is not a .npy array{kind}: {path}")
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise InputError(f"{what} file holds a pickled object array, which kdaudit does not load: {path}") from None
        raise InputError(f"{what} file is not a valid .npy array ({exc}): {path}") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{what} file is truncated or unreadable ({exc}): {path}") from None
    if not isinstance(arr, np.ndarray):  # pragma: no cover - np.load of .npy gives an array
        raise InputError(f"{what} file does not hold a single array: {path}")
    return arr


def expand_glob(pattern: str, option: str) -> list[str]:
    """The files matching ``pattern`` (sorted); a pattern without wildcards is taken as a path."""
    expanded = os.path.expanduser(pattern)
    if not glob.has_magic(expanded):
        return [expanded]
    matches = sorted(m for m in glob.glob(expanded) if not os.path.isdir(m))
    if not matches:
        raise InputError(f"{option} {pattern!r} matches no file")
    return matches


def parse_group(spec: str) -> tuple[str, str]:
    """Split a ``NAME=GLOB`` group specification."""
    name, sep, pattern = spec.partition("=")
    name, pattern = name.strip(), pattern.strip()
    if not sep or not name or not pattern:
        raise InputError(f"--group {spec!r} must look like NAME=GLOB, e.g. 'kd=kd/*.npy'")
    return name, pattern


def _load_logits(path: str, what: str) -> np.ndarray:
    return validate_logits(load_npy(path, what), path)


def _load_student_files(paths: list[str], label: str, shape: tuple[int, int]) -> list[np.ndarray]:
    arrays = []
    for path in paths:
        arr = _load_logits(path, f"{label} logits")
        if arr.shape != shape:
            raise InputError(f"{path}: logits have shape {arr.shape} but the teacher's have shape {shape}")
        arrays.append(arr)
    return arrays


def _required(value: T | None, option: str) -> T:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"missing option {option}")
    return value


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show warnings raised inside (e.g. an empty teacher-wrong set) as single stderr lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen: set[str] = set()
    for w in caught:
        msg = " ".join(str(w.message).split())
        if msg not in seen:
            seen.add(msg)
            typer.echo(f"kdaudit: warning: {msg}", err=True)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> str:
    return json.dumps(json_safe(obj), allow_nan=False)


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    return format(x, spec)


def _mean_sem(mean: float | None, sem: float | None) -> str:
    if mean is None:
        return "—"
    return _fmt(mean) if sem is None else f"{_fmt(mean)} ± {_fmt(sem)}"


def _p(x: float | None) -> str:
    return "—" if x is None else format_p(x)


def _console() -> Console:
    """A console for tables; at least 120 columns wide when the output is not a terminal."""
    console = Console()
    if not console.is_terminal and console.width < 120:
        console = Console(width=120)
    return console


def _print_compare(result: dict[str, Any]) -> None:
    console = _console()
    st = result["statistics"]
    rcd = ", ".join(f"{n} ({g['n']})" for n, g in result["rcd"].items())
    console.print(f"Control: {result['control']['n']} students" + (f"; random controls: {rcd}" if rcd else ""))
    console.print(
        f"Primary family: {st['primary_family_size']} tests, {st['correction']} at {st['level']:g} "
        f"({st['method']} p); other rows: {st['secondary_correction']}, exploratory",
        highlight=False,
    )
    for name, g in result["groups"].items():
        table = Table(title=f"{name} ({g['n']} students) vs control ({result['control']['n']})")
        for col in ("metric", "group mean ± SEM", "control mean ± SEM", "U", "p", "p adj.", "family", "r", "sig."):
            table.add_column(col, justify="left" if col in ("metric", "family") else "right")
        for key in student_metric_keys():
            m = g["metrics"][key]
            table.add_row(
                key,
                _mean_sem(m["mean"], m["sem"]),
                _mean_sem(m["control_mean"], m["control_sem"]),
                _fmt(m["statistic"], ".1f"),
                _p(m["p_value"]),
                _p(m["p_adjusted"]),
                m["family"],
                _fmt(m["effect_size"], "+.2f"),
                "yes" if m["significant"] else "no",
            )
        console.print(table)
        tr = {k: (math.nan if v is None else v) for k, v in g["transfer"].items()}
        asym = g["asymmetry"]
        console.print(
            payoff_sentence(
                name,
                "the control",
                tr,
                g["verdicts"]["negative_asymmetric_payoff"],
                g["reasons"]["negative_asymmetric_payoff"],
                g["metrics"]["agreement_teacher_wrong"]["p_adjusted"] or math.nan,
                asym["p_adjusted"] if asym["p_adjusted"] is not None else math.nan,
            ),
            markup=False,
            highlight=False,
        )
        for key, label in (
            ("knowledge_transfer", "knowledge transfer"),
            ("beyond_regularisation", "beyond regularisation"),
            ("negative_transfer", "negative transfer"),
            ("asymmetry", "asymmetry"),
            ("negative_asymmetric_payoff", "negative asymmetric payoff"),
        ):
            console.print(f"  {label}: {g['verdicts'][key]} ({g['reasons'][key]})", markup=False, highlight=False)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


# Option types (paths are plain strings so that a missing file reaches the loader's message).
_TeacherOpt = Annotated[
    str | None, typer.Option("--teacher", metavar="FILE", help="Teacher logits, N×C float .npy (required).")
]
_StudentOpt = Annotated[
    str | None, typer.Option("--student", metavar="FILE", help="Student logits, N×C float .npy (required).")
]
_LabelsOpt = Annotated[
    str | None,
    typer.Option("--labels", metavar="FILE", help="Labels, N integer class indices .npy (required)."),
]
_ControlOpt = Annotated[
    str | None,
    typer.Option(
        "--control",
        metavar="GLOB",
        help="Quoted glob of the control (SIDDO) students' logits, e.g. 'siddo/*.npy' (required).",
    ),
]
_GroupOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--group",
        metavar="NAME=GLOB",
        help="A group of students, e.g. 'kd=kd/*.npy' (repeatable, at least one).",
    ),
]
_RcdOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--rcd",
        metavar="NAME=GLOB",
        help="A random-control (RCD) group, e.g. 'rcd-uniform=rcd/*.npy' (repeatable); decides "
        "'beyond regularisation'.",
    ),
]
_MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        metavar="auto|exact|asymptotic|permutation",
        help="How p-values are computed (auto: exact without ties, permutation with ties).",
    ),
]
_StandardOpt = Annotated[
    str,
    typer.Option(
        "--standard",
        metavar="kdaudit|paper",
        help="Rule set of the verdicts: kdaudit (one corrected primary family) or paper.",
    ),
]
_LevelOpt = Annotated[float, typer.Option("--level", help="Significance level.")]
_JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
_OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        metavar="DIR",
        help="Also write the outputs of an audit there: runs.csv, tests.csv, transfer.csv, summary.csv, copied.csv, "
        "audit.json and report.html (a new or empty directory, or an earlier compare output).",
    ),
]
_CorrectionOpt = Annotated[
    str,
    typer.Option(
        "--correction",
        metavar="holm|bh|none",
        help="Correction of the primary family (H1–H4 of every group); the other tests get Benjamini–Hochberg.",
    ),
]


def metrics_command(
    teacher: _TeacherOpt = None,
    student: _StudentOpt = None,
    labels: _LabelsOpt = None,
    as_json: _JsonOpt = False,
) -> None:
    """The §3 functional metrics of a student against its teacher, from saved test logits."""
    t_path = _required(teacher, "--teacher")
    s_path = _required(student, "--student")
    y_path = _required(labels, "--labels")
    zt = _load_logits(t_path, "teacher logits")
    zs = _load_logits(s_path, "student logits")
    if zs.shape != zt.shape:
        raise InputError(
            f"{s_path}: student logits have shape {zs.shape} but the teacher's ({t_path}) have shape {zt.shape}"
        )
    y = validate_labels(load_npy(y_path, "labels"), zt.shape[0], zt.shape[1], y_path)
    with _one_line_warnings():
        result = functional_metrics(zt, zs, y)
    if as_json:
        typer.echo(_dumps({k: result[k] for k in metric_keys()}))
        return
    table = Table(title=f"{s_path} vs teacher {t_path}", caption=f"{zt.shape[0]} samples, {zt.shape[1]} classes")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in metric_keys():
        table.add_row(key, _fmt(result[key]))
    _console().print(table)


def _check_compare_options(level: float, correction: str, method: str, standard: str) -> None:
    if correction not in CORRECTIONS:
        raise InputError(f"--correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    if not (0.0 < level < 1.0):
        raise InputError(f"--level must lie in (0, 1), got {level}")
    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if standard not in STANDARDS:
        raise InputError(f"--standard must be one of {', '.join(STANDARDS)}, got {standard!r}")


def _group_patterns(group: list[str], rcd: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """The ``--group`` and ``--rcd`` globs by name; a name may be given once."""
    specs: dict[str, str] = {}
    rcd_specs: dict[str, str] = {}
    for opt, items, into in (("--group", group, specs), ("--rcd", rcd, rcd_specs)):
        for spec in items:
            name, pattern = parse_group(spec)
            if name in specs or name in rcd_specs:
                raise InputError(f"{opt} name {name!r} is given twice")
            into[name] = pattern
    return specs, rcd_specs


def _load_students(
    c_pattern: str, specs: dict[str, str], rcd_specs: dict[str, str], shape: tuple[int, int]
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """The logits of the control, of every group and of every random control, by file in file order."""
    control_paths = expand_glob(c_pattern, "--control")
    group_paths = {name: expand_glob(pattern, f"--group {name}") for name, pattern in specs.items()}
    rcd_paths = {name: expand_glob(pattern, f"--rcd {name}") for name, pattern in rcd_specs.items()}
    for label, paths in [
        ("control", control_paths),
        *[(f"group {n!r}", p) for n, p in group_paths.items()],
        *[(f"random control {n!r}", p) for n, p in rcd_paths.items()],
    ]:
        if len(paths) < 2:
            raise InputError(f"{label} has {len(paths)} logits file(s); at least 2 students are needed")

    def load(paths: list[str], label: str) -> dict[str, np.ndarray]:
        return dict(zip(paths, _load_student_files(paths, label, shape), strict=True))

    return (
        load(control_paths, "control"),
        {name: load(paths, f"group {name}") for name, paths in group_paths.items()},
        {name: load(paths, f"random control {name}") for name, paths in rcd_paths.items()},
    )


def compare_command(
    teacher: _TeacherOpt = None,
    labels: _LabelsOpt = None,
    control: _ControlOpt = None,
    group: _GroupOpt = None,
    rcd: _RcdOpt = None,
    level: _LevelOpt = 0.05,
    correction: _CorrectionOpt = "holm",
    method: _MethodOpt = "auto",
    standard: _StandardOpt = "kdaudit",
    out: _OutOpt = None,
    as_json: _JsonOpt = False,
) -> None:
    """Audit groups of students against a control group from saved test logits (one file per student)."""
    started = time.perf_counter()
    t_path = _required(teacher, "--teacher")
    y_path = _required(labels, "--labels")
    c_pattern = _required(control, "--control")
    if not group:
        raise InputError("missing option --group NAME=GLOB (at least one group)")
    _check_compare_options(level, correction, method, standard)
    specs, rcd_specs = _group_patterns(group, rcd or [])
    if out is not None:
        from ..logits_audit import check_out_dir

        check_out_dir(out)

    zt = _load_logits(t_path, "teacher logits")
    y = validate_labels(load_npy(y_path, "labels"), zt.shape[0], zt.shape[1], y_path)
    control_files, group_files, rcd_files = _load_students(c_pattern, specs, rcd_specs, zt.shape)
    design = Design(level=level, correction=correction, method=method, standard=standard)
    with _one_line_warnings():
        if out is None:
            result = compare_logits(
                zt,
                y,
                list(control_files.values()),
                {name: list(files.values()) for name, files in group_files.items()},
                rcd={name: list(files.values()) for name, files in rcd_files.items()},
                design=design,
            )
            paths: dict[str, Path] = {}
        else:
            from ..logits_audit import compare_to_dir

            result, _, paths = compare_to_dir(
                out, (t_path, zt), (y_path, y), control_files, group_files, rcd_files, design, started
            )
    if as_json:
        typer.echo(_dumps(result))
        return
    _print_compare(result)
    if paths:
        _console().print(f"\nReport: {paths['report.html']}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``metrics`` and ``compare`` to the ``kdaudit`` app."""
    app.command("metrics")(metrics_command)
    app.command("compare")(compare_command)
