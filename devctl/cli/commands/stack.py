"""Stack life cycle: up, down, status, logs, doctor (and the processes of `devctl serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from devctl.cli.app import Application, get_app
from devctl.cli.flags import flag_of, names_flags, with_remedy
from devctl.cli.options import (
    DataDirOption,
    EngineOption,
    JsonOption,
    YesOption,
    data_dir_flag,
)
from devctl.cli.output import cell, confirm, duration, millis, print_json, table
from devctl.errors import EXIT_FAILED, UsageError

if TYPE_CHECKING:
    from devctl.engines.base import Engine
    from devctl.supervisor.control import ProcessStatus
    from devctl.supervisor.runstate import ServeState


def _flags(
    data_dir: Path | None,
    engine: str | None = None,
    redis_port: int | None = None,
    kafka_port: int | None = None,
) -> dict[str, tuple[Any, str]]:
    flags: dict[str, tuple[Any, str]] = data_dir_flag(data_dir)
    flags["engine"] = (engine, flag_of("engine"))
    flags["redis.port"] = (redis_port, flag_of("redis.port"))
    flags["kafka.port"] = (kafka_port, flag_of("kafka.port"))
    return flags


def up(
    ctx: typer.Context,
    engine: EngineOption = None,
    redis_port: Annotated[
        int | None, typer.Option(help="Port for Redis (local engine; 0 = any free port).")
    ] = None,
    kafka_port: Annotated[
        int | None, typer.Option(help="Port for Kafka (local engine; 0 = any free port).")
    ] = None,
    data_dir: DataDirOption = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave a started service running if the other fails.")
    ] = False,
    with_ui: Annotated[
        bool,
        typer.Option(
            "--with-ui", help="Docker engine: also the Kafka UI (8080) and Redis Commander (8081)."
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Start the stack (or verify it, for external), apply the topics, print the endpoints.

    Example: devctl up --redis-port 6380
    """
    from devctl.stack import bring_up

    app = get_app(ctx)
    flags = _flags(data_dir, engine, redis_port, kafka_port)
    # A setting (docker.with_ui), so the Engine interface needs no per-engine options.
    flags["docker.with_ui"] = (True if with_ui else None, "--with-ui")
    settings = app.settings(flags)
    chosen = app.engine()
    if not chosen.takes_ports and (redis_port is not None or kafka_port is not None):
        app.info(
            f"note: the {chosen.name} engine chooses no ports; --redis-port / --kafka-port ignored"
        )
    with app.err.status(f"bringing the {chosen.name} stack up...") as spinner:
        report = bring_up(settings, chosen, keep=keep, progress=lambda msg: spinner.update(msg))
    result, seconds, failed, created = report.result, report.seconds, report.failed, report.created
    for note in result.notes:
        app.info(f"note: {note}")
    if json_output:
        print_json(
            {
                "engine": chosen.name,
                "endpoints": result.endpoints.as_env(),
                "started": result.started,
                "already_running": result.already_running,
                "topics_created": created,
                "topics_failed": {row.topic: row.detail or row.result for row in failed},
                "seconds": round(seconds, 3),
                "notes": result.notes,
            }
        )
    else:
        state = f"started {', '.join(result.started)}" if result.started else "already running"
        app.console.print(
            f"[green]✔[/green] {chosen.name} stack {state} in {seconds:.2f}s; "
            f"topics: {len(created)} created, {report.unchanged} already there",
            highlight=False,
        )
        endpoints = result.endpoints.as_env()
        app.show(table(None, ["variable", "value"], endpoints.items()))
        app.console.print(f"[dim]data dir: {settings.data_dir}[/dim]", highlight=False)
    if failed:
        for row in failed:
            reason = row.detail if row.action == "unsupported" else row.result
            app.info(f"[red]topic {row.topic}: {row.action}: {escape(reason)}[/red]")
        app.info("the stack runs, but its topics differ from the config; see `devctl topics apply`")
        raise typer.Exit(EXIT_FAILED)


