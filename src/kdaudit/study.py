"""A study end to end: one audit per named setup, one shared job store, one study report.

    from kdaudit.study import resolve_study, run_study
    outcome = run_study(resolve_study(["digits-mlp", "word-language-lstm"], sets=["protocol.seeds=3"]), "out/s")

Layout of a study directory: ``study_index.json`` (the setups, the command, what ran and what
failed, the wall time; it marks the directory as a study), one audit directory per setup (a
complete audit with its own report), ``jobs/`` (the store every setup shares) and the study's
report: ``study.html``, ``study.md``, ``study.csv``, ``pooled.csv``, ``study.json`` and the forest
plots. The setups run one after another through the executor, each with all its workers; a setup
that fails is reported and the others go on. Rerunning the same command resumes: finished jobs are
read from the store.

``--set KEY=VALUE`` applies to every setup whose spec has the field (``model.kwargs.hidden`` only to
the setups whose model takes it); ``--set SETUP:KEY=VALUE`` to one setup only.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .audit import prepare_out_dir, with_store
from .config.loader import (
    apply_overrides,
    expand,
    load_setup_raw,
    parse_override,
    setup_file_raw,
    setup_names,
    validate_spec,
)
from .config.schema import AuditSpec
from .errors import KdauditError, SpecError
from .execute.runner import Progress
from .io import read_index_file, write_text

INDEX_FILE = "study_index.json"


@dataclass
class StudyEntry:
    """One setup of a study: its resolved spec, and the ``--set`` items that did not apply to it."""

    name: str
    spec: AuditSpec
    not_applied: list[str] = field(default_factory=list)
    estimate_s: float | None = None  # from the setup's measured time for this preset, scaled by models


@dataclass
class Study:
    entries: list[StudyEntry]
    preset: str | None = None
    sets: list[str] = field(default_factory=list)

    @property
    def n_models(self) -> int:
        return sum(e.spec.n_models() for e in self.entries)

    @property
    def estimate_s(self) -> float | None:
        """The study's estimated wall time: the setups' estimates, and for setups with none the mean
        time per model of the others; None when no setup has a measured time."""
        known = [e for e in self.entries if e.estimate_s is not None]
        if not known:
            return None
        per_model = sum(e.estimate_s or 0.0 for e in known) / sum(e.spec.n_models() for e in known)
        return sum(e.estimate_s if e.estimate_s is not None else per_model * e.spec.n_models() for e in self.entries)


@dataclass
class StudyOutcome:
    out_dir: Path
    index: dict
    tables: Any  # analysis.study.StudyTables
    paths: dict[str, Path] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}


def measured_seconds(raw: dict, preset: str | None, n_models: int) -> float | None:
    """A setup's measured wall time for ``preset`` (its ``measured:`` field, e.g. ``6.7 min`` with
    101 models) in seconds, scaled to ``n_models``; None where none was measured."""
    m = (raw.get("measured") or {}).get(preset or "cpu")
    if not isinstance(m, dict) or m.get("time") is None:
        return None
    match = re.fullmatch(r"\s*([0-9.]+)\s*(s|min|h)\s*", str(m["time"]))
    if match is None:
        return None
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    return seconds * n_models / int(m.get("models") or n_models)


def _has_field(tree: Any, parts: list[str]) -> bool:
    """Whether the spec (as dumped) has the field ``parts``: every key exists, or an optional
    section on the way is unset (``protocol.hint`` is None until a field of it is set)."""
    for p in parts:
        if tree is None:
            return True
        if not isinstance(tree, dict) or p not in tree:
            return False
        tree = tree[p]
    return True


def _takes(tree: Any, parts: list[str], value: Any) -> bool:
    """Whether a setup takes ``value`` at ``parts``: it has the field (:func:`_has_field`) and, where
    it has a value there, a list for a list and a single value for a single value
    (``model.kwargs.hidden=[64]`` sets an MLP's layer widths, not an LSTM's hidden size)."""
    if not _has_field(tree, parts):
        return False
    for p in parts:
        tree = tree.get(p) if isinstance(tree, dict) else None
    return tree is None or isinstance(tree, list) == isinstance(value, list)


def _split_set(item: str, names: Sequence[str]) -> tuple[str | None, str]:
    """``SETUP:KEY=VALUE`` → (SETUP, KEY=VALUE); ``KEY=VALUE`` → (None, KEY=VALUE)."""
    if "=" not in item:
        raise SpecError(f"--set {item!r}: expected key=value, e.g. train.epochs=3")
    head = item.split("=", 1)[0]
    if ":" in head:
        setup, rest = item.split(":", 1)
        if setup not in names:
            raise SpecError(f"--set {item!r}: {setup!r} is not a setup of this study ({', '.join(names)})")
        return setup, rest
    return None, item


def resolve_study(setups: Sequence[str], preset: str | None = None, sets: Sequence[str] = ()) -> Study:
    """The study's setups (names, or ``all``) with the preset and the ``--set`` items applied,
    each validated: a bad setup name, key or value fails here, before anything trains."""
    names: list[str] = []
    for name in setups or ["all"]:
        for n in setup_names() if name == "all" else [name]:
            if n not in names:
                names.append(n)
    raws = {n: load_setup_raw(n, preset) for n in names}  # an unknown name fails with a suggestion
    bases = {n: validate_spec(raw).model_dump(mode="json") for n, raw in raws.items()}
    applied: dict[str, list[str]] = {n: [] for n in names}
    not_applied: dict[str, list[str]] = {n: [] for n in names}
    for item in sets:
        target, kv = _split_set(item, names)
        parts, value = parse_override(kv)
        where = [target] if target else [n for n in names if _takes(bases[n], parts, value)]
        if not where and any(_has_field(bases[n], parts) for n in names):
            raise SpecError(
                f"--set {item!r}: {'.'.join(parts)} takes {'one value' if isinstance(value, list) else 'a list'} in "
                "every setup of this study"
                + (
                    "; a list where one value is expected sweeps, and a study runs one audit per setup"
                    if isinstance(value, list)
                    else ""
                )
            )
        if not where:  # no setup has the field: the spec's own message, with the closest key
            validate_spec(apply_overrides(raws[names[0]], [kv]))
            raise SpecError(f"--set {item!r}: no setup of this study has the field {'.'.join(parts)}")
        for n in names:
            if n in where:
                applied[n].append(kv)
            elif target is None:
                not_applied[n].append(item)
    entries = []
    for n in names:
        try:
            sweep = expand(apply_overrides(raws[n], applied[n]))
        except SpecError as exc:
            raise SpecError(f"setup {n}: {exc}") from None
        if sweep.is_sweep:
            raise SpecError(f"setup {n}: a study runs one audit per setup; a --set with a list of values sweeps")
        spec = sweep.points[0].spec
        est = measured_seconds(setup_file_raw(n), preset, spec.n_models())
        entries.append(StudyEntry(n, spec, not_applied[n], est))
    return Study(entries, preset, list(sets))


_STUDY_KEYS = {"setups", "preset", "set", "out"}


def read_study_file(path: Path) -> dict:
    """A study spec: a YAML file whose ``study:`` section names ``setups`` (a list, or ``all``) and
    optionally ``preset``, ``set`` (a list of ``[SETUP:]KEY=VALUE``) and ``out``."""
    from .config.loader import read_yaml

    if not path.exists():
        raise SpecError(f"study file not found: {path}")
    raw = read_yaml(path)
    section = raw.get("study") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        raise SpecError(f"{path}: expected a `study:` section with `setups:` (a list of setup names, or all)")
    unknown = sorted(set(section) - _STUDY_KEYS)
    if unknown:
        raise SpecError(f"{path}: study.{unknown[0]}: unknown field; known: {', '.join(sorted(_STUDY_KEYS))}")
    setups = section.get("setups", "all")
    setups = [setups] if isinstance(setups, str) else setups
    sets = section.get("set") or []
    if not isinstance(setups, list) or not all(isinstance(x, str) for x in setups) or not setups:
        raise SpecError(f"{path}: study.setups must be a list of setup names, or all")
    if not isinstance(sets, list) or not all(isinstance(x, str) for x in sets):
        raise SpecError(f"{path}: study.set must be a list of KEY=VALUE strings")
    return {"setups": setups, "preset": section.get("preset"), "set": sets, "out": section.get("out")}


def machine() -> str:
    """This machine in words: the CPU model, its widest bf16 support and the cores, e.g.
    "AMD EPYC (AVX512-bf16), 2 cores"."""
    import torch

    from .execute.device import device_name

    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), set())
    except OSError:
        pass
    simd = next((word for flag, word in _SIMD if flag in flags), None)
    return f"{device_name(torch.device('cpu'))}{f' ({simd})' if simd else ''}, {os.cpu_count()} cores"


_SIMD = (("amx_bf16", "AMX-bf16"), ("avx512_bf16", "AVX512-bf16"), ("avx512f", "AVX512"), ("avx2", "AVX2"))
"""CPU flags, widest first, and how :func:`machine` names them (bf16 autocast pays with the first two)."""


def read_index(out: str | Path) -> dict:
    return read_index_file(out, INDEX_FILE, "study")


def is_study_dir(out: str | Path) -> bool:
    return (Path(out) / INDEX_FILE).exists()


def _write_index(out: Path, index: dict) -> None:
    write_text(out / INDEX_FILE, json.dumps(index, indent=1, default=str))


class StudyProgress(Progress, Protocol):
    """An audit's progress that :func:`run_study` also tells when each setup starts and ends."""

    def setup_started(self, i: int, entry: StudyEntry) -> None: ...
    def setup_done(self, i: int, entry: StudyEntry, error: str | None) -> None: ...


