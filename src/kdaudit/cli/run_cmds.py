"""``kdaudit run``, ``kdaudit setups`` and ``kdaudit report``."""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..analysis.catalogue import metric, summary_metrics
from .progress import RichProgress, console

__all__ = ["RichProgress", "apply_run_options", "console", "print_summary", "register"]


def _pct(mean: float, sem: float, scale: float = 100.0, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    s = f"{mean * scale:.{digits}f}"
    if sem is not None and not (isinstance(sem, float) and math.isnan(sem)):
        s += f"±{sem * scale:.{digits}f}"
    return s


def print_planned_notes(spec, out: Console = console) -> None:
    """Before training: the verdicts this design cannot give, and why."""
    from ..audit import planned_notes

    for note in planned_notes(spec):
        out.print(f"[yellow]Note:[/] {note}.", highlight=False)


def print_summary(outcome, out: Console = console) -> None:
    """The headline first, then the setup, the students' summary (shares in %), the verdicts with
    their sentences, the security results and where the report is."""
    from ..analysis.verdicts import FIDELITY_BAR, headline

    t = outcome.tables
    meta = outcome.meta
    st = getattr(t, "statistics", {}) or {}
    out.print()
    out.print(f"[bold]{escape(headline(t.verdicts, st))}[/]", highlight=False)
    out.print()
    corrupt = outcome.stats.rerun_corrupt if outcome.stats is not None else []
    if corrupt:
        out.print(
            f"Found {len(corrupt)} corrupt job(s) in the store and re-ran them: {', '.join(corrupt)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        f"[bold]{meta.get('setup')}[/]: teacher accuracy {meta['teacher_accuracy'] * 100:.2f} % "
        f"({meta['n_teacher_wrong']} of {meta['n_test']} test samples wrong), {meta['n_models']} models"
    )
    table = Table(title="Students vs teacher (mean ± SEM over seeds)")
    shown = [metric(name) for name in summary_metrics()]
    for col in ("condition", "α", "n", *(m.terminal for m in shown)):
        table.add_column(col, justify="left" if col == "condition" else "right", no_wrap=col == "condition")
    for _, r in t.summary.iterrows():
        cells = [_pct(r[f"{m.name}_mean"], r[f"{m.name}_sem"], m.scale, m.digits) for m in shown]
        table.add_row(str(r["condition"]), f"{r['alpha']:g}", str(int(r["n"])), *cells)
    out.print(table)
    out.print(f"[bold]Verdicts[/] ({standard_line(st)})", highlight=False)
    for note in st.get("notes", []):
        out.print(f"  [yellow]Note:[/] {note}.", highlight=False)
    for v in t.verdicts:
        out.print(
            f"  {v.condition} α={v.alpha:g}: knowledge transfer [bold]{v.knowledge_transfer}[/], "
            f"beyond regularisation [bold]{v.beyond_regularisation}[/], "
            f"negative transfer [bold]{v.negative_transfer}[/], asymmetry [bold]{v.asymmetry}[/], "
            f"negative asymmetric payoff [bold]{v.negative_asymmetric_payoff}[/], "
            f"fidelity ≥ {FIDELITY_BAR:g} bar [bold]{v.fidelity}[/] (SIDDO [bold]{v.control_fidelity}[/])"
        )
        for s in v.sentences:
            out.print(f"    {s}", markup=False, highlight=False)
    security = outcome.meta.get("security")
    if security is not None:
        out.print("[bold]Security[/]")
        for s in outcome.security.sentences:
            out.print(f"  {s}", markup=False, highlight=False)
    report = outcome.paths.get("report.html")
    out.print(f"\nReport: {report}")
    if meta.get("wall_time_s") is not None:
        out.print(f"Wall time: {meta['wall_time_s']:.1f} s")


def standard_line(st: dict) -> str:
    """Which rule set decided the verdicts, in a few words."""
    if not st:
        return ""
    if st.get("standard") == "paper":
        return f"paper's standard: each test at {st.get('level', 0.05):g}, no correction"
    test = "Wilcoxon signed-rank by seed" if st.get("paired") else "Mann–Whitney"
    return (
        f"kdaudit standard: {st.get('primary_family_size')} primary tests ({test}, {st.get('method')} p), "
        f"{st.get('correction')} at {st.get('level', 0.05):g}"
    )


class Executor(StrEnum):
    local = "local"
    dask = "dask"


# `--mlflow` may stand alone; `mlflow_argv` then gives it this value, which means the default URI.
MLFLOW_DEFAULT = ""
_URI_STARTS = ("/", "./", "../", "~", "databricks")


def mlflow_argv(args: list[str]) -> list[str]:
    """Give a bare ``--mlflow`` its default value, so that it may be followed by anything.

    ``--mlflow URI`` keeps its URI when the next word looks like one (has a ``:`` or starts
    like a path); ``--mlflow=URI`` always does.
    """
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--":
            return out + args[i + 1 :]
        if arg == "--mlflow":
            nxt = args[i + 1] if i + 1 < len(args) else None
            is_uri = (
                nxt is not None
                and not nxt.startswith("-")
                and not nxt.endswith((".yaml", ".yml"))
                and (":" in nxt or nxt.startswith(_URI_STARTS))
            )
            if not is_uri:
                out.append(MLFLOW_DEFAULT)
    return out


def apply_run_options(
    spec, executor: str | None, workers: int | None, scheduler: str | None, mlflow: str | None, out: Path | None
):
    """The spec with the ``kdaudit run`` flags that override its execution and tracking sections."""
    from ..audit import default_out_dir
    from ..config.loader import validate_spec
    from ..errors import KdauditError
    from ..tracking import default_mlflow_uri

    if executor is None and workers is None and scheduler is None and mlflow is None:
        return spec
    raw = spec.model_dump(mode="json")
    ex = raw["execution"]
    if scheduler is not None:
        if executor == "local":
            raise KdauditError("--scheduler runs the jobs on a Dask cluster; it cannot go with --executor local")
        ex.update(executor="dask", scheduler=scheduler)
    elif executor is not None:
        ex["executor"] = executor
        if executor == "local":
            ex["scheduler"] = None
    if workers is not None:
        ex["workers"] = workers
    if mlflow is not None:
        raw["tracking"]["mlflow"] = mlflow or default_mlflow_uri(out or default_out_dir(spec))
    return validate_spec(raw)


def _where(spec) -> str:
    from ..execute.runner import job_threads, local_workers
    from ..plan.jobs import device_class

    ex = spec.execution
    on = "" if device_class(spec.train.device) == "cpu" else f" on {device_class(spec.train.device)}"
    if ex.executor == "dask":
        if ex.scheduler:
            return f"{on} via the Dask scheduler {ex.scheduler}"
        return f" on {local_workers(spec)} Dask workers, {job_threads(spec)} thread(s) per job{on}"
    if on:
        return f"{on}, {local_workers(spec)} worker(s), ensemble {ex.ensemble}"
    return f", {job_threads(spec)} thread(s) per job"


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        spec: str | None = typer.Argument(
            None,
            metavar="SETUP|FILE",
            help="A setup name (see `kdaudit setups`) or a spec YAML file; default: the default setup.",
        ),
        preset: str | None = typer.Option(
            None,
            "--preset",
            metavar="cpu|paper",
            help="The setup's preset: cpu (sizes that run here in minutes, the default) or paper "
            "(the paper's sizes and recipes, for a GPU).",
        ),
        set_: list[str] = typer.Option(
            [], "--set", metavar="KEY=VALUE", help="Override a spec field: --set train.epochs=3 (repeatable)."
        ),
        out: Path | None = typer.Option(
            None,
            "--out",
            metavar="DIR",
            help="Audit directory (default: kdaudit-out/<setup name>, with -<preset> for presets other than cpu).",
        ),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
        device: str | None = typer.Option(
            None,
            "--device",
            metavar="auto|cpu|cuda|cuda:N|mps",
            help="Where models train (train.device): auto (the default) is CUDA when torch sees a GPU, else the CPU.",
        ),
        executor: Executor | None = typer.Option(
            None, "--executor", help="Where the jobs run: local (this machine, the default) or dask (a Dask cluster)."
        ),
        workers: int | None = typer.Option(
            None,
            "--workers",
            min=1,
            metavar="N",
            help="Jobs trained at once: worker processes of the local executor or of the local Dask cluster "
            "(default: one per core).",
        ),
        scheduler: str | None = typer.Option(
            None,
            "--scheduler",
            metavar="ADDRESS",
            help="A running Dask scheduler, e.g. tcp://host:8786 (implies --executor dask).",
        ),
        mlflow: str | None = typer.Option(
            None,
            "--mlflow",
            metavar="[URI]",
            help="Log every job to MLflow at URI; without a URI, to sqlite:///<audit dir>/mlflow.db.",
        ),
    ) -> None:
        """Plan, train what is missing, analyse and report; prints the summary and the verdicts.

        A spec whose fields take lists (e.g. --set 'protocol.temperature=[1,2,4,8]') runs one audit
        per value, sharing identical jobs, and writes a sweep report next to them."""
        from ..audit import run_audit
        from ..config.loader import expand, resolve_raw

        if device is not None:
            set_ = [*set_, f"train.device={device}"]
        sweep = expand(resolve_raw(spec, set_, preset))
        ex = executor and executor.value
        for point in sweep.points:
            point.spec = apply_run_options(point.spec, ex, workers, scheduler, mlflow, out)
        if sweep.is_sweep:
            _run_sweep(sweep, out, quiet)
            return
        resolved = sweep.points[0].spec
        console.print(f"Audit [bold]{resolved.name}[/]: {resolved.n_models()} models{_where(resolved)}")
        print_planned_notes(resolved)
        if quiet:
            outcome = run_audit(resolved, out)
        else:
            with RichProgress(console) as progress:
                outcome = run_audit(resolved, out, progress)
        print_summary(outcome)

    @app.command("setups")
    def setups(
        long: bool = typer.Option(False, "--long", help="Also each setup's description."),
    ) -> None:
        """List the named setups (run one with `kdaudit run NAME [--preset cpu|paper]`)."""
        from ..config.loader import setup_file_raw, setup_names

        table = Table(
            title="kdaudit setups",
            caption="model: teacher → students if they differ; time: the cpu preset on 2 CPU cores, (N) measured "
            "with N models",
        )
        for col in ("setup", "modality", "dataset", "model", "models", "time (cpu)", "presets"):
            table.add_column(col, no_wrap=True, justify="right" if col == "models" else "left")
        for name in setup_names():
            table.add_row(*setup_row(name))
        console.print(table)
        for name in setup_names() if long else []:
            about = " ".join(str(setup_file_raw(name).get("description") or "").split())
            console.print(f"\n[bold]{name}[/]: {about}", highlight=False)

    @app.command("report")
    def report(out_dir: Path = typer.Argument(..., metavar="DIR", help="A finished audit or sweep directory.")) -> None:
        """Re-analyse a finished audit (or sweep, or study) directory, no training; rewrite its tables and report."""
        from ..audit import reanalyse
        from ..study import analyse_study, is_study_dir
        from ..sweep import is_sweep_dir, reanalyse_sweep

        if is_study_dir(out_dir):
            from .study_cmds import print_study_summary

            print_study_summary(analyse_study(out_dir))
        elif is_sweep_dir(out_dir):
            print_sweep_summary(reanalyse_sweep(out_dir))
        else:
            print_summary(reanalyse(out_dir))


