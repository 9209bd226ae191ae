"""Shared helpers of the tests: the tiny grids, run the CLI in a subprocess, read a store, snapshot a tree."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


# The tiny grid of the end-to-end tests: digits, an MLP with 16 hidden units, 2 seeds. Each test
# adds what it is about (epochs, threads, conditions, α); every tiny audit starts from this one.
def tiny_grid(epochs: int = 1, *more: str) -> list[str]:
    """The ``--set`` overrides of a tiny audit: digits, 2 seeds, ``epochs`` epochs, then ``more``."""
    return ["protocol.seeds=2", f"train.epochs={epochs}", "model.kwargs.hidden=[16]", *more]


def as_sets(overrides: list[str]) -> list[str]:
    """``["a=1", "b=2"]`` → ``["--set", "a=1", "--set", "b=2"]``, the CLI's form of overrides."""
    return [arg for o in overrides for arg in ("--set", o)]


ONE_THREAD = "train.threads=1"
FOUR_CONDITIONS = "protocol.conditions=[siddo,kd,rcd-uniform,rcd-gaussian]"

# digits, 2 seeds, 1 epoch, every default condition: 1 + 2 × (1 + 3 × 4) = 27 models
TINY = tiny_grid()
# 2 epochs, one thread, the conditions pinned: 21 models (the local pool and MLflow tests)
TINY2 = tiny_grid(2, ONE_THREAD, FOUR_CONDITIONS)
# The grid of the crash-safety tests: 3 epochs, 21 models (the conditions are pinned: these tests
# are about the machinery, not the default controls). One torch thread: the chain runs next to
# other processes on a small machine, and the numbers of a job depend on the thread count, so
# every run that is compared uses the same one.
TINY3 = tiny_grid(3, ONE_THREAD, FOUR_CONDITIONS)
# KD and RCD at one α, one thread: 1 + 2 + 2 + 2 = 7 models per audit (teacher snapshots, variants)
TINY_ONE_ALPHA = tiny_grid(1, ONE_THREAD, "protocol.alphas=[0.5]", "protocol.conditions=[siddo,kd,rcd-uniform]")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KDAUDIT_FAILPOINT"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def kdaudit(
    *args: str,
    cwd: str | Path | None = None,
    timeout: float = 600,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """``python -m kdaudit.cli ARGS`` in a subprocess; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "kdaudit.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env or cli_env(),
    )


def kdaudit_popen(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kdaudit.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or cli_env(),
    )


def kdaudit_here(*args: str) -> int:
    """``kdaudit ARGS`` in this process (no interpreter start-up); returns the exit code."""
    import torch

    from kdaudit.cli.main import main

    threads = torch.get_num_threads()
    try:
        main(list(args))
    except SystemExit as exc:
        return exc.code or 0
    finally:
        torch.set_num_threads(threads)
    return 0


def records(out: Path) -> dict[str, dict]:
    """The records of an audit's finished jobs, by run id."""
    recs = {}
    for p in (out / "jobs").glob("*/record.json"):
        if p.parent.name.startswith("."):  # a write in progress (.tmp-*), not a finished job
            continue
        r = json.loads(p.read_text())
        recs[r["run_id"]] = r
    return recs


def store_records(store: Path) -> list[dict]:
    """The records of a store's finished jobs, in the order of their keys."""
    return [json.loads(p.read_text()) for p in sorted(store.glob("*/record.json"))]


def job_named(plan, run_id: str):
    """The job of ``plan`` with run id ``run_id``."""
    return next(j for j in plan.jobs if j.run_id == run_id)


def n_params(model) -> int:
    """The number of a torch module's parameters."""
    return sum(p.numel() for p in model.parameters())


def outputs_by_key(out: Path) -> dict[str, dict[str, np.ndarray]]:
    """The saved outputs (test logits, labels, ...) of an audit's finished jobs, by job key."""
    res = {}
    for p in (out / "jobs").glob("*/outputs.npz"):
        with np.load(p) as z:
            res[p.parent.name] = {k: z[k] for k in z.files}
    return res


