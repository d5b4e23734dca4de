"""devctl presence seed / list / show / sweep / watch."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, YesOption
from devctl.cli.output import ago, cell, confirm, print_json, table
from devctl.cli.state_access import open_state, require_id, require_ttl

if TYPE_CHECKING:
    from rich.table import Table

    from devctl.cli.app import Application
    from devctl.state.presence import PresenceStatus

presence_app = typer.Typer(help="Seed and inspect who is online.", no_args_is_help=True)

COLUMNS = ["user", "status", "connections", "instances", "last seen"]

# `presence list` reads the statuses of at most this many users (to sort them), in
# slices of LIST_BATCH.
LIST_SCAN_LIMIT = 100_000
LIST_BATCH = 10_000

# Kept in step with devctl.state.admin.SEED_MAX_* (not imported: `--help` stays fast).
SEED_MAX_USERS = 10_000
SEED_MAX_INSTANCES = 100


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``1 user``, ``2 users``, ``1,000 users``."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def check_size(app: Application, n: int, what: str, maximum: int, yes: bool) -> None:
    """Ask before seeding more than ``maximum`` (or demand --yes without a terminal)."""
    if n > maximum:
        confirm(
            app.err, f"Seed {counted(n, what)}, more than the usual maximum of {maximum:,}?", yes
        )


@contextmanager
def progress_on_stderr(app: Application, label: str) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` callback drawing a Rich progress bar on stderr.

    Only on a terminal (never in pipes, logs or --json output), and only once the
    step has taken a second: quick steps stay silent.
    """
    started = time.monotonic()
    bar: Any = None
    task: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar, task
        if bar is None:
            if not app.err.is_terminal or time.monotonic() - started < 1.0:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            bar = Progress(
                label, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=app.err
            )
            bar.start()
            task = bar.add_task(label, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()


def _row(status: PresenceStatus) -> tuple[Any, ...]:
    state = "[green]online[/]" if status.online else "[dim]offline[/]"
    if status.stale_connections:
        state += f" [yellow]({status.stale_connections} on dead instances)[/]"
    return (
        cell(status.user_id),
        state,
        status.connections,
        cell(", ".join(status.instances) or None),
        ago(status.last_seen),
    )


@presence_app.command("seed")
def seed(
    ctx: typer.Context,
    users: Annotated[
        int,
        typer.Option(
            "--users",
            "-n",
            min=1,
            help=f"How many users to connect (over {SEED_MAX_USERS:,}: asks).",
        ),
    ] = 10,
    instances: Annotated[
        int,
        typer.Option(
            "--instances",
            "-k",
            min=1,
            help=f"How many fake API instances (over {SEED_MAX_INSTANCES:,}: asks).",
        ),
    ] = 2,
    ttl: Annotated[
        float,
        typer.Option(
            "--ttl",
            help="Seconds the fake instances stay alive; then `devctl presence sweep` drops them.",
        ),
    ] = 600,
    id_prefix: Annotated[
        str, typer.Option("--id-prefix", help="User ids are <prefix><n>.")
    ] = "seed-user-",
    yes: YesOption = False,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Connect N users across K fake API instances of this run (every third user has a second tab).

    Example: devctl presence seed --users 100 --instances 3
    """
    from devctl.state.admin import seed_presence

    app = get_app(ctx)
    require_ttl(ttl)
    check_size(app, users, "user", SEED_MAX_USERS, yes)
    check_size(app, instances, "instance", SEED_MAX_INSTANCES, yes)
    with (
        open_state(ctx, data_dir) as state,
        progress_on_stderr(app, "connecting") as progress,
    ):
        seeded = seed_presence(
            state, users, instances, ttl=ttl, id_prefix=id_prefix, progress=progress
        )
    if json_output:
        print_json(
            {
                "users": len(seeded.users),
                "instances": seeded.instances,
                "connections": seeded.connections,
                "went_online": seeded.went_online,
                "instance_ttl": ttl,
            }
        )
        return
    # A summary, not data: stderr, like every note (stdout stays for what a script reads).
    app.info(
        f"[green]✔[/green] {counted(seeded.connections, 'connection')} of "
        f"{counted(len(seeded.users), 'user')} on {counted(len(seeded.instances), 'instance')} "
        f"({seeded.went_online:,} went online); "
        + ("the instances stay" if len(seeded.instances) > 1 else "the instance stays")
        + f" alive for {ttl:g}s"
    )


@presence_app.command("list")
def list_presence(
    ctx: typer.Context,
    online: Annotated[bool, typer.Option("--online", help="Only users who are online.")] = False,
    limit: Annotated[
        int,
        typer.Option("--limit", "-l", min=1, help="At most this many users, and instances."),
    ] = 100,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """List users with presence: status, connections, instances, last seen; and the instances.

    Example: devctl presence list --online --json
    """
    app = get_app(ctx)
    with (
        open_state(ctx, data_dir) as state,
        progress_on_stderr(app, "reading presence") as progress,
    ):
        users = state.presence.known_users(limit=LIST_SCAN_LIMIT)
        instances = state.presence.instances()
        alive = {i.instance_id for i in instances if i.alive}
        statuses: list[PresenceStatus] = []
        # In slices, so a long read shows its progress (each slice is one round trip);
        # the leases are read once, above, not once per slice.
        for start in range(0, len(users), LIST_BATCH):
            batch = users[start : start + LIST_BATCH]
            statuses += state.presence.bulk_status(batch, alive=alive).values()
            progress(min(start + LIST_BATCH, len(users)), len(users))
    if online:
        statuses = [s for s in statuses if s.online]
    statuses.sort(key=lambda s: (not s.online, -(s.last_seen or 0)))
    users_hidden = max(len(statuses) - limit, 0)
    # The scan stopped at its limit: there may be more users than it found.
    more_users = "+" if len(users) >= LIST_SCAN_LIMIT else ""
    statuses = statuses[:limit]
    # Dead (not swept) instances first: they are what an operator acts on.
    instances.sort(key=lambda i: (i.alive, -(i.last_heartbeat or 0), i.instance_id))
    instances_total = len(instances)
    instances = instances[:limit]
    if json_output:
        print_json(
            {
                "users": [s.to_json() for s in statuses],
                "users_not_shown": users_hidden,
                "users_scan_limit_reached": bool(more_users),
                "instances": [
                    {
                        "instance_id": i.instance_id,
                        "alive": i.alive,
                        "last_heartbeat": i.last_heartbeat,
                    }
                    for i in instances
                ],
                "instances_total": instances_total,
                "instances_not_shown": instances_total - len(instances),
            }
        )
        return
    app.show(
        table(f"presence ({counted(len(statuses), 'user')})", COLUMNS, [_row(s) for s in statuses])
    )
    app.show(
        table(
            f"instances ({len(instances):,} of {instances_total:,})",
            ["instance", "state", "last heartbeat"],
            [
                (
                    cell(i.instance_id),
                    "[green]alive[/]" if i.alive else "[red]dead (not swept)[/]",
                    ago(i.last_heartbeat) if i.last_heartbeat else "never",
                )
                for i in instances
            ],
        )
    )
    if users_hidden:
        hidden = counted(users_hidden, "more user").replace(" ", f"{more_users} ", 1)
        app.info(f"{hidden} not shown (--limit {limit})")
    if instances_total > len(instances):
        app.info(
            f"{counted(instances_total - len(instances), 'more instance')} not shown "
            f"(--limit {limit})"
        )


@presence_app.command("show")
def show(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="User id.")],
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show one user's presence.

    Example: devctl presence show 42
    """
    require_id(user, "USER")
    with open_state(ctx, data_dir) as state:
        status = state.presence.status(user)
    if json_output:
        print_json(status.to_json())
        return
    get_app(ctx).show(table(None, COLUMNS, [_row(status)]))


@presence_app.command("sweep")
def sweep(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Drop the connections of dead API instances; report them and the users who went offline.

    Example: devctl presence sweep --json
    """
    with (
        open_state(ctx, data_dir) as state,
        progress_on_stderr(get_app(ctx), "sweeping dead instances") as progress,
    ):
        result = state.presence.sweep(progress=progress)
    if json_output:
        print_json(
            {
                "dead_instances": result.dead_instances,
                "went_offline": result.went_offline,
                "connections_removed": result.connections_removed,
            }
        )
        return
    app = get_app(ctx)
    app.info(
        f"[green]✔[/green] {counted(len(result.dead_instances), 'dead instance')} swept, "
        f"{counted(result.connections_removed, 'connection')} removed, "
        f"{counted(len(result.went_offline), 'user')} went offline"
    )
    if result.dead_instances:
        app.show(table("dead instances", ["instance"], [(cell(i),) for i in result.dead_instances]))
    if result.went_offline:
        app.show(table("went offline", ["user"], [(cell(u),) for u in result.went_offline]))


@presence_app.command("watch")
def watch(
    ctx: typer.Context,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Exit after this many changes.")
    ] = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Watch presence changes live (pub/sub); --json prints one JSON line per change. Ctrl-C exits (0).

    Example: devctl presence watch
    """
    from devctl.errors import RedisUnavailable

    app = get_app(ctx)
    seen = 0
    with open_state(ctx, data_dir) as state:
        rows: dict[str, PresenceStatus] = {}
        events: list[str] = []

        def reload() -> None:
            users = state.presence.known_users(limit=200)
            fresh = state.presence.bulk_status(users) if users else {}
            rows.clear()
            rows.update(fresh)

        channel = state.pubsub.presence_channel()
        subscriber = state.pubsub.subscribe([channel], on_reconnect=None if json_output else reload)
        live = None
        try:
            # Both modes need Redis to start; after that both ride out restarts.
            if not subscriber.connected:
                raise RedisUnavailable(f"Redis is not reachable: {subscriber.last_error}")
            if json_output:
                print(json.dumps({"watching": channel.name}), file=sys.stderr, flush=True)
            else:
                from rich.live import Live

                try:
                    reload()
                except RedisUnavailable:
                    subscriber.resync_later()
                live = Live(
                    _render(rows, events, subscriber),
                    console=app.console,
                    auto_refresh=False,
                    transient=False,
                )
                live.start()
            while count is None or seen < count:
                received = subscriber.get(timeout=0.5)
                if received is None or received.message is None:
                    if live is not None:
                        live.update(_render(rows, events, subscriber), refresh=True)
                    continue
                change = received.message
                seen += 1
                if json_output:
                    sys.stdout.write(json.dumps(change.to_payload()) + "\n")
                    sys.stdout.flush()
                    continue
                try:
                    rows[change.user_id] = state.presence.status(change.user_id)
                except RedisUnavailable:
                    subscriber.resync_later()  # the table is stale until a reload succeeds
                stamp = time.strftime("%H:%M:%S", time.localtime(change.ts or time.time()))
                events.append(
                    f"{stamp} {cell(change.user_id)} "
                    + ("[green]online[/]" if change.online else "[red]offline[/]")
                    + f" via {cell(change.instance)}"
                )
                del events[:-8]
                if live is not None:
                    live.update(_render(rows, events, subscriber), refresh=True)
        except KeyboardInterrupt:
            pass  # a watch ended by the user is a success (exit 0)
        finally:
            if live is not None:
                live.stop()
            subscriber.close()
    app.info(f"{counted(seen, 'presence change')} seen")


def _render(rows: dict[str, PresenceStatus], events: list[str], subscriber: Any) -> Table:
    from rich.table import Table

    ordered = sorted(rows.values(), key=lambda s: (not s.online, s.user_id))[:40]
    online = sum(1 for s in rows.values() if s.online)
    if not subscriber.connected:
        state = " [red]reconnecting to Redis...[/]"
    elif subscriber.stale:
        state = " [yellow]reloading (Redis not ready)...[/]"
    else:
        state = ""
    grid = Table.grid()
    grid.add_row(
        table(
            f"presence: {online:,} online of {len(rows):,} shown{state}",
            COLUMNS,
            [_row(s) for s in ordered],
        )
    )
    grid.add_row("\n".join(events) or "[dim]waiting for changes (Ctrl-C to exit)[/]")
    return grid


def register(app: typer.Typer) -> None:
    app.add_typer(presence_app, name="presence", rich_help_panel="Redis")
