"""devctl serve: the DevConnect backend (API instances, consumers) on the stack, supervised."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from devctl.cli.app import Application, get_app
from devctl.cli.flags import names_flags
from devctl.cli.options import DataDirOption, data_dir_flag
from devctl.cli.output import Literal, cell, table
from devctl.errors import EXIT_INTERRUPTED, OperationFailed

if TYPE_CHECKING:
    from types import FrameType

    from devctl.stack import ServeStack
    from devctl.supervisor.plan import ServePlan
    from devctl.supervisor.runstate import ServeState
    from devctl.supervisor.spec import Event

# Colours of the name prefixes, in the order of the children.
_COLOURS = ("cyan", "magenta", "green", "blue", "yellow", "bright_cyan", "bright_magenta")
_EVENT_STYLES = {
    "started": "dim",
    "ready": "green",
    "exited": "yellow",
    "unhealthy": "yellow",
    "hung": "bold red",
    "gave-up": "bold red",
    "reloading": "cyan",
    "shutdown": "bold",
    "stopping": "dim",
    "stopped": "dim",
    "killed": "yellow",
}
_SELF = "devctl"


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(
            help="Address the API listens on (api.host; default 127.0.0.1).", show_default=False
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Port of the first API instance; the others take the next ones (api.port; default 3000).",
            show_default=False,
        ),
    ] = None,
    instances: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=32,
            help="How many API instances to run (api.instances; default 1).",
            show_default=False,
        ),
    ] = None,
    consumers: Annotated[
        str | None,
        typer.Option(
            metavar="NAMES",
            help="Comma-separated consumers to run (default: every registered one).",
            show_default=False,
        ),
    ] = None,
    no_consumers: Annotated[
        bool, typer.Option("--no-consumers", help="Run no consumer, the API only.")
    ] = False,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload",
            help="Restart the processes when a devctl source file changes (one instance).",
        ),
    ] = False,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            "-d",
            help="Run in the background once every instance is up; `devctl down` stops it.",
        ),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Run the DevConnect backend on the stack: API instances and consumers, supervised.

    Starts the stack first when nothing runs, applies the database migrations, then
    the API instances (ports from --port up) and the consumers, and prefixes their
    output with their names. A crashed or hung process restarts with backoff; after 5
    crashes within a minute serve gives up on it (and exits 1 once every API
    instance did). Ctrl-C (exit 130) or SIGTERM (exit 0) stop everything gracefully:
    the API instances drain first, then the consumers commit and leave, then the
    stack if serve started it (with --detach, `devctl down` stops serve and stack).

    Example: devctl serve --detach --instances 2 && devctl logs api -n 5 && devctl down
    """
    from devctl.stack import apply_migrations, serve_stack
    from devctl.supervisor.runstate import ensure_not_serving
    from devctl.supervisor.serve import build_plan, serve_options

    app = get_app(ctx)
    flags: dict[str, tuple[Any, str]] = data_dir_flag(data_dir)
    flags["api.host"] = (host, "--host")
    flags["api.port"] = (port, "--port")
    flags["api.instances"] = (instances, "--instances")
    settings = app.settings(flags)
    names = None if consumers is None else [n.strip() for n in consumers.split(",") if n.strip()]
    options = serve_options(settings, consumers=names, no_consumers=no_consumers, reload=reload)
    ensure_not_serving(settings.data_dir)
    plan = build_plan(settings, options)
    from devctl.supervisor.plan import check_ports

    check_ports(plan.children)

    engine = app.engine()
    # Until the supervisor takes the signals over (and again after it), SIGTERM
    # unwinds like Ctrl-C, so that a stack serve started is stopped on the way out.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with contextlib.ExitStack() as cleanup:
            with app.err.status(f"checking the {engine.name} stack...") as spinner:
                stack = cleanup.enter_context(
                    serve_stack(
                        settings,
                        engine,
                        progress=lambda msg: spinner.update(msg),
                        on_notice=lambda line: _notice(app, line),
                    )
                )
                _say_stack(app, stack, detach)
                spinner.update("applying database migrations")
                database = apply_migrations(settings)
            if database is None:
                app.info("database: no migrations to apply (devctl.db is not installed)")
            elif database.applied:
                applied = ", ".join(r.id for r in database.applied)
                app.info(f"database: applied {applied} ({database.url})")
            else:
                app.info(f"database: schema up to date at {database.to_revision} ({database.url})")

            if detach:
                _detach(app, plan, settings.cwd)
                stack.keep()  # the detached serve runs on it now: `devctl down` stops both
                return
            _foreground(app, plan)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _notice(app: Application, line: str) -> None:
    from rich.markup import escape

    app.info(escape(line))


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _say_stack(app: Application, stack: ServeStack, detach: bool) -> None:
    name = stack.engine.name
    report = stack.report
    if report is None or not report.result.started:
        app.info(f"using the running {name} stack")
        return
    started = ", ".join(report.result.started)
    took = f"in {report.seconds:.2f}s"
    if not stack.owned:
        running = ", ".join(report.result.already_running)
        app.info(
            f"the {name} stack was partly running ({running}): started {started} {took}; "
            "serve leaves it running when it ends"
        )
    elif detach:
        app.info(
            f"the {name} stack was not running: started it ({started}) {took}; "
            "`devctl down` stops it with serve"
        )
    else:
        app.info(
            f"the {name} stack was not running: started it ({started}) {took}; "
            "serve stops it when it ends"
        )


