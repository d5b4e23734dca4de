"""devctl groups list / describe / lag / reset: consumer groups, committed offsets and lag."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from devctl.cli.app import get_app
from devctl.cli.flags import names_flags
from devctl.cli.options import DataDirOption, JsonOption, YesOption, data_dir_flag
from devctl.cli.output import confirm, print_json, table
from devctl.errors import EXIT_FAILED, UsageError

if TYPE_CHECKING:
    from rich.table import Table

    from devctl.cli.output import PlainTable
    from devctl.streams.groups import GroupAdmin, TopicLag

groups_app = typer.Typer(
    help="Consumer groups: members, committed offsets, lag.", no_args_is_help=True
)


def _admin(ctx: typer.Context, data_dir: DataDirOption) -> GroupAdmin:
    from devctl.streams.groups import GroupAdmin

    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    return GroupAdmin(app.endpoints(), settings)


def _members(count: int | None) -> str:
    return "? (not reported)" if count is None else str(count)


@groups_app.command("list")
def list_groups(
    ctx: typer.Context, data_dir: DataDirOption = None, json_output: JsonOption = False
) -> None:
    """List consumer groups with their state and member count.

    Example: devctl groups list --json
    """
    groups = _admin(ctx, data_dir).summaries()
    if json_output:
        print_json([g.__dict__ for g in groups])
        return
    rows = [(escape(g.group), g.state, _members(g.members)) for g in groups]
    get_app(ctx).show(table(None, ["group", "state", "members"], rows))
    if not groups:
        get_app(ctx).info("no consumer groups")


@groups_app.command("describe")
def describe(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="Group id.", show_default=False)],
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a group's state, members and, per partition, committed offset, end offset and lag.

    Example: devctl groups describe analytics-consumer
    """
    d = _admin(ctx, data_dir).describe(group)
    if json_output:
        print_json(
            {
                "group": d.group,
                "state": d.state,
                "coordinator": d.coordinator,
                "members_reported": d.members_reported,
                "members": [m.__dict__ for m in d.members],
                "lag": d.lag,
                "partitions": [
                    {
                        "topic": p.topic,
                        "partition": p.partition,
                        "committed": p.committed,
                        "end": p.end,
                        "lag": p.lag,
                        "member": p.member,
                    }
                    for p in d.partitions
                ],
            }
        )
        return
    console = get_app(ctx).console
    members = len(d.members) if d.members_reported else None
    console.print(
        f"group [bold]{escape(d.group)}[/bold]  state {d.state}  members {_members(members)}  "
        f"coordinator {d.coordinator}  total lag {d.lag}",
        highlight=False,
    )
    if d.members:
        get_app(ctx).show(
            table(
                "members",
                ["member", "client", "host", "partitions"],
                [
                    (
                        escape(m.member_id),
                        escape(m.client_id),
                        m.host,
                        ", ".join(f"{t}[{p}]" for t, p in m.partitions) or "-",
                    )
                    for m in d.members
                ],
            )
        )
    get_app(ctx).show(
        table(
            "partitions",
            ["topic", "partition", "committed", "end", "lag", "member"],
            [(p.topic, p.partition, p.committed, p.end, p.lag, p.member) for p in d.partitions],
        )
    )


def _lag_table(rows: list[TopicLag]) -> Table | PlainTable:
    return table(
        None,
        ["group", "topic", "partitions", "lag", "never committed"],
        [(escape(r.group), r.topic, r.partitions, r.lag, r.uncommitted) for r in rows],
    )


@groups_app.command("lag")
def lag(
    ctx: typer.Context,
    group: Annotated[
        str | None, typer.Argument(help="Group id (default: every group).", show_default=False)
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between refreshes (--watch).")
    ] = 2.0,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Lag per group and topic (true end offset minus committed offset; caught up shows 0).

    Example: devctl groups lag --watch
    """
    if watch and json_output:
        raise UsageError("--watch refreshes a table; it cannot be combined with --json")
    admin = _admin(ctx, data_dir)
    app = get_app(ctx)
    if not watch:
        skipped: list[str] = []
        rows = admin.lag(group, skipped)
        if json_output:
            print_json([r.__dict__ for r in rows])
        else:
            app.show(_lag_table(rows))
        for name in skipped:
            app.info(
                f"[yellow]warning:[/yellow] group {escape(name)} is listed but could not be described; left out"
            )
        return
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    def frame() -> Group:
        stamp = time.strftime("%H:%M:%S")
        return Group(
            Text(f"lag at {stamp} (every {interval:g}s, Ctrl-C to stop)", style="dim"),
            _lag_table(admin.lag(group)),
        )

    try:
        if not app.console.is_terminal:
            # Piped or logged: one frame after another rather than redrawing in place.
            while True:
                app.console.print(frame())
                app.console.file.flush()
                time.sleep(interval)
        with Live(frame(), console=app.console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass


@groups_app.command("reset")
@names_flags
def reset(
    ctx: typer.Context,
    group: Annotated[str, typer.Argument(help="Group id.", show_default=False)],
    topic: Annotated[str, typer.Option("--topic", help="Topic whose offsets to reset.")],
    to: Annotated[
        str,
        typer.Option("--to", help="earliest, latest, an OFFSET, or a TIME (10m, 2h, ISO-8601)."),
    ],
    execute: Annotated[
        bool, typer.Option("--execute", help="Apply the plan (default: dry run).")
    ] = False,
    yes: YesOption = False,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Reset a group's committed offsets on a topic; a dry run unless --execute (asks unless --yes). Refuses unknown groups and groups with members.

    Example: devctl groups reset analytics-consumer --topic analytics-events --to 1h --execute --yes
    """
    admin = _admin(ctx, data_dir)
    app = get_app(ctx)
    # Refused in a dry run too: a plan for a typo would read as if --execute could apply it.
    admin.ensure_exists(group)
    rows = admin.plan_reset(group, topic, to)
    if execute:
        moves = ", ".join(f"{r.partition}: {r.current} -> {r.target}" for r in rows)
        confirm(app.err, f"Reset group '{group}' on {topic} ({moves})?", yes)
        rows = admin.reset(group, rows)
    if json_output:
        print_json(
            {
                "group": group,
                "topic": topic,
                "executed": execute,
                "partitions": [r.__dict__ for r in rows],
            }
        )
    else:
        app.show(
            table(
                "applied" if execute else "plan (dry run: nothing changed; --execute applies it)",
                ["partition", "committed", "new offset", "end", "lag after", "note"]
                + (["result"] if execute else []),
                [
                    (r.partition, r.current, r.target, r.end, max(r.end - r.target, 0), r.note)
                    + ((f"failed: {r.error}" if r.error else "ok",) if execute else ())
                    for r in rows
                ],
            )
        )
        if not execute:
            try:
                admin.ensure_inactive(group)
            except Exception as exc:  # shown, not raised: a dry run changes nothing
                app.info(f"[yellow]note:[/yellow] --execute would refuse: {escape(str(exc))}")
    if execute and any(r.error for r in rows):
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.add_typer(groups_app, name="groups", rich_help_panel="Kafka")
