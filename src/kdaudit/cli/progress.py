"""The console the commands print to, and the progress bars of a running audit."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# A pipe or a log file gets a fixed, wide layout instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 120)


class EtaColumn(ProgressColumn):
    """ "ETA" and the time left: the task's own ``eta`` field where it has one (a study's estimate
    from measured times), else rich's estimate from the task's speed."""

    def __init__(self) -> None:
        super().__init__()
        self.remaining = TimeRemainingColumn()

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        shown = Text(str(eta), style="progress.remaining") if eta is not None else self.remaining.render(task)
        return Text.assemble("ETA ", shown)


class RichProgress:
    """Models done / total with ETA, and a line per model in training with its epoch."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            EtaColumn(),
            console=console,
            transient=False,
        )
        self.models: TaskID | None = None
        self.current: TaskID | None = None
        self.security: TaskID | None = None
        self.training: dict[str, TaskID] = {}  # job key -> its line, while it trains

    def __enter__(self) -> RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, total: int, todo: int) -> None:
        self.models = self.progress.add_task("models", total=total)
        # shown by job_started (executors that train on this machine report their epochs)
        self.current = self.progress.add_task("", total=None, visible=False)
        if todo < total:
            self.progress.console.print(f"{total - todo} of {total} models already finished; training {todo}")

    def _line(self, job) -> TaskID:
        """The job's line: the first one is reused, one more per job training at the same time."""
        if job.key not in self.training:
            free = self.current is not None and self.current not in self.training.values()
            if free and self.current is not None:
                self.training[job.key] = self.current
            else:
                self.training[job.key] = self.progress.add_task("", total=None)
        return self.training[job.key]

    def job_started(self, job, epochs: int) -> None:
        self.progress.update(
            self._line(job), description=f"{job.run_id} epoch 0/{epochs}", total=epochs, completed=0, visible=True
        )

    def epoch_done(self, job, epoch: int, epochs: int, loss: float) -> None:
        self.progress.update(
            self._line(job), description=f"{job.run_id} epoch {epoch}/{epochs} loss {loss:.3f}", completed=epoch
        )

    def job_finished(self, job, skipped: bool) -> None:
        if self.models is not None:
            self.progress.advance(self.models)
        line = self.training.pop(job.key, None)
        if line is not None and line != self.current:
            self.progress.remove_task(line)

    def security_model(self, done: int, total: int, run_id: str) -> None:
        """Security evaluation: one more model measured (adversarial examples, backdoor trigger)."""
        if self.security is None:
            if self.current is not None:
                self.progress.update(self.current, visible=False)
            self.security = self.progress.add_task("security", total=total)
        self.progress.update(self.security, completed=done, description=f"security: {run_id}")