def _foreground(app: Application, plan: ServePlan) -> None:
    from devctl.supervisor.plan import FOREGROUND, run_plan

    printer = _Printer(app, plan)
    outcome = run_plan(plan, FOREGROUND, on_line=printer.line, on_event=printer.event)
    if outcome.killed:
        app.info(
            f"[yellow]warning:[/yellow] killed after the stop timeout: {', '.join(outcome.killed)}"
        )
    if outcome.all_gave_up:
        raise OperationFailed(
            f"every API instance gave up: {', '.join(outcome.gave_up)}",
            hint="`devctl logs api` shows what they printed before each crash",
        )
    if outcome.signal == signal.SIGINT:
        raise typer.Exit(EXIT_INTERRUPTED)


def _detach(app: Application, plan: ServePlan, cwd: Path) -> None:
    from devctl.supervisor.daemon import detach

    with app.err.status("starting devctl serve in the background...") as spinner:

        def progress(line: str) -> None:
            # "2025-01-31 12:00:00 started: api-1 started (pid 42)": the message.
            spinner.update(line.partition(": ")[2] or line)

        state = detach(plan, cwd=cwd, progress=progress)
    _show_detached(app, plan, state)


def _show_detached(app: Application, plan: ServePlan, state: ServeState) -> None:
    from devctl.supervisor.serve import listen_urls

    urls = dict(listen_urls(plan))
    app.console.print(
        f"[green]✔[/green] devctl serve runs in the background (pid {state.supervisor.pid})",
        highlight=False,
    )
    rows = [
        (cell(c.name), c.pid, c.port, cell(urls.get(c.name, "-")), cell(c.state))
        for c in state.children
    ]
    app.show(table(None, ["process", "pid", "port", "url", "state"], rows))
    first = next(iter(urls.values()), None)
    if first:
        app.console.print(f"docs: {first}/docs", highlight=False, markup=False)
    app.info("logs: `devctl logs api`; status: `devctl status`; stop: `devctl down`")


class _Printer:
    """Children's lines on stdout behind their coloured names; events on stderr."""

    def __init__(self, app: Application, plan: ServePlan) -> None:
        from devctl.supervisor.serve import listen_urls

        self.app = app
        names = [child.name for child in plan.children]
        self.width = max(len(name) for name in [*names, _SELF])
        self.colours = {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(names)}
        self.urls = listen_urls(plan)

    def _prefix(self, name: str, style: str) -> Any:
        from rich.text import Text

        return Text(f"{name:<{self.width}} | ", style=style)

    def line(self, name: str, line: str) -> None:
        text = self._prefix(name, self.colours.get(name, "white"))
        visible = cell(line)  # control characters shown as escapes, never run
        text.append(visible.value if isinstance(visible, Literal) else line)
        self.app.console.print(text, soft_wrap=True, highlight=False)

    def event(self, event: Event) -> None:
        from rich.text import Text

        if event.kind == "all-ready":
            self._all_ready(event)
            return
        style = _EVENT_STYLES.get(event.kind, "")
        text = self._prefix(_SELF, "bold")
        loud = event.kind in ("gave-up", "hung")
        text.append(("✘ " if loud else "") + event.message, style=style)
        if event.kind == "gave-up" and event.child:
            text.append(Text(f"\n`devctl logs {event.child}` shows what it printed", style="dim"))
        self.app.err.print(text, soft_wrap=True, highlight=False)

    def _all_ready(self, event: Event) -> None:
        from rich.text import Text

        gave_up = set(event.data.get("gave_up") or ())
        for name, url in self.urls:
            if name in gave_up:
                continue
            text = self._prefix(_SELF, "bold")
            text.append(f"✔ {name}: DevConnect API on {url} (docs: {url}/docs)", style="bold green")
            self.app.err.print(text, soft_wrap=True, highlight=False)
        if gave_up:
            self.app.err.print(
                Text(f"✘ gave up on: {', '.join(sorted(gave_up))}", style="bold red"),
                highlight=False,
            )
        self.app.err.print(Text("Ctrl-C stops everything gracefully", style="dim"), highlight=False)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Stack")(names_flags(serve))
