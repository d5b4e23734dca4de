"""devctl topics list / describe / create / delete / apply."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, YesOption, data_dir_flag
from devctl.cli.output import confirm, print_json, table
from devctl.errors import EXIT_FAILED, UsageError

topics_app = typer.Typer(help="Manage Kafka topics.", no_args_is_help=True)


def _admin(ctx: typer.Context, data_dir: DataDirOption):  # type: ignore[no-untyped-def]
    from devctl.streams.topics import TopicAdmin

    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    return TopicAdmin(app.endpoints(), settings)


@topics_app.command("list")
def list_topics(
    ctx: typer.Context, data_dir: DataDirOption = None, json_output: JsonOption = False
) -> None:
    """List topics with partitions and total messages (true end offsets minus low offsets).

    Example: devctl topics list --json
    """
    summaries = _admin(ctx, data_dir).summaries()
    if json_output:
        print_json([s.__dict__ for s in summaries])
        return
    rows = [(s.name, s.partitions, s.messages, "yes" if s.configured else "") for s in summaries]
    get_app(ctx).console.print(table(None, ["topic", "partitions", "messages", "in config"], rows))


@topics_app.command("describe")
def describe(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Topic name.")],
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a topic's partitions (low/high offsets, leader) and configs.

    Example: devctl topics describe user-events
    """
    desc = _admin(ctx, data_dir).describe(name)
    if json_output:
        print_json(
            {
                "name": desc.name,
                "partitions": [
                    {
                        "partition": p.partition,
                        "low": p.low,
                        "high": p.high,
                        "reported_high": p.reported_high,
                        "exact": p.exact,
                        "messages": p.messages,
                        "leader": desc.leaders[p.partition],
                        "replicas": desc.replicas[p.partition],
                    }
                    for p in desc.partitions
                ],
                "configs": desc.configs,
            }
        )
        return
    console = get_app(ctx).console
    rows = [
        (
            p.partition,
            p.low,
            p.high,
            p.messages,
            desc.leaders[p.partition],
            ",".join(map(str, desc.replicas[p.partition])),
        )
        for p in desc.partitions
    ]
    console.print(
        table(
            f"topic {desc.name}",
            ["partition", "low", "high", "messages", "leader", "replicas"],
            rows,
        )
    )
    console.print(
        table("configs", ["key", "value"], sorted(desc.configs.items()) or [("(none set)", "")])
    )


def _parse_configs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--config expects key=value, got '{pair}'",
                hint="e.g. --config retention.ms=86400000",
            )
        out[key.strip()] = value.strip()
    return out


@topics_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Topic name.")],
    partitions: Annotated[
        int, typer.Option("--partitions", "-p", min=1, help="Partition count.")
    ] = 3,
    config: Annotated[
        list[str] | None, typer.Option("--config", help="Topic config key=value (repeatable).")
    ] = None,
    replication_factor: Annotated[int, typer.Option(min=1, help="Replication factor.")] = 1,
    data_dir: DataDirOption = None,
) -> None:
    """Create a topic.

    Example: devctl topics create audit-events --partitions 6 --config retention.ms=604800000
    """
    from devctl.config.schema import TopicSpec, topic_name_problem

    problem = topic_name_problem(name)
    if problem:
        raise UsageError(f"invalid topic name '{name}': {problem}")
    spec = TopicSpec(name, partitions, replication_factor, _parse_configs(config or []))
    _admin(ctx, data_dir).create(spec)
    get_app(ctx).console.print(
        f"[green]✔[/green] created {name} ({partitions} partitions)", highlight=False
    )


@topics_app.command("delete")
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Topic name.")],
    yes: YesOption = False,
    data_dir: DataDirOption = None,
) -> None:
    """Delete a topic and all its events (asks first unless --yes).

    Example: devctl topics delete scratch --yes
    """
    admin = _admin(ctx, data_dir)
    admin.describe(name)  # NotFound before asking anything
    confirm(get_app(ctx).err, f"Delete topic '{name}' and all its events?", yes)
    admin.delete(name)
    get_app(ctx).console.print(f"[green]✔[/green] deleted {name}", highlight=False)


@topics_app.command("apply")
def apply(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan only.")] = False,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Reconcile the broker with the configured topics: plan (create / unchanged / differs / unsupported), then apply.

    Exit 1 if any step failed or is unsupported.

    Example: devctl topics apply --dry-run
    """
    app = get_app(ctx)
    admin = _admin(ctx, data_dir)
    rows = admin.plan(app.settings().topics)
    if not dry_run:
        rows = admin.apply(rows)
    if json_output:
        print_json(
            [
                {"topic": r.topic, "action": r.action, "detail": r.detail, "result": r.result}
                for r in rows
            ]
        )
    else:
        colours = {"create": "green", "unchanged": "dim", "differs": "yellow", "unsupported": "red"}
        columns = ["topic", "action", "detail"] + ([] if dry_run else ["result"])
        app.console.print(
            table(
                "plan" if dry_run else "applied",
                columns,
                [
                    (r.topic, f"[{colours[r.action]}]{r.action}[/]", escape(r.detail))
                    + (() if dry_run else (escape(r.result),))
                    for r in rows
                ],
            )
        )
    if any(r.action == "unsupported" or r.result.startswith("failed") for r in rows):
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.add_typer(topics_app, name="topics", rich_help_panel="Kafka")
