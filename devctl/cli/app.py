"""The root Typer app and the Application object every command receives.

The Application owns the consoles, verbosity and settings; commands get it with
``get_app(ctx)`` and stay thin: parse, call the domain, render.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from devctl import __version__
from devctl.config import envvars

if TYPE_CHECKING:
    from devctl.clients.endpoints import Endpoints
    from devctl.config.loader import Settings
    from devctl.engines.base import Engine


@dataclass
class Application:
    config_path: str | None = None
    verbose: bool = False
    console: Console = field(default_factory=Console)
    err: Console = field(default_factory=lambda: Console(stderr=True))
    command: str | None = None  # the top-level command being run, e.g. "topics"
    _settings: Settings | None = None

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


def get_app(ctx: typer.Context) -> Application:
    root = ctx.find_root()
    if not isinstance(root.obj, Application):
        root.obj = Application()
    return root.obj


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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show details of errors.")
    ] = False,
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
    from devctl.cli.main import debug_enabled

    application.verbose = verbose or debug_enabled(os.environ.get(envvars.DEBUG))


# Each module defines `register(app)`; adding a command group is one line here.
COMMAND_MODULES = (
    "devctl.cli.commands.stack",
    "devctl.cli.commands.config",
    "devctl.cli.commands.topics",
    "devctl.cli.commands.test",
    "devctl.cli.commands.events",
    "devctl.cli.commands.tail",
    "devctl.cli.commands.publish",
    "devctl.cli.commands.groups",
    "devctl.cli.commands.sessions",
    "devctl.cli.commands.presence",
    "devctl.cli.commands.ratelimit",
    "devctl.cli.commands.cache",
    "devctl.cli.commands.keys",
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)
