"""devctl cache stats / flush."""

from __future__ import annotations

from typing import Annotated

import typer

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, YesOption
from devctl.cli.output import cell, confirm, print_json, table
from devctl.cli.state_access import open_state
from devctl.errors import UsageError


def _ratio(hits: int, lookups: int) -> str:
    return f"{100 * hits / lookups:.1f}%" if lookups else "-"


cache_app = typer.Typer(help="Cache statistics and flushing.", no_args_is_help=True)


@cache_app.command("stats")
def stats(
    ctx: typer.Context, data_dir: DataDirOption = None, json_output: JsonOption = False
) -> None:
    """Show cache hits and misses by kind, keys by kind, and Redis memory.

    Example: devctl cache stats --json
    """
    from devctl.state.admin import cache_stats

    with open_state(ctx, data_dir) as state:
        found = cache_stats(state)
    if json_output:
        print_json(found.to_json())
        return
    console = get_app(ctx).console
    get_app(ctx).show(
        table(
            "caches",
            ["cache", "lookups", "hits", "misses", "hit ratio"],
            [
                (cell(kind), c["lookups"], c["hits"], c["misses"], _ratio(c["hits"], c["lookups"]))
                for kind, c in found.counters.items()
            ],
        )
    )
    get_app(ctx).show(
        table(
            "keys by kind", ["kind", "keys"], [(cell(k), n) for k, n in sorted(found.keys.items())]
        )
    )
    console.print(
        f"Redis memory used: {cell(found.memory_human)}; server keyspace hits {found.keyspace_hits}, "
        f"misses {found.keyspace_misses}",
        highlight=False,
    )


@cache_app.command("flush")
def flush(
    ctx: typer.Context,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind", "-k", help="user, email or messages (repeatable; default all caches)."
        ),
    ] = None,
    yes: YesOption = False,
    data_dir: DataDirOption = None,
) -> None:
    """Delete cached users, email mappings and/or message caches (never sessions, presence or limits).

    Example: devctl cache flush --kind user --yes
    """
    from devctl.state.admin import CACHE_KINDS, flush_cache

    unknown = [k for k in kind or [] if k not in CACHE_KINDS]
    if unknown:
        raise UsageError(
            f"unknown cache kind {', '.join(unknown)}", hint=f"kinds: {', '.join(CACHE_KINDS)}"
        )
    chosen = list(dict.fromkeys(kind or CACHE_KINDS))
    app = get_app(ctx)
    with open_state(ctx, data_dir) as state:
        confirm(
            app.err, f"Flush the {', '.join(chosen)} cache{'s' if len(chosen) > 1 else ''}?", yes
        )
        deleted = flush_cache(state, chosen)
    summary = ", ".join(f"{n} {cell(k)}" for k, n in deleted.items())
    app.console.print(f"[green]✔[/green] flushed {summary} keys", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache", rich_help_panel="Redis")
