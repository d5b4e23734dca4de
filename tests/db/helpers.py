"""Helpers of the database tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from devctl.db.engine import make_engine, session_factory
from devctl.db.models import User
from devctl.events.envelope import EncodedEvent


@asynccontextmanager
async def opened(url: str, **options: object) -> AsyncIterator[AsyncEngine]:
    """An engine on ``url``, disposed of afterwards (no connection left to the test database)."""
    engine = make_engine(url, **options)  # type: ignore[arg-type]
    try:
        yield engine
    finally:
        await engine.dispose()
        # Let aiosqlite's thread of a connection that failed to open report back
        # before asyncio.run closes the loop (as devctl.db.migrate does).
        await asyncio.sleep(0.02)


def user(email: str | None = None, **fields: object) -> User:
    return User(
        first_name="Ada",
        email=email or f"{uuid.uuid4().hex[:12]}@example.com",
        password_hash="x",
        **fields,
    )


async def add_users(engine: AsyncEngine, count: int) -> list[str]:
    users = [user() for _ in range(count)]
    async with session_factory(engine)() as session, session.begin():
        session.add_all(users)
    return [u.id for u in users]


def event(key: bytes | None = b"user-1", topic: str = "user-events") -> EncodedEvent:
    event_id = str(uuid.uuid4())
    return EncodedEvent(
        topic=topic,
        key=key,  # type: ignore[arg-type]
        value=b'{"id": "%s"}' % event_id.encode(),
        headers=[("event-type", b"devconnect.user.login"), ("event-id", event_id)],
        id=event_id,
        type="devconnect.user.login",
        subject="user-1",
    )


def sessions(engine: AsyncEngine) -> AsyncSession:
    return session_factory(engine)()
