"""The ``kdaudit`` command line (typer + rich).

Every user-fixable problem is a :class:`kdaudit.errors.KdauditError`: it is printed as one
line on stderr and the process exits with the error's ``exit_code`` (2), never with a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from ..errors import KdauditError

# The words the help shows for values whose option names none (typer would show the Python type).
_WORDS = {"str": "TEXT", "int": "N", "int range": "N", "float": "NUMBER", "float range": "NUMBER", "path": "PATH"}


class _NamedArgument(TyperArgument):
    """An argument shown in the help by its name alone (SETUP|FILE, DIR), without a type column."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def readable_help(command: Any, ctx: Any) -> None:
    """Make ``command``'s help read as words: flags bare, values by their metavar or a word
    (TEXT, N, PATH) instead of a Python type (``<bool>``, ``<str>``), prose paragraphs unbroken."""
    if command.help:  # typer keeps a docstring's line breaks after its first paragraph
        paragraphs = command.help.split("\n\n")
        command.help = "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)
    for param in [*command.params, command.get_help_option(ctx)]:
        if isinstance(param, TyperOption) and param.metavar is None:
            if param.is_flag:
                param.metavar = ""
            elif hasattr(param, "display_type"):
                shown = param.display_type(ctx).strip("<>")
                shown = shown[len("list[") : -1] if shown.startswith("list[") else shown  # a repeatable option
                param.metavar = shown if "|" in shown else _WORDS.get(shown, shown.upper())
        elif type(param) is TyperArgument:
            param.__class__ = _NamedArgument


class _ReadableGroup(TyperGroup):
    """The command group whose help, and every command's, reads as words (:func:`readable_help`)."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            readable_help(command, ctx)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        readable_help(self, ctx)
        super().format_help(ctx, formatter)


app = typer.Typer(
    name="kdaudit",
    cls=_ReadableGroup,
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
    from . import logits_cmds, run_cmds, study_cmds

    logits_cmds.register(app)
    run_cmds.register(app)
    study_cmds.register(app)
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
        app(args=args, prog_name="kdaudit", standalone_mode=True)
    except KdauditError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("kdaudit: interrupted; finished jobs are kept, rerun to resume\n")
        raise SystemExit(130) from None