def tree_snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its kind, size and mtime (ns): equal snapshots, untouched tree."""
    snap = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        kind = "d" if p.is_dir() else "f"
        snap[str(p.relative_to(root))] = (kind, 0 if kind == "d" else st.st_size, st.st_mtime_ns)
    st = root.lstat()
    snap["."] = ("d", 0, st.st_mtime_ns)
    return snap


def tmp_leftovers(root: Path) -> list[Path]:
    """Anything under ``root`` named like a temporary of an atomic write (``.tmp-``)."""
    return sorted(p for p in root.rglob("*") if ".tmp-" in p.name)


# A fork server for many short CLI runs: one process imports kdaudit (torch, scipy, pandas:
# seconds) once, then forks one child per run; the child takes the run's environment, working
# directory and stdout/stderr files, calls the entry point of `python -m kdaudit.cli` and exits
# as the interpreter would (exit code, traceback of an uncaught exception, atexit handlers), only
# without tearing every module down. A failpoint or an outside SIGKILL ends it as any process.
_FORK_SERVER = r"""
import atexit, json, os, sys
import kdaudit.audit, kdaudit.report.render
import torch._dynamo  # what the first optimizer imports lazily (seconds)
try:
    import sklearn.datasets  # the digits dataset
except ImportError:
    pass
from kdaudit.cli import main as cli
cli._register_commands()
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:  # from here on, this is `python -m kdaudit.cli ARGS` and exits like it
        code = 1
        try:
            os.environ.clear()
            os.environ.update(req["env"])
            os.chdir(req["cwd"])
            for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
                f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            exec(req["prelude"], {"__name__": "prelude"})
            cli.main(req["args"])
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        except BaseException:
            sys.excepthook(*sys.exc_info())
        finally:  # what the interpreter does at exit, short of tearing every module down (seconds)
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


class ForkServer:
    """Run ``kdaudit ARGS`` many times without paying for the imports each time."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.n = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=cli_env(),
            cwd=self.workdir,
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def start(self, *args: str, env: dict | None = None, cwd: str | Path | None = None, prelude: str = "") -> ForkedRun:
        """Start ``kdaudit ARGS``; ``prelude`` is Python run in the child first (e.g. a monkeypatch)."""
        self.n += 1
        out, err = self.workdir / f"{self.n}.out", self.workdir / f"{self.n}.err"
        req = {
            "args": list(args),
            "env": env or cli_env(),
            "cwd": str(cwd or self.workdir),
            "prelude": prelude,
            "stdout": str(out),
            "stderr": str(err),
        }
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return ForkedRun(self, int(self.proc.stdout.readline()), out, err)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


class ForkedRun:
    def __init__(self, server: ForkServer, pid: int, stdout: Path, stderr: Path) -> None:
        self.server, self.pid, self.stdout_path, self.stderr_path = server, pid, stdout, stderr
        self.returncode: int | None = None

    def wait_for_output(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.stdout_path.exists() or text not in self.stdout_path.read_text():
            assert time.monotonic() < deadline, f"no {text!r} on stdout"
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL, unless the run has ended (its exit is then read by :meth:`wait`)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        """The exit code, as ``Popen.returncode`` has it (-9: killed by SIGKILL)."""
        if self.returncode is None:
            line = self.server.proc.stdout.readline()  # the server reports when its child ends
            self.returncode = int(line)
        return self.returncode

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """``kdaudit ARGS`` in this process: the exit code, stdout and stderr (``capsys``: pytest's fixture)."""
    from kdaudit.cli.main import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit code 2 and one ``kdaudit: error:`` line on stderr holding every needle; no traceback."""
    assert code == 2, (code, err)
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("kdaudit: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def assert_runs_close(a: Path, b: Path, n: int) -> None:
    """The audits ``a`` and ``b`` have the same ``n`` runs in ``runs.csv`` and the same metrics
    within float tolerance (an ensemble against sequential training: batched products round
    differently)."""
    import pandas as pd

    ra = pd.read_csv(Path(a) / "runs.csv").set_index("run_id").sort_index()
    rb = pd.read_csv(Path(b) / "runs.csv").set_index("run_id").sort_index()
    assert list(ra.index) == list(rb.index) and len(ra) == n
    for col in ("accuracy", "loss", "agreement", "js_divergence", "logit_cosine"):
        pd.testing.assert_series_equal(ra[col], rb[col], atol=1e-5, rtol=1e-4, check_exact=False)
