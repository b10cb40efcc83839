"""The ``20i`` console script: the root Typer app, and ``main`` that runs it safely.

Commands live in one ``typer.Typer()`` per group, composed with ``add_typer``. :func:`main`
turns every failure (bad options, our own errors, anything unexpected) into one readable line
on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

# Typer vendors Click as typer._click; these are the exceptions its parser raises.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from cli import telemetry
from twentyi_telemetry.errors import CliError

__all__ = ["app", "main"]

PROG = "20i"

app = typer.Typer(
    name=PROG,
    help="20i command-line tool.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
app.add_typer(telemetry.app, name="telemetry")


def _fail(message: str, code: int) -> int:
    typer.echo(message, err=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``20i`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name=PROG, standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.format_message())
        return 0
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else PROG
        return _fail(
            f"{where}: error: {exc.format_message()} (see `{where} --help`)", exc.exit_code
        )
    except ClickException as exc:
        return _fail(f"{PROG}: error: {exc.format_message()}", exc.exit_code)
    except typer.Abort:
        return _fail(f"{PROG}: aborted", 1)
    except CliError as exc:
        return _fail(f"{PROG}: error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        return _fail(f"{PROG}: interrupted", 130)
    except Exception as exc:  # the last resort: still one line, never a traceback
        return _fail(f"{PROG}: internal error: {type(exc).__name__}: {exc}", 1)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
