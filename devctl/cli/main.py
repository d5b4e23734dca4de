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

    return (
        "-v" in sys.argv[1:] or "--verbose" in sys.argv[1:] or debug_enabled(os.environ.get(DEBUG))
    )


def debug_enabled(value: str | None) -> bool:
    """DEVCTL_DEBUG=1/true/yes turns details on; 0/false/no/empty leaves them off."""
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def render_error(exc: DevctlError, console: Console, verbose: bool) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(exc.message)}", highlight=False)
    if exc.hint:
        console.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}", highlight=False)
    if verbose and exc.details:
        console.print(escape(exc.details), highlight=False)
    if verbose and exc.__cause__ is not None:
        console.print(f"[dim]caused by: {escape(repr(exc.__cause__))}[/dim]", highlight=False)


def main(argv: list[str] | None = None) -> None:
    err = Console(stderr=True)
    try:
        from devctl.cli.app import app

        app(args=argv, prog_name="devctl")
    except DevctlError as exc:
        render_error(exc, err, _verbose())
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # an unexpected bug: short message, details with --verbose
        verbose = _verbose()
        if verbose:
            traceback.print_exc()
        advice = "please report it" if verbose else "run again with --verbose for the traceback"
        err.print(
            f"[bold red]internal error:[/bold red] {escape(type(exc).__name__)}: {escape(str(exc))}\n"
            f"[yellow]hint:[/yellow] {advice}",
            highlight=False,
        )
        sys.exit(EXIT_FAILED)
