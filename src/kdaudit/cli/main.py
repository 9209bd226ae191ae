"""The ``kdaudit`` command line (typer + rich).

Every user-fixable problem is a :class:`kdaudit.errors.KdauditError`: it is printed as one
line on stderr and the process exits with the error's ``exit_code`` (2), never with a traceback.
"""

from __future__ import annotations

import sys

import typer

from ..errors import KdauditError

app = typer.Typer(
    name="kdaudit",
    help="Functional analysis of knowledge distillation (self-distillation audits, SIDDO/RCD controls).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


_registered = False


def _register_commands() -> None:
    global _registered
    if _registered:
        return
    from . import logits_cmds, run_cmds

    logits_cmds.register(app)
    run_cmds.register(app)
    _registered = True


def fail(message: str, exit_code: int = KdauditError.exit_code) -> None:
    """Print one clear line on stderr and exit with ``exit_code``."""
    first = " ".join(str(message).split())
    sys.stderr.write(f"kdaudit: error: {first}\n")
    raise SystemExit(exit_code)


def main(argv: list[str] | None = None) -> None:
    _register_commands()
    from .run_cmds import mlflow_argv

    args = mlflow_argv(sys.argv[1:] if argv is None else list(argv))
    try:
        app(args=args, standalone_mode=True)
    except KdauditError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("kdaudit: interrupted; finished jobs are kept, rerun to resume\n")
        raise SystemExit(130) from None
