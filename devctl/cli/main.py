"""Entry point: runs the Typer app and maps every error to its exit code, in one place."""

from __future__ import annotations

import sys
import traceback

from rich.console import Console
from rich.markup import escape

from devctl.errors import EXIT_FAILED, EXIT_INTERRUPTED, DevctlError


def _verbose() -> bool:
    import os

    from devctl.config.envvars import DEBUG

    return "-v" in sys.argv[1:] or "--verbose" in sys.argv[1:] or bool(os.environ.get(DEBUG))


def render_error(exc: DevctlError, console: Console, verbose: bool) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(exc.message)}", highlight=False)
    if exc.hint:
        console.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}", highlight=False)
    if verbose and exc.details:
        console.print(escape(exc.details), highlight=False)
    if verbose and exc.__cause__ is not None:
        console.print(f"[dim]caused by: {escape(repr(exc.__cause__))}[/dim]", highlight=False)


def main(argv: list[str] | None = None) -> None:
    from devctl.cli.app import app

    err = Console(stderr=True)
    try:
        app(args=argv, prog_name="devctl")
    except DevctlError as exc:
        render_error(exc, err, _verbose())
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # an unexpected bug: short message, details with --verbose
        if _verbose():
            traceback.print_exc()
        err.print(
            f"[bold red]internal error:[/bold red] {escape(type(exc).__name__)}: {escape(str(exc))}\n"
            "[yellow]hint:[/yellow] run again with --verbose for the traceback, and report it",
            highlight=False,
        )
        sys.exit(EXIT_FAILED)