def down(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the data dir (Redis data, logs).")
    ] = False,
    yes: YesOption = False,
) -> None:
    """Stop the stack (SIGTERM, then SIGKILL after local.stop_timeout).

    A `devctl serve` running on it (detached or not) stops first, gracefully: the
    API instances drain, then the consumers commit and leave.

    Example: devctl down --purge --yes
    """
    from devctl.stack import take_down

    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    chosen = app.engine()
    if purge and chosen.keeps_data:
        confirm(app.err, f"Delete all data in {settings.data_dir} (Redis data, logs)?", yes)
    result = take_down(chosen, purge=purge)
    for line in result.lines:
        app.console.print(line, highlight=False)
    for warning in result.warnings:
        app.info(f"[yellow]warning:[/yellow] {escape(warning)}")


def status(
    ctx: typer.Context, data_dir: DataDirOption = None, json_output: JsonOption = False
) -> None:
    """Show each service: engine, pid, address, version, uptime, health, latency.

    With a `devctl serve` running, also its API instances and consumers: pid, port,
    uptime, restarts, and health from each instance's /readyz (JSON: after the
    services, with "engine": "serve").

    Exit 0 when every service is healthy, 3 when none answers, 1 otherwise.

    Example: devctl status --json | jq '.[0].health'
    """
    from devctl.errors import EXIT_NOT_RUNNING
    from devctl.supervisor.control import serve_status

    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    statuses = app.engine().status()
    serving, processes = serve_status(settings.data_dir)
    if json_output:
        print_json([s.to_json() for s in statuses] + [p.to_json() for p in processes])
    else:
        if settings.context is not None:
            from devctl.cli.guard import describe

            app.info(f"context: {describe(settings.context)}")
        colours = {"ok": "green", "unreachable": "red", "stopped": "yellow"}
        rows = [
            (
                s.service,
                s.engine,
                s.pid,
                s.address,
                s.version,
                duration(s.uptime_s),
                f"[{colours[s.health]}]{s.health}[/]",
                millis(s.latency_ms),
            )
            for s in statuses
        ]
        app.show(
            table(
                None,
                ["service", "engine", "pid", "address", "version", "uptime", "health", "latency"],
                rows,
            )
        )
        for s in statuses:
            if s.detail:
                app.info(f"{s.service}: {escape(s.detail)}")
            for limit in s.limitations:
                app.info(
                    f"[yellow]{s.service}: limit:[/yellow] {escape(limit['summary'])}; "
                    f"remedy: {escape(limit['remedy'])}"
                )
        if serving is not None:
            _show_serve(app, serving, processes)
    if all(s.health != "ok" for s in statuses):
        raise typer.Exit(EXIT_NOT_RUNNING)  # nothing answers: not running or not reachable
    if any(s.health != "ok" for s in statuses) or any(p.health != "ok" for p in processes):
        raise typer.Exit(EXIT_FAILED)


def _show_serve(app: Application, serving: ServeState, processes: list[ProcessStatus]) -> None:
    colours = {"ok": "green", "degraded": "yellow", "unreachable": "red", "gave-up": "red"}
    rows = [
        (
            cell(p.service),
            p.kind,
            p.pid,
            p.port,
            duration(p.uptime_s),
            p.restarts,
            f"[{colours.get(p.health, 'yellow')}]{escape(p.health)}[/]",
            millis(p.latency_ms),
        )
        for p in processes
    ]
    title = f"devctl serve (pid {serving.supervisor.pid}, {serving.mode})"
    app.show(
        table(
            title,
            ["process", "kind", "pid", "port", "uptime", "restarts", "health", "latency"],
            rows,
        )
    )
    for p in processes:
        if p.detail:
            app.info(f"{p.service}: {escape(p.detail)}")


