"""The API's handles on its servers, built once per process, shared by every request.

``Backend`` is what the workflows (accounts, connections, chat) take: the database
(an async engine and session factory), the Redis domain's asyncio face, the event
source and the outbox relay's doorbell. It knows nothing of HTTP, so the real-time
side and ``devctl test`` reuse the same workflows.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from devctl.db import outbox
from devctl.errors import DatabaseUnavailable, RateLimited
from devctl.events.envelope import encode_event

if TYPE_CHECKING:
    from devctl.config.loader import Settings
    from devctl.state.aio import AsyncStateServices


@dataclass
class Backend:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    read_sessions: async_sessionmaker[AsyncSession]  # read-only work (DEFERRED on SQLite)
    state: AsyncStateServices
    source: str
    # Rings the relay's doorbell after a commit that wrote events (no-op without a relay).
    wake_relay: Callable[[], None] = field(default=lambda: None)
    # Database queries made by the workflows: the benchmark proves the warm path makes none.
    queries: int = 0
    # Authenticated requests whose user came with the session (hit) or was loaded (miss).
    user_cache_hits: int = 0
    user_cache_misses: int = 0

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One database transaction; events added with ``tx.emit`` commit with it."""
        emitted = False
        try:
            async with self.sessions() as session, session.begin():
                tx = Transaction(self, session)
                yield tx
                emitted = tx.emitted
        except IntegrityError:
            raise  # the workflows turn these into Conflict with their own words
        except (TimeoutError, OperationalError, DBAPIError, OSError) as exc:
            if isinstance(exc, DBAPIError) and not _is_unavailable(exc):
                raise
            raise DatabaseUnavailable(f"the database did not answer: {_short(exc)}") from exc
        if emitted:
            self.wake_relay()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A read-only session, with the same error mapping as ``transaction``."""
        try:
            async with self.read_sessions() as session:
                yield session
        except (TimeoutError, OperationalError, DBAPIError, OSError) as exc:
            if isinstance(exc, DBAPIError) and not _is_unavailable(exc):
                raise
            raise DatabaseUnavailable(f"the database did not answer: {_short(exc)}") from exc

    async def spend(
        self, policy: str, subject: str, message: str, *, tier: str | None = None
    ) -> None:
        """Take one from a rate-limit bucket, or raise RateLimited (429) saying ``message``."""
        result = await self.state.ratelimits.check(policy, subject, tier=tier)
        if not result.allowed:
            data: dict[str, Any] = {
                "limit": result.limit,
                "used": result.used,
                "retry_after": result.retry_after,
            }
            if tier is not None:
                data["tier"] = tier
            wait = max(1, round(result.retry_after))
            raise RateLimited(message.format(limit=result.limit, wait=wait), data=data)


class Transaction:
    def __init__(self, backend: Backend, session: AsyncSession):
        self.backend = backend
        self.session = session
        self.emitted = False

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """Write an event into the outbox, in this transaction (validated now)."""
        encoded = encode_event(event_type, data, source=self.backend.source)
        outbox.append(self.session, encoded)
        self.emitted = True


def _is_unavailable(exc: DBAPIError) -> bool:
    # Connection loss, timeouts and a locked SQLite file are "try again later";
    # anything else (a bad statement) is a bug and must not hide as a 503.
    if exc.connection_invalidated or isinstance(exc, OperationalError):
        return True
    text = str(exc.orig).lower() if exc.orig is not None else ""
    return any(
        word in text
        for word in ("connection", "timeout", "timed out", "terminat", "closed", "locked", "cancel")
    )


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
