"""devctl keys: the Redis key schema (pattern, type, TTL, purpose); shared helpers of the
Redis-domain commands."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, data_dir_flag
from devctl.cli.output import duration, print_json, table
from devctl.errors import UsageError

if TYPE_CHECKING:
    from devctl.state import StateServices


def open_state(ctx: typer.Context, data_dir: Path | None) -> StateServices:
    """The Redis domain services for the running stack (exit 3 if it is not running)."""
    from devctl.state import from_settings

    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    return from_settings(settings, app.endpoints())


def cell(value: object) -> str | None:
    """A table cell holding data: shown literally (``table`` renders str cells as markup)."""
    return None if value is None else escape(str(value))


def require_id(value: str, what: str) -> str:
    """``value`` if it names something; an empty or blank id is a usage error (exit 2)."""
    if not value.strip():
        raise UsageError(f"{what} must not be empty")
    return value


def require_ttl(value: float | None, flag: str = "--ttl") -> None:
    """Refuse a TTL Redis cannot take (inf, nan, beyond the domain's bound) before any write."""
    if value is None:
        return
    import math

    from devctl.state.validate import MAX_TTL_S

    if not math.isfinite(value) or not 1 <= value <= MAX_TTL_S:
        raise UsageError(f"{flag} must be between 1 and {MAX_TTL_S} seconds, got {value:g}")


def ago(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return f"{duration(max(0.0, time.time() - epoch))} ago"


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
    app.console.print(table(title, columns, rows))


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Redis")(keys)