def run_study(
    study: Study,
    out_dir: str | Path,
    progress: StudyProgress | None = None,
    command: str | None = None,
    on_error: Callable[[str, BaseException], None] | None = None,
) -> StudyOutcome:
    """Run every setup's audit into ``out_dir/<setup>`` over the shared store ``out_dir/jobs``,
    recording each setup's outcome in ``study_index.json`` as it ends, then write the report."""
    import torch

    from . import __version__
    from .audit import run_audit

    start = time.perf_counter()
    out = prepare_out_dir(Path(out_dir))
    store = out / "jobs"
    index: dict[str, Any] = {
        "command": command,
        "preset": study.preset or "cpu",
        "sets": study.sets,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "estimate_s": study.estimate_s,
        "setups": [
            {
                "setup": e.name,
                "dir": e.name,
                "models": e.spec.n_models(),
                "status": "pending",
                "not_applied": e.not_applied,
            }
            for e in study.entries
        ],
        "wall_time_s": None,
        "kdaudit": __version__,
        "torch": str(torch.__version__),
    }
    _write_index(out, index)
    for i, (entry, row) in enumerate(zip(study.entries, index["setups"], strict=True)):
        if progress is not None:
            progress.setup_started(i, entry)
        t0 = time.perf_counter()
        error = None
        try:
            outcome = run_audit(with_store(entry.spec, store), out / entry.name, progress)
            row.update(status="done", trained_now=outcome.meta.get("trained_now", 0))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a failed setup is reported; the others go on
            error = " ".join(f"{type(exc).__name__}: {exc}".split()) if not isinstance(exc, KdauditError) else str(exc)
            row.update(status="failed", error=error)
            if not isinstance(exc, KdauditError):  # an unexpected failure: its traceback, for a bug report
                import traceback

                trace = prepare_out_dir(out / entry.name) / "error.txt"
                write_text(trace, "".join(traceback.format_exception(exc)))
                row["traceback"] = str(trace.relative_to(out))
            if on_error is not None:
                on_error(entry.name, exc)
        row["wall_time_s"] = round(time.perf_counter() - t0, 1)
        _write_index(out, index)
        if progress is not None:
            progress.setup_done(i, entry, error)
    index["wall_time_s"] = round(time.perf_counter() - start, 1)
    _write_index(out, index)
    return analyse_study(out)


