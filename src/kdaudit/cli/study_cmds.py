"""``kdaudit study``: one audit per setup, one store, one study report."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .progress import RichProgress, console


def _duration(seconds: float | None) -> str:
    from ..report.formatting import fmt_duration

    return "unknown" if seconds is None else fmt_duration(seconds)


class StudyClock:
    """The study's ETA from the setups' estimated times, recalibrated by what the models trained so
    far actually took: remaining estimate × (elapsed training time / estimate of what it trained)."""

    def __init__(self, per_model: list[float], models: list[int]) -> None:
        self.per_model = per_model  # estimated seconds per model, per setup
        self.left = list(models)  # models still to finish, per setup
        self.done_estimate = 0.0  # estimated seconds of the models trained by this process
        self.elapsed = 0.0  # their measured seconds
        self.t0: float | None = None

    def skip(self, i: int, n: int) -> None:
        """``n`` models of setup ``i`` were already finished (read from the store)."""
        self.left[i] = max(0, self.left[i] - n)

    def finished(self, i: int, now: float) -> None:
        self.left[i] = max(0, self.left[i] - 1)
        if self.t0 is not None:
            self.done_estimate += self.per_model[i]
            self.elapsed = now - self.t0

    def drop(self, i: int) -> None:
        """Setup ``i`` ended (done or failed): nothing of it is left."""
        self.left[i] = 0

    def eta(self) -> float:
        remaining = sum(p * n for p, n in zip(self.per_model, self.left, strict=True))
        rate = self.elapsed / self.done_estimate if self.done_estimate > 0 else 1.0
        return remaining * rate


class StudyRichProgress(RichProgress):
    """The audit's bars, under a study line: setups done / total, models done / total and the ETA."""

    def __init__(self, console: Console, study) -> None:
        super().__init__(console)
        self.study = study
        models = [e.spec.n_models() for e in study.entries]
        mean = (study.estimate_s or 0.0) / max(1, study.n_models)
        per_model = [
            (e.estimate_s / n if e.estimate_s is not None else mean) for e, n in zip(study.entries, models, strict=True)
        ]
        self.clock = StudyClock(per_model, models)
        self.index = 0
        self.done_models = 0
        self.line = self.progress.add_task("", total=study.n_models)
        self.started = time.perf_counter()

    def __enter__(self) -> StudyRichProgress:
        super().__enter__()
        return self

    def _show(self) -> None:
        n = len(self.study.entries)
        eta = self.clock.eta()
        self.progress.update(
            self.line,
            completed=self.done_models,
            description=f"study: setup {self.index + 1}/{n} {self.study.entries[self.index].name}",
            eta=_duration(eta) if eta > 0 else "—",
        )

    def setup_started(self, i: int, entry) -> None:
        self.index = i
        # the previous setup's lines (a failed setup may leave some in training), each once
        for task in {self.models, self.current, self.security, *self.training.values()}:
            if task is not None:
                self.progress.remove_task(task)
        self.models = self.current = None
        self.training.clear()
        self.security = None
        self._show()

    def start(self, total: int, todo: int) -> None:
        super().start(total, todo)
        if todo and self.clock.t0 is None:  # the clock runs from the first model trained, not re-read
            self.clock.t0 = time.perf_counter()
        if todo < total:
            self.clock.skip(self.index, total - todo)
            self.done_models += total - todo
        self._show()

    def job_finished(self, job, skipped: bool) -> None:
        super().job_finished(job, skipped)
        if not skipped:
            self.clock.finished(self.index, time.perf_counter())
            self.done_models += 1
        self._show()

    def setup_done(self, i: int, entry, error: str | None) -> None:
        self.done_models += self.clock.left[i]
        self.clock.drop(i)
        word = "[red]failed[/]" if error else "[green]done[/]"
        self.progress.console.print(
            f"Setup {i + 1}/{len(self.study.entries)} [bold]{entry.name}[/]: {word}"
            + (f": {escape(error)}" if error else ""),
            highlight=False,
        )
        self._show()


