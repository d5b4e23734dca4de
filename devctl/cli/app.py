"""The root Typer app and the Application object every command receives.

The Application owns the consoles, verbosity and settings; commands get it with
``get_app(ctx)`` and stay thin: parse, call the domain, render.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.main import get_command as typer_command

from devctl import __version__
from devctl.config import envvars

if TYPE_CHECKING:
    from rich.console import Console

    from devctl.clients.endpoints import Endpoints
    from devctl.config.loader import Settings
    from devctl.engines.base import Engine


@dataclass
class Application:
    config_path: str | None = None
    verbose: bool = False
    command: str | None = None  # the top-level command being run, e.g. "topics"
    _settings: Settings | None = None
    # Created on first use: rich.console costs ~30 ms to import and some commands
    # (--version, --json output) never print through it.
    _console: Console | None = None
    _err: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = make_console()
        return self._console

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = make_console(stderr=True)
        return self._err

    def settings(self, flags: Mapping[str, tuple[Any, str]] | None = None) -> Settings:
        """Load settings once; flags (dotted key -> (value, flag name)) override everything."""
        from devctl.config.loader import load_settings

        given = {k: v for k, v in (flags or {}).items() if v[0] is not None}
        if self._settings is None or given:
            self._settings = load_settings(config_path=self.config_path, flags=given)
        return self._settings

    def engine(self, flags: Mapping[str, tuple[Any, str]] | None = None) -> Engine:
        from devctl.engines import select_engine

        return select_engine(self.settings(flags))

    def endpoints(
        self,
        flags: Mapping[str, tuple[Any, str]] | None = None,
        services: Collection[str] | None = None,
    ) -> Endpoints:
        """Endpoints of the running stack; only the services the command uses must run.

        ``services`` defaults to what the running command needs (COMMAND_SERVICES),
        so a dead Redis does not stop `topics list`, nor a dead Kafka `sessions count`.
        """
        if services is None:
            services = COMMAND_SERVICES.get(self.command or "")
        if services is None:
            return self.engine(flags).endpoints()
        return self.engine(flags).endpoints(services)

    def info(self, message: str) -> None:
        """Progress and notes go to stderr so --json output stays clean."""
        self.err.print(message, highlight=False)

    def debug(self, message: str) -> None:
        if self.verbose:
            self.err.print(f"[dim]{message}[/dim]", highlight=False)


# Width of a console whose output is not a terminal: wide enough that no table cell
# or message is ever folded, so a value (URL, session id) stays whole on its line.
PIPE_WIDTH = 100_000


def make_console(*, stderr: bool = False) -> Console:
    """A Rich console; piped or redirected, it never wraps (as kubectl and rpk print).

    Rich assumes 80 columns when the stream is not a terminal and folds table cells
    and messages at that width, which splits URLs and ids over lines; a COLUMNS set
    by the user is still honoured.
    """
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = PIPE_WIDTH
        console.soft_wrap = True
    return console


# The servers each top-level command (or group) reaches through `Application.endpoints`;
# one not listed here needs both.
COMMAND_SERVICES: dict[str, tuple[str, ...]] = {
    "topics": ("kafka",),
    "publish": ("kafka",),
    "tail": ("kafka",),  # --enrich also reads Redis; a dead Redis fails there, by name
    "groups": ("kafka",),
    "sessions": ("redis",),
    "presence": ("redis",),
    "ratelimit": ("redis",),
    "cache": ("redis",),
    "keys": ("redis",),
}


def debug_enabled(value: str | None) -> bool:
    """DEVCTL_DEBUG=1/true/yes turns details on; 0/false/no/empty leaves them off."""
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def get_app(ctx: typer.Context) -> Application:
    root = ctx.find_root()
    if not isinstance(root.obj, Application):
        root.obj = Application()
    return root.obj


VERBOSE_HELP = "Show details of errors and debug logs (also DEVCTL_DEBUG=1)."


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"devctl {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="devctl",
    help="DevConnect's ops and dev toolkit: the Redis + Kafka stack in one command.\n\n"
    "Example: devctl up && devctl test && devctl down",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Config file (default: ./devctl.yaml or ./config/devctl.yaml)."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)] = False,
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = None,
) -> None:
    """DevConnect's ops and dev toolkit."""
    application = get_app(ctx)
    application.config_path = str(config) if config else None
    application.command = ctx.invoked_subcommand
    # `or`: a -v after the command (see _verbose_option) may have been parsed first.
    application.verbose = (
        application.verbose or verbose or debug_enabled(os.environ.get(envvars.DEBUG))
    )
    from devctl.logging_setup import configure_logging

    configure_logging(verbose=application.verbose)


