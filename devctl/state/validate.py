"""Argument checks of the Redis domain, cheap to import (the CLI uses the same bounds).

A bad argument is the caller's mistake, not a bug and not an unreachable Redis:
it raises ``InvalidArgument``, a ``UsageError`` (exit 2 in the CLI) that is also a
``ValueError`` for callers that treat it as one.
"""

from __future__ import annotations

import math

from devctl.errors import UsageError

# Ten years: far beyond any session or lease, far below what Redis accepts for PX.
MAX_TTL_S = 10 * 365 * 86400


class InvalidArgument(UsageError, ValueError):
    """An id or a TTL the domain cannot use (empty id, TTL not a positive finite number)."""


def check_id(value: str, what: str = "id") -> str:
    """``value`` unchanged if it is a usable id: not empty, not only whitespace."""
    if not value or not value.strip():
        raise InvalidArgument(f"{what} must not be empty")
    return value


def ttl_ms(seconds: float, what: str = "ttl") -> int:
    """A TTL in seconds as whole milliseconds (at least 1); refuse what Redis cannot take."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidArgument(f"{what} must be a number of seconds, got {seconds!r}")
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TTL_S:
        raise InvalidArgument(
            f"{what} must be more than 0 and at most {MAX_TTL_S} seconds, got {seconds!r}"
        )
    return max(1, round(seconds * 1000))
