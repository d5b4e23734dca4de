"""Entry point: runs the Typer app and maps every error to its exit code, in one place.

Errors go to stderr as prose, or as one JSON object when the command was asked for
JSON (``{"error": {"code", "message", "hint"}}``), so scripts never parse prose.

A run whose reader went away (``devctl config show | head -1``) ends quietly with 0:
what the reader wanted it got. Typer and Rich answer such a write with exit 1 (from
inside their own handler of the ``EPIPE``), so that exit is recognised here by the
error it was raised while handling, whatever the Typer version does in between.
"""

from __future__ import annotations

import errno
import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

from devctl.cli.app import Application, build_command, debug_enabled, make_console
from devctl.cli.argv import wants_json
from devctl.config.envvars import DEBUG
from devctl.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, DevctlError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.console import Console


def render_error(exc: DevctlError, console: Console, verbose: bool) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/bold red] {escape(exc.message)}", highlight=False)
    if exc.hint:
        console.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}", highlight=False)
    if verbose and exc.details:
        console.print(escape(exc.details), highlight=False)
    if verbose and exc.__cause__ is not None:
        console.print(f"[dim]caused by: {escape(repr(exc.__cause__))}[/dim]", highlight=False)


def json_error(code: str, message: str, hint: str | None = None, **extra: str) -> str:
    """The one JSON shape of an error, as written to stderr."""
    import json

    return json.dumps({"error": {"code": code, "message": message, "hint": hint, **extra}})


class _Errors:
    """Writes errors to stderr, as prose or as JSON; exits with the error's code."""

    def __init__(self, as_json: bool, application: Application) -> None:
        self.as_json = as_json
        self.application = application

    @property
    def verbose(self) -> bool:
        # Read when an error is rendered: Typer sets it while parsing (-v anywhere).
        return self.application.verbose

    def _console(self) -> Console:
        return make_console(stderr=True)

    def devctl(self, exc: DevctlError) -> None:
        from devctl.cli.flags import name_flags

        name_flags(exc)  # the domain's field names become the flags that set them
        with _unread_stderr():
            if self.as_json:
                extra = {"details": exc.details} if self.verbose and exc.details else {}
                if exc.field:
                    extra["field"] = exc.field
                self._write(json_error(exc.error_code, exc.message, exc.hint, **extra))
            else:
                render_error(exc, self._console(), self.verbose)
        sys.exit(exc.exit_code)

    def usage(self, exc: Exception, exit_code: int) -> None:
        """A parse error found by Typer (unknown option, missing argument...)."""
        with _unread_stderr():
            if self.as_json:
                self._write(json_error("usage", _click_message(exc), "see --help"))
            elif not sys.stderr.isatty():
                # Rich's box wraps the message at 80 columns in a pipe or a log file.
                exc.show()  # type: ignore[attr-defined]
            else:
                try:
                    from devctl.cli.typer_compat import import_rich_utils

                    import_rich_utils()
                    from typer import rich_utils

                    rich_utils.rich_format_error(exc)  # type: ignore[arg-type]
                except Exception:  # an older Typer: click's own plain rendering
                    exc.show()  # type: ignore[attr-defined]
        sys.exit(exit_code)

    def broken_pipe(self, exc: OSError, output: _Output) -> None:
        """A write met a closed pipe: ours (exit 0, silently) or someone else's (a bug)."""
        if output.closed():
            sys.exit(0)
        self.internal(exc)

    def interrupted(self) -> None:
        with _unread_stderr():
            if self.as_json:
                self._write(json_error("interrupted", "interrupted (Ctrl-C)"))
            else:
                sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)

    def aborted(self) -> None:
        """A prompt found no answer (end of input): nothing was changed."""
        with _unread_stderr():
            if self.as_json:
                self._write(json_error("aborted", "aborted: no answer to the prompt"))
            else:
                sys.stderr.write("aborted: nothing was changed\n")
        sys.exit(EXIT_FAILED)

    def internal(self, exc: Exception) -> None:
        """An unexpected bug: short message, details with --verbose."""
        advice = (
            "please report it" if self.verbose else "run again with --verbose for the traceback"
        )
        with _unread_stderr():
            if self.verbose:
                import traceback

                traceback.print_exc()
            if self.as_json:
                self._write(json_error("internal", f"{type(exc).__name__}: {exc}", advice))
            else:
                from rich.markup import escape

                self._console().print(
                    f"[bold red]internal error:[/bold red] {escape(type(exc).__name__)}: "
                    f"{escape(str(exc))}\n[yellow]hint:[/yellow] {advice}",
                    highlight=False,
                )
        sys.exit(EXIT_FAILED)

    @staticmethod
    def _write(line: str) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _click_message(exc: Exception) -> str:
    format_message = getattr(exc, "format_message", None)
    return str(format_message() if callable(format_message) else exc)