def _late_verbose(ctx: typer.Context, value: bool) -> None:
    """-v/--verbose given after the command: as if given before it."""
    application = get_app(ctx)
    if value and not application.verbose:
        application.verbose = True
        from devctl.logging_setup import configure_logging

        # Logging was set up by the root callback, which ran before this was parsed.
        configure_logging(verbose=True)


def _verbose_option() -> Any:
    """The -v/--verbose option of every command and group, as Typer builds it.

    Typer reads root options only before the command (`devctl -v status`); this one
    option, added to every command below the root, lets `devctl status -v` mean the
    same. Typer builds the parameter from a declaration, so it is parsed, shown in
    help and completed like any other.
    """
    holder = typer.Typer(add_completion=False)

    @holder.command()
    def options(
        verbose: Annotated[
            bool,
            typer.Option(
                "--verbose", "-v", help=VERBOSE_HELP, callback=_late_verbose, expose_value=False
            ),
        ] = False,
    ) -> None:
        """Never run: it only declares the option."""

    (option,) = typer_command(holder).params
    return option


def build_command(args: Sequence[str]) -> Any:
    """The command line's Typer command tree, with -v/--verbose on every command."""
    root_command = typer_command(load_commands(args))
    option = _verbose_option()

    def add(command: Any) -> None:
        for child in (getattr(command, "commands", None) or {}).values():
            if all(param.name != option.name for param in child.params):
                child.params.append(option)
            add(child)

    add(root_command)
    return root_command


# Each top-level command (or group) and the module whose `register(app)` adds it;
# adding a command is one line here. Help lists them in this order.
COMMANDS: dict[str, str] = {
    "up": "stack",
    "down": "stack",
    "status": "stack",
    "logs": "stack",
    "doctor": "stack",
    "config": "config",
    "topics": "topics",
    "test": "test",
    "events": "events",
    "tail": "tail",
    "publish": "publish",
    "groups": "groups",
    "sessions": "sessions",
    "presence": "presence",
    "ratelimit": "ratelimit",
    "cache": "cache",
    "keys": "keys",
}
COMMAND_MODULES = tuple(dict.fromkeys(f"devctl.cli.commands.{m}" for m in COMMANDS.values()))
_registered: set[str] = set()


def register(modules: Sequence[str] = COMMAND_MODULES) -> typer.Typer:
    """Add the commands of ``modules`` to the app (each module once); all by default."""
    for module in COMMAND_MODULES:  # in COMMAND_MODULES order, whatever the argument's
        if module in modules and module not in _registered:
            importlib.import_module(module).register(app)
            _registered.add(module)
    return app


def load_commands(args: Sequence[str]) -> typer.Typer:
    """Register what the command line needs: Typer builds every registered command's
    parameters on each run (~50 ms for all), so a command run builds only its own.

    Help, completion and an unknown name need them all; `--version` needs none.
    """
    from devctl.cli.argv import command_name

    name = command_name(args)
    if name in COMMANDS and not os.environ.get("_DEVCTL_COMPLETE"):
        return register((f"devctl.cli.commands.{COMMANDS[name]}",))
    if name is None and "--version" in args and not {"-h", "--help"} & set(args):
        return app
    return register()
