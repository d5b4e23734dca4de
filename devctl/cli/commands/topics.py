"""devctl topics list / describe / create / delete / apply."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, YesOption, data_dir_flag
from devctl.cli.output import confirm, counted, print_json, table
from devctl.config.schema import MAX_PARTITIONS
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
    rows = [
        (
            s.name,
            s.partitions,
            "unknown" if s.messages is None else s.messages,
            "yes" if s.configured else "",
        )
        for s in summaries
    ]
    console = get_app(ctx).console
    get_app(ctx).show(table(None, ["topic", "partitions", "messages", "in config"], rows))
    for s in summaries:
        if s.note:
            console.print(f"[yellow]![/yellow] {escape(s.name)}: {escape(s.note)}", highlight=False)


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
    # Offsets the broker did not give in time are None ("unknown"), never guessed.
    offsets = {p.partition: p for p in desc.partitions or []}
    if json_output:
        print_json(
            {
                "name": desc.name,
                "partitions": [
                    {
                        "partition": p,
                        "low": offsets[p].low if p in offsets else None,
                        "high": offsets[p].high if p in offsets else None,
                        "reported_high": offsets[p].reported_high if p in offsets else None,
                        "exact": offsets[p].exact if p in offsets else False,
                        "messages": offsets[p].messages if p in offsets else None,
                        "leader": desc.leaders[p],
                        "replicas": desc.replicas[p],
                    }
                    for p in sorted(desc.leaders)
                ],
                "configs": desc.configs,
                "note": desc.note,
            }
        )
        return
    console = get_app(ctx).console
    unknown = ("unknown",) * 3
    rows = [
        (p,)
        + ((offsets[p].low, offsets[p].high, offsets[p].messages) if p in offsets else unknown)
        + (desc.leaders[p], ",".join(map(str, desc.replicas[p])))
        for p in sorted(desc.leaders)
    ]
    get_app(ctx).show(
        table(
            f"topic {desc.name}",
            ["partition", "low", "high", "messages", "leader", "replicas"],
            rows,
        )
    )
    get_app(ctx).show(
        table("configs", ["key", "value"], sorted(desc.configs.items()) or [("(none set)", "")])
    )
    if desc.note:
        console.print(f"[yellow]![/yellow] {escape(desc.note)}", highlight=False)


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
    replication_factor: Annotated[
        int, typer.Option(min=1, help="Replication factor (at most the number of brokers).")
    ] = 1,
    allow_many_partitions: Annotated[
        bool,
        typer.Option(
            "--allow-many-partitions",
            help=f"Allow more than {MAX_PARTITIONS:,} partitions.",
        ),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Create a topic.

    At most 1,000 partitions unless --allow-many-partitions; config names and
    values are checked against Kafka's topic configs.

    Example: devctl topics create audit-events --partitions 6 --config retention.ms=604800000
    """
    from devctl.config.schema import TopicSpec, topic_name_problem
    from devctl.streams.topics import TooManyPartitions

    problem = topic_name_problem(name)
    if problem:
        raise UsageError(f"invalid topic name '{name}': {problem}")
    spec = TopicSpec(name, partitions, replication_factor, _parse_configs(config or []))
    try:
        _admin(ctx, data_dir).create(spec, allow_many_partitions=allow_many_partitions)
    except TooManyPartitions as exc:
        exc.hint = "pass --allow-many-partitions if you mean it"
        raise
    get_app(ctx).console.print(
        f"[green]✔[/green] created {name} ({counted(partitions, 'partition')})", highlight=False
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
    from devctl.errors import NotFound

    admin = _admin(ctx, data_dir)
    # NotFound before asking anything; one metadata request (describing the topic
    # would read every partition's offsets first).
    if not admin.exists(name):
        raise NotFound(f"topic '{name}' does not exist", hint="see `devctl topics list`")
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
        app.show(
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
