"""What the Redis-domain commands (keys, sessions, presence, ratelimit, cache) share:
opening the domain on the running stack and checking the ids and TTLs they are given."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from devctl.cli.app import get_app
from devctl.cli.options import data_dir_flag
from devctl.errors import UsageError

if TYPE_CHECKING:
    from devctl.state import StateServices


def open_state(ctx: typer.Context, data_dir: Path | None) -> StateServices:
    """The Redis domain services for the running stack (exit 3 if it is not running)."""
    from devctl.state import from_settings

    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    return from_settings(settings, app.endpoints())


def require_id(value: str, what: str) -> str:
    """``value`` if it names something; an empty or blank id is a usage error (exit 2)."""
    if not value.strip():
        raise UsageError(f"{what} must not be empty")
    return value


def require_ttl(value: float | None, flag: str = "--ttl") -> None:
    """Refuse a TTL Redis cannot take (inf, nan, beyond the domain's bound) before any write."""
    if value is None:
        return
    from devctl.state.validate import MAX_TTL_S

    if not math.isfinite(value) or not 1 <= value <= MAX_TTL_S:
        raise UsageError(f"{flag} must be between 1 and {MAX_TTL_S} seconds, got {value:g}")