def setup_row(name: str) -> list[str]:
    """A named setup as ``kdaudit setups`` lists it: modality, dataset, architectures, the models of
    its default run, the measured wall time of its cpu preset ("—" where none was measured), presets."""
    from ..config.loader import load_setup_raw, setup_file_raw, validate_spec
    from ..config.schema import DEFAULT_SETUP

    s = validate_spec(load_setup_raw(name))
    raw = setup_file_raw(name)
    teacher, students = s.teacher_model.name, s.student_model.name
    return [
        name + (" (default)" if name == DEFAULT_SETUP else ""),
        s.modality or "",
        s.data.name,
        students if teacher == students and s.teacher.checkpoint is None else f"{teacher} → {students}",
        str(s.n_models()),
        measured_time(raw, "cpu", s.n_models()),
        ", ".join(raw.get("presets") or {}),
    ]


def measured_time(raw: dict, preset: str, n_models: int) -> str:
    """A setup's measured wall time for ``preset`` (its ``measured`` field), with the number of
    models it was measured with in brackets where that differs from ``n_models``; "—" where none
    was measured."""
    m = (raw.get("measured") or {}).get(preset)
    if not isinstance(m, dict) or m.get("time") is None:
        return "—"
    models = m.get("models")
    return str(m["time"]) + (f" ({models})" if models is not None and models != n_models else "")


