"""The root Typer app and the Application object every command receives.

The Application owns the consoles, verbosity and settings; commands get it with
``get_app(ctx)`` and stay thin: parse, call the domain, render.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
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
    context: str | None = None  # --context: the named context, else DEVCTL_CONTEXT or current
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
            self._settings = load_settings(
                config_path=self.config_path, flags=given, context=self.context
            )
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

    def show(self, renderable: Any) -> None:
        """Print a table from ``output.table``: the plain layout (piped) goes to stdout as
        it is, so a piped table never imports Rich; anything else through the console."""
        from devctl.cli.output import PlainTable

        if isinstance(renderable, PlainTable):
            sys.stdout.write(renderable.render())
            sys.stdout.flush()
        else:
            self.console.print(renderable)

    def echo(self, text: str) -> None:
        """A line of text on stdout, taken literally (no markup); piped, without Rich."""
        from devctl.cli.output import plain_stdout

        if plain_stdout():
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        else:
            self.console.print(text, markup=False, emoji=False, highlight=False)

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
    # Rich answers a closed pipe with SystemExit(1); main ends such a run quietly with 0.
    console.on_broken_pipe = _raise_broken_pipe  # type: ignore[method-assign]
    return console


def _raise_broken_pipe() -> None:
    raise BrokenPipeError


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
    "stats": ("redis",),
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
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            help="Use this context (devctl context list) instead of DEVCTL_CONTEXT or the current one.",
            show_default=False,
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
    application.context = context
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
    if _top_level_help(args):
        return _help_command()
    root_command = typer_command(load_commands(args))
    option = _verbose_option()

    def add(command: Any) -> None:
        for child in (getattr(command, "commands", None) or {}).values():
            if all(param.name != option.name for param in child.params):
                child.params.append(option)
            add(child)

    add(root_command)
    from devctl.cli.guard import guard_destructive

    guard_destructive(root_command)
    return root_command


@dataclass(frozen=True)
class CommandInfo:
    """A top-level command (or group): what `devctl --help` shows of it, and its module."""

    module: str  # devctl.cli.commands.<module>, whose `register(app)` adds the command
    panel: str  # the help panel listing it (the command's rich_help_panel)
    summary: str  # the first paragraph of its help (docstring, or the group's help=)


# Each top-level command (or group); adding a command is one line here. Listed as
# Typer lists them (a module's commands before the groups), which is help's order.
# The summaries repeat the commands' own help so that `devctl --help` needs none
# of their modules: tests/cli/test_help.py checks that they agree.
COMMANDS: dict[str, CommandInfo] = {
    "up": CommandInfo(
        "stack",
        "Stack",
        "Start the stack (or verify it, for external), apply the topics, print the endpoints.",
    ),
    "down": CommandInfo(
        "stack", "Stack", "Stop the stack (SIGTERM, then SIGKILL after local.stop_timeout)."
    ),
    "status": CommandInfo(
        "stack",
        "Stack",
        "Show each service: engine, pid, address, version, uptime, health, latency.",
    ),
    "logs": CommandInfo("stack", "Stack", "Print a service's log (local engine)."),
    "doctor": CommandInfo(
        "stack",
        "Stack",
        "Check binaries, ports, data dir, config and Docker; print a fix for each failure.",
    ),
    "serve": CommandInfo(
        "serve",
        "Stack",
        "Run the DevConnect backend on the stack: API instances and consumers, supervised.",
    ),
    "test": CommandInfo(
        "test",
        "Checks",
        "Run the integration checks; exit 0 all pass, 1 any failure, 3 stack not reachable.",
    ),
    "tail": CommandInfo(
        "tail",
        "Kafka",
        "Follow events on topics: decoded, filtered, with partition:offset; "
        "Ctrl-C prints a summary.",
    ),
    "publish": CommandInfo(
        "publish",
        "Kafka",
        "Publish events; every one is validated against the registry before the first is sent.",
    ),
    "keys": CommandInfo(
        "keys", "Redis", "Print the Redis key schema: pattern, type, TTL, purpose, hash tag."
    ),
    "top": CommandInfo(
        "top",
        "Stack",
        "Live dashboard: topic rates and lag, presence, API latency, outbox, Redis, last events.",
    ),
    "stats": CommandInfo(
        "stats",
        "Stack",
        "Show the analytics: events per minute per type with sparklines, DAU/MAU, signups, top users.",
    ),
    "seed": CommandInfo(
        "seed", "Stack", "Fill the running API with demo data (through HTTP and Socket.IO)."
    ),
    "config": CommandInfo("config", "Configuration", "Inspect the effective configuration."),
    "topics": CommandInfo("topics", "Kafka", "Manage Kafka topics."),
    "events": CommandInfo("events", "Kafka", "DevConnect event types and their schemas."),
    "groups": CommandInfo("groups", "Kafka", "Consumer groups: members, committed offsets, lag."),
    "sessions": CommandInfo("sessions", "Redis", "Seed, inspect and revoke sessions."),
    "presence": CommandInfo("presence", "Redis", "Seed and inspect who is online."),
    "ratelimit": CommandInfo("ratelimit", "Redis", "Inspect and reset rate limits."),
    "cache": CommandInfo("cache", "Redis", "Cache statistics and flushing."),
    "db": CommandInfo("db", "Database", "Apply and inspect the API database's migrations."),
    "context": CommandInfo(
        "context", "Configuration", "Named targets (engine, endpoints); protect production."
    ),
}
COMMAND_MODULES = tuple(
    dict.fromkeys(f"devctl.cli.commands.{info.module}" for info in COMMANDS.values())
)
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

    Completion and an unknown name need them all; `--version` needs none.
    """
    from devctl.cli.argv import command_name

    name = command_name(args)
    if name in COMMANDS and not os.environ.get("_DEVCTL_COMPLETE"):
        return register((f"devctl.cli.commands.{COMMANDS[name].module}",))
    if name is None and "--version" in args and not {"-h", "--help"} & set(args):
        return app
    return register()


def _top_level_help(args: Sequence[str]) -> bool:
    """True when the command line asks for the root's help and nothing else can run:
    no command named, and --help / -h or no arguments at all (no_args_is_help)."""
    from devctl.cli.argv import command_name

    if os.environ.get("_DEVCTL_COMPLETE") or command_name(args) is not None:
        return False
    return not args or bool({"-h", "--help"} & set(args))


def _help_command() -> Any:
    """The root command with a stand-in for each top-level command, made from COMMANDS.

    The root's help lists only each command's name, panel and summary, so the
    stand-ins carry just those: importing every command module and building all
    their parameters (~45 ms of Typer's work, more than the rest of the help) would
    change nothing in it. The root's own options are the real ones, so `--version`
    or `--config` given beside `--help` behave as with the full tree.
    """
    from typer.core import TyperCommand

    # The app without its registered commands (some may be, when called in-process).
    bare = copy.copy(app)
    bare.registered_commands, bare.registered_groups = [], []
    root_command: Any = typer_command(bare)
    for name, info in COMMANDS.items():
        root_command.add_command(
            TyperCommand(name, help=info.summary, rich_help_panel=info.panel), name
        )
    return root_command