# Standard output and error: the streams whose reader may leave before we are done.
_STREAMS = (1, 2)


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _reader_gone(fd: int) -> bool | None:
    """True when fd is a pipe (or socket) nobody reads any more; None if we cannot tell."""
    import select

    if not hasattr(select, "poll"):  # Windows
        return None
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _fd, events in poller.poll(0))


class _Output:
    """Whether the reader of our standard output or error has gone (``| head -1``).

    An EPIPE from anything else (a socket, a child's stdin) is a real failure and must
    not pass for it. Rich points a closed stdout at /dev/null before it exits, so a
    stream that is no longer the file it was at the start counts as closed too.
    """

    def __init__(self) -> None:
        self._at_start = {fd: _identity(fd) for fd in _STREAMS}

    def closed(self) -> bool:
        for fd in _STREAMS:
            identity = _identity(fd)
            if identity is None:
                continue
            # Where we cannot tell, the EPIPE itself is taken at its word.
            if identity != self._at_start[fd] or _reader_gone(fd) in (True, None):
                return True
        return False

    @staticmethod
    def silence() -> None:
        """Point each stream that lost its reader at /dev/null: the interpreter flushes
        what is still buffered at exit, and a failed flush there would print "Exception
        ignored ... BrokenPipeError" and turn the exit code into 120."""
        for fd in _STREAMS:
            if _identity(fd) is not None and _reader_gone(fd) is True:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)


@contextmanager
def _unread_stderr() -> Iterator[None]:
    """Render an error; a stderr nobody reads (``2>&1 | head -1``) keeps its exit code."""
    try:
        yield
    except BrokenPipeError:
        pass
    except SystemExit as exc:  # Rich's answer to a closed pipe
        if _broken_pipe(exc) is None:
            raise


def _broken_pipe(exc: BaseException) -> OSError | None:
    """The EPIPE error exc is, or was raised while handling (Typer's and Rich's exit 1)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno == errno.EPIPE:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    output = _Output()
    # Verbose from the environment already, for errors Typer finds before it reads -v.
    application = Application(verbose=debug_enabled(os.environ.get(DEBUG)))
    # --json is read from the raw arguments: a usage error (an unknown option) stops
    # Typer before it has parsed the command's --json, and it must be JSON all the same.
    errors = _Errors(as_json=wants_json(args), application=application)
    from typer import Abort

    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # a Typer that still depends on click
        from click.exceptions import ClickException  # type: ignore[no-redef,assignment,unused-ignore]
    try:
        from devctl.cli import typer_compat

        typer_compat.install()
        if not args or {"-h", "--help"} & set(args):
            typer_compat.import_rich_utils()
        # standalone_mode=False: Typer hands back its exceptions (usage errors, a
        # prompt's Ctrl-C) and exit codes, so they are rendered here like ours.
        result = build_command(args).main(
            args=args, prog_name="devctl", standalone_mode=False, obj=application
        )
        # What is still buffered is written now, where a closed pipe is handled below,
        # not by the interpreter at exit.
        sys.stdout.flush()
    except SystemExit as exc:
        # Typer (its handler of OSError) and Rich (Console.on_broken_pipe) exit with 1
        # on a closed pipe, bypassing the handler below; any other exit stands.
        pipe = _broken_pipe(exc) if exc.code else None
        if pipe is None:
            raise
        errors.broken_pipe(pipe, output)
    except DevctlError as exc:
        errors.devctl(exc)
    except Abort as exc:
        # Ctrl-C at a [y/N] prompt arrives as Abort with the KeyboardInterrupt as its
        # context; end of input at a prompt, without it.
        if isinstance(exc.__context__, KeyboardInterrupt):
            errors.interrupted()
        errors.aborted()
    except ClickException as exc:
        errors.usage(exc, getattr(exc, "exit_code", EXIT_USAGE))
    except KeyboardInterrupt:
        errors.interrupted()
    except BrokenPipeError as exc:
        errors.broken_pipe(exc, output)
    except Exception as exc:
        errors.internal(exc)
    else:
        # Typer turns a Ctrl-C during a command into exit code 130, silently.
        code = result if isinstance(result, int) else 0
        if code == EXIT_INTERRUPTED:
            errors.interrupted()
        if code:
            sys.exit(code)
    finally:
        output.silence()