def print_study_plan(study, out: Console = console) -> None:
    table = Table(title=f"Study: {len(study.entries)} setups, {study.n_models} models")
    for col in ("setup", "modality", "models", "estimate", "--set not applied"):
        table.add_column(col, justify="right" if col in ("models", "estimate") else "left")
    for e in study.entries:
        est = "—" if e.estimate_s is None else _duration(e.estimate_s)
        table.add_row(e.name, e.spec.modality or "", str(e.spec.n_models()), est, ", ".join(e.not_applied))
    out.print(table)
    total = study.estimate_s
    missing = [e.name for e in study.entries if e.estimate_s is None]
    if total is None:
        out.print("Estimated time: unknown (no setup of this preset has a measured time)")
    else:
        note = f"; for {', '.join(missing)} the mean time per model of the others" if missing else ""
        out.print(
            f"Estimated time: about {_duration(total)} (the setups' times measured on 2 CPU cores, scaled by "
            f"their models{note}; the ETA is corrected by the models' actual times as they finish)",
            highlight=False,
        )


def print_study_summary(outcome, out: Console = console) -> None:
    t = outcome.tables
    table = Table(title="Study: KD students vs SIDDO per setup (Δ± in points)")
    for col in ("setup", "modality", "α", "teacher acc %", "transfer", "payoff", "Δ+", "Δ−"):
        table.add_column(col, justify="left" if col in ("setup", "modality") else "right", no_wrap=True)
    for _, r in t.rows.iterrows():
        table.add_row(
            str(r["setup"]),
            str(r["modality"]),
            f"{r['alpha']:g}",
            f"{100 * r['teacher_accuracy']:.2f}",
            str(r["knowledge_transfer"]),
            str(r["negative_asymmetric_payoff"]),
            f"{100 * r['delta_pos']:+.1f}",
            f"{100 * r['delta_neg']:+.1f}",
        )
    out.print(table)
    out.print("[bold]Across the setups[/]")
    for s in t.sentences:
        out.print(f"  {s}", markup=False, highlight=False)
    for _, f in t.failed.iterrows():
        out.print(f"  [red]failed[/] {f['setup']}: {escape(str(f['error']))}", highlight=False)
    out.print(f"\nStudy report: {outcome.paths.get('study.html')}")
    if outcome.meta.get("wall_time_s") is not None:
        out.print(f"Wall time: {_duration(outcome.meta['wall_time_s'])}")


def register(app: typer.Typer) -> None:
    @app.command("study")
    def study(
        setups: list[str] = typer.Argument(
            None,
            metavar="SETUP|all|FILE",
            help="Named setups (see `kdaudit setups`), `all` (the default), or a YAML file with a `study:` section.",
        ),
        preset: str | None = typer.Option(None, "--preset", metavar="cpu|paper", help="Every setup's preset."),
        set_: list[str] = typer.Option(
            [],
            "--set",
            metavar="[SETUP:]KEY=VALUE",
            help="Override a spec field in every setup that has it (or in SETUP only), e.g. --set protocol.seeds=5.",
        ),
        out: Path | None = typer.Option(
            None, "--out", metavar="DIR", help="Study directory (default: kdaudit-out/study)."
        ),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
        plan_only: bool = typer.Option(
            False, "--plan", help="Print the setups, models and time estimate; train nothing."
        ),
    ) -> None:
        """Audit several setups in one go (one job store, resumable) and write a study report:
        one row per setup and α, forest plots of Δ± and h± by modality, and pooled estimates."""
        from ..audit import invoked_command
        from ..study import read_study_file, resolve_study, run_study

        names = list(setups or [])
        if len(names) == 1 and names[0].endswith((".yaml", ".yml")):
            f = read_study_file(Path(names[0]))
            names, preset, set_ = f["setups"], preset or f.get("preset"), [*f.get("set", []), *set_]
            out = out or (Path(f["out"]) if f.get("out") else None)
        resolved = resolve_study(names or ["all"], preset, set_)
        print_study_plan(resolved)
        if plan_only:
            return
        target = out or Path("kdaudit-out") / "study"
        command = invoked_command()
        if quiet:
            outcome = run_study(resolved, target, None, command)
        else:
            with StudyRichProgress(console, resolved) as progress:
                outcome = run_study(resolved, target, progress, command)
        print_study_summary(outcome)