def _run_sweep(sweep, out: Path | None, quiet: bool) -> None:
    from ..sweep import run_sweep

    first = sweep.points[0].spec
    axes = "; ".join(f"{k} ∈ {v}" for k, v in sweep.axes.items())
    console.print(
        f"Sweep [bold]{first.name}[/]: {len(sweep.points)} audits ({axes}), {first.n_models()} models "
        f"each{_where(first)}; jobs shared between points are trained once",
        highlight=False,
    )

    def progress_for(i: int, n: int, label: str):
        console.print(f"[bold]Point {i + 1}/{n}[/]: {label}", highlight=False)
        return None if quiet else RichProgress(console)

    print_sweep_summary(run_sweep(sweep, out, progress_for))


def print_sweep_summary(outcome, out: Console = console) -> None:
    out.print()
    table = Table(title="Sweep: one audit per point (KD students; Δ± in points vs SIDDO)")
    for col in ("point", "teacher acc %", "teacher loss", "α", "agreement %", "Δ+", "Δ−", "transfer", "payoff"):
        table.add_column(col, justify="left" if col == "point" else "right", no_wrap=col == "point")
    for o in outcome.outcomes:
        label = o.out_dir.name
        summ = o.tables.summary.set_index(["condition", "alpha"])
        trans = o.tables.transfer.set_index(["condition", "alpha"])
        for v in o.tables.verdicts:
            r = summ.loc[(v.condition, v.alpha)]
            t = trans.loc[(v.condition, v.alpha)]
            table.add_row(
                label,
                f"{o.meta['teacher_accuracy'] * 100:.2f}",
                f"{o.meta['teacher_loss']:.3f}",
                f"{v.alpha:g}",
                _pct(r["agreement_mean"], r["agreement_sem"]),
                f"{t['delta_pos'] * 100:+.1f}",
                f"{t['delta_neg'] * 100:+.1f}",
                v.knowledge_transfer,
                v.negative_asymmetric_payoff,
            )
            label = ""
    out.print(table)
    out.print("[bold]Across the sweep[/]")
    for s in outcome.tables.sentences:
        out.print(f"  {s}", markup=False, highlight=False)
    report = outcome.paths.get("sweep.html")
    out.print(f"\nSweep report: {report}")
    if outcome.meta.get("wall_time_s") is not None:
        out.print(f"Wall time: {outcome.meta['wall_time_s']:.1f} s")