def logs(
    ctx: typer.Context,
    service: Annotated[
        str,
        typer.Argument(
            metavar="SERVICE",
            help="Which log: one of the engine's services (local: redis, kafka), or of "
            "`devctl serve`: api (every instance), api-N, a consumer.",
            show_default=False,
        ),
    ],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C stops).")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="How many last lines to show.")
    ] = 50,
    all_lines: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also show known-harmless lines (Tansu's ERROR for each lookup of a "
            "consumer group it has not stored yet), hidden by default.",
        ),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Print a service's log (local engine).

    Also the processes of `devctl serve`: `logs api` shows every instance (each line
    behind its name), `logs api-2` one of them, `logs NAME` a consumer.

    Example: devctl logs kafka -f -n 20
    """
    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    chosen = app.engine()
    # The engine reports its services, so the choices are checked here, not by typer.
    if service not in chosen.services:
        _serve_logs(chosen, settings.data_dir, service, lines, follow)
        return
    if not follow:
        for line in chosen.log_lines(service, lines, noise=all_lines):
            typer.echo(line)
        return
    try:
        for line in chosen.follow_log(service, lines, noise=all_lines):
            typer.echo(line)
    except KeyboardInterrupt:
        return


def _serve_logs(engine: Engine, data_dir: Path, name: str, lines: int, follow: bool) -> None:
    """`logs api`, `logs api-N`, `logs CONSUMER`: the log files of `devctl serve`."""
    from devctl.consumers import CONSUMERS
    from devctl.errors import StackNotRunning
    from devctl.supervisor.logs import api_log_names, follow_logs, log_names, tail_logs

    known = log_names(data_dir)
    if name == "api":
        names = api_log_names(data_dir)
    elif name in known:
        names = [name]
    elif name in CONSUMERS:
        names = []
    else:
        choices = [*engine.services, "api", *(n for n in known if n not in engine.services)]
        choices += [n for n in CONSUMERS if n not in choices]
        raise UsageError(
            f"unknown service {name!r}",
            hint=f"the {engine.name} engine's services and devctl serve's processes: "
            + ", ".join(dict.fromkeys(choices)),
        )
    if not names:
        raise StackNotRunning(
            f"no {name} log in {data_dir}: devctl serve has not run {name} in this data dir",
            hint="`devctl serve` starts the API and the consumers",
        )
    prefix = len(names) > 1
    width = max(len(n) for n in names)

    def show(child: str, line: str) -> None:
        typer.echo(f"{child:<{width}} | {line}" if prefix else line)

    if not follow:
        for child, line in tail_logs(data_dir, names, lines):
            show(child, line)
        return
    try:
        for child, line in follow_logs(data_dir, names, lines):
            show(child, line)
    except KeyboardInterrupt:
        return


def doctor(
    ctx: typer.Context, data_dir: DataDirOption = None, json_output: JsonOption = False
) -> None:
    """Check binaries, ports, data dir, config and Docker; print a fix for each failure.

    Example: devctl doctor
    """
    import dataclasses

    from devctl.engines.base import DoctorCheck
    from devctl.errors import ConfigError
    from devctl.stack import doctor_checks

    app = get_app(ctx)
    checks: list[DoctorCheck] = []
    try:
        settings = app.settings(data_dir_flag(data_dir))
        where = (
            str(settings.config_file)
            if settings.config_file
            else "no config file (packaged defaults)"
        )
        checks.append(DoctorCheck("config", True, f"valid: {where}"))
    except ConfigError as exc:
        checks.append(
            DoctorCheck(
                "config",
                False,
                exc.message,
                exc.hint or "fix the file, then `devctl config validate`",
            )
        )
        settings = None
    checks += doctor_checks(app.engine() if settings is not None else None)
    checks = [
        dataclasses.replace(c, fix=with_remedy(c.fix, c.field)) if c.field else c for c in checks
    ]
    if json_output:
        print_json([c.__dict__ for c in checks])
    else:
        rows = [
            (
                ("[green]ok[/]" if c.ok else ("[red]FAIL[/]" if c.required else "[yellow]warn[/]")),
                c.name,
                escape(c.detail),
                escape(c.fix or ""),
            )
            for c in checks
        ]
        app.show(table(None, ["", "check", "detail", "fix"], rows))
    if any(not c.ok and c.required for c in checks):
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    # names_flags: the engines' errors name settings (data_dir, redis.port, keep_on_failure).
    for command in (up, down, status, logs, doctor):
        app.command(rich_help_panel="Stack")(names_flags(command))
