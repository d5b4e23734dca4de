"""devctl keys: the Redis key schema (pattern, type, TTL, purpose)."""

from __future__ import annotations

from typing import Annotated

import typer

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, data_dir_flag
from devctl.cli.output import cell, print_json, table
from devctl.cli.state_access import open_state


def keys(
    ctx: typer.Context,
    count: Annotated[
        bool,
        typer.Option("--count", help="Also count the live keys of each kind (needs the stack)."),
    ] = False,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Print the Redis key schema: pattern, type, TTL, purpose, hash tag.

    Example: devctl keys --count
    """
    from devctl.state.keys import KeySchema

    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    specs = KeySchema(settings.redis.key_prefix).table(settings.state)
    counts: dict[str, int] = {}
    if count:
        from devctl.state.admin import key_counts

        with open_state(ctx, data_dir) as state:
            counts = key_counts(state)
    if json_output:
        print_json(
            [
                {
                    "kind": s.kind,
                    "pattern": s.pattern,
                    "type": s.type,
                    "ttl": s.ttl,
                    "purpose": s.purpose,
                    "hash_tag": s.hash_tag,
                    **({"count": counts.get(s.kind)} if count else {}),
                }
                for s in specs
            ]
        )
        return
    columns = ["kind", "pattern", "type", "TTL", "purpose", "hash tag"] + (
        ["keys"] if count else []
    )
    rows = [
        tuple(cell(v) for v in (s.kind, s.pattern, s.type, s.ttl, s.purpose, s.hash_tag))
        + ((counts.get(s.kind, "-"),) if count else ())
        for s in specs
    ]
    title = f"Redis keys (prefix {cell(settings.redis.key_prefix)})"
    app.show(table(title, columns, rows))


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Redis")(keys)