def _versions(out: Path, index: dict) -> dict[str, str | None]:
    """The kdaudit and torch versions the study ran with: its index's, else its first audit's."""
    if index.get("kdaudit"):
        return {"kdaudit": index["kdaudit"], "torch": index.get("torch")}
    for row in index["setups"]:
        try:
            meta = json.loads((out / row["dir"] / "audit.json").read_text())["meta"]
            return {"kdaudit": meta.get("kdaudit_version"), "torch": meta.get("torch_version")}
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {"kdaudit": None, "torch": None}


def analyse_study(out_dir: str | Path) -> StudyOutcome:
    """The study's tables and report from its finished audit directories; trains nothing."""
    from .analysis.study import build_study_tables, load_setup_result
    from .report.study_report import write_study_report

    out = Path(out_dir)
    index = read_index(out)
    results, failed = [], []
    for row in index["setups"]:
        # "pending": not reached by the last invocation (interrupted); a complete audit directory
        # from an earlier run of the study still counts
        if row.get("status") in ("done", "pending"):
            try:
                results.append(load_setup_result(out / row["dir"], row["setup"], row["dir"]))
                continue
            except KdauditError as exc:
                if row.get("status") == "done":
                    row = {**row, "error": str(exc)}
            except Exception as exc:  # an unreadable audit directory fails that setup, not the report
                row = {**row, "error": f"cannot read {row['dir']}: {type(exc).__name__}: {exc}"}
        failed.append((row["setup"], row.get("error") or f"not run ({row.get('status', 'pending')})"))
    tables = build_study_tables(results, failed)
    meta = {
        "title": "kdaudit study",
        "command": index.get("command") or "",
        "date": index.get("date"),
        "machine": index.get("machine"),
        "wall_time_s": index.get("wall_time_s"),
        "preset": index.get("preset"),
        "sets": index.get("sets", []),
        "n_setups": len(index["setups"]),
        "n_failed": len(failed),
        "n_models": sum(len(r.runs) for r in results),  # each setup's teacher and students
        "trained_now": sum(r.get("trained_now", 0) for r in index["setups"]),
        **_versions(out, index),
    }
    paths = write_study_report(out, tables, meta)
    return StudyOutcome(out, index, tables, paths, meta)
