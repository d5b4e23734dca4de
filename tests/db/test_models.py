"""The rules the database itself enforces, on both backends, and the aware times."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError

from devctl.db.integrity import violated_constraint
from devctl.db.models import (
    EMAIL_UNIQUE,
    PAIR_MATCHES,
    PAIR_ORDERED,
    PAIR_UNIQUE,
    STATUS_CHECK,
    ConnectionRequest,
    Message,
    User,
)
from devctl.events.schemas import conversation_id
from tests.db.helpers import add_users, opened, sessions, user


def _refused(url: str, make: object) -> str | None:
    """The constraint that refuses committing what ``make(a, b)`` builds for two users."""

    async def main() -> str | None:
        async with opened(url) as engine:
            a, b = await add_users(engine, 2)
            async with sessions(engine) as session:
                async with session.begin():
                    session.add(ConnectionRequest.between(a, b, "interested"))
                try:
                    async with session.begin():
                        session.add(make(a, b))  # type: ignore[operator]
                except IntegrityError as exc:
                    return violated_constraint(exc)
        raise AssertionError("the database accepted it")

    return asyncio.run(main())


def test_one_request_per_pair_in_either_direction(migrated: str) -> None:
    assert _refused(migrated, lambda a, b: ConnectionRequest.between(b, a, "interested")) == (
        PAIR_UNIQUE
    )


def test_the_same_request_twice_is_refused(migrated: str) -> None:
    assert _refused(migrated, lambda a, b: ConnectionRequest.between(a, b, "ignored")) == (
        PAIR_UNIQUE
    )


def test_no_request_to_oneself(migrated: str) -> None:
    assert _refused(migrated, lambda a, b: ConnectionRequest.between(b, b, "interested")) == (
        PAIR_ORDERED
    )


def test_the_pair_must_be_the_two_users(migrated: str) -> None:
    def forged(a: str, b: str) -> ConnectionRequest:
        low, high = sorted([a, "f" * 24])
        return ConnectionRequest(
            from_user_id=b, to_user_id=a, user_low=low, user_high=high, status="interested"
        )

    assert _refused(migrated, forged) == PAIR_MATCHES


def test_status_is_checked(migrated: str) -> None:
    async def main() -> str | None:
        async with opened(migrated) as engine:
            a, b = await add_users(engine, 2)
            with pytest.raises(IntegrityError) as caught:
                async with sessions(engine) as session, session.begin():
                    session.add(ConnectionRequest.between(a, b, "ignore"))
            return violated_constraint(caught.value)

    assert asyncio.run(main()) == STATUS_CHECK


def test_email_is_unique_once_normalised(migrated: str) -> None:
    async def main() -> tuple[str, str | None]:
        async with opened(migrated) as engine:
            async with sessions(engine) as session, session.begin():
                first = user(" Ada@Example.COM ")
                session.add(first)
            with pytest.raises(IntegrityError) as caught:
                async with sessions(engine) as session, session.begin():
                    session.add(user("ada@example.com"))
            return first.email, violated_constraint(caught.value)

    assert asyncio.run(main()) == ("ada@example.com", EMAIL_UNIQUE)


def test_user_defaults(migrated: str) -> None:
    async def main() -> tuple[object, ...]:
        async with opened(migrated) as engine:
            (uid,) = await add_users(engine, 1)
            # Also the server defaults: a row inserted without the ORM.
            async with engine.begin() as c:
                await c.execute(
                    text(
                        "INSERT INTO users (id, first_name, email, password_hash) "
                        "VALUES ('0123456789abcdef01234567', 'Bo', 'bo@example.com', 'x')"
                    )
                )
            async with sessions(engine) as session:
                mine = await session.get(User, uid)
                raw = await session.get(User, "0123456789abcdef01234567")
                assert mine is not None and raw is not None
                return (
                    mine.skills,
                    mine.is_premium,
                    mine.membership_tier,
                    raw.skills,
                    raw.is_premium,
                    raw.membership_tier,
                    raw.created_at.tzinfo,
                )

    assert asyncio.run(main()) == ([], False, "free", [], False, "free", UTC)


def test_times_come_back_aware_in_utc(migrated: str) -> None:
    paris = timezone(timedelta(hours=2))
    sent = datetime(2026, 11, 25, 20, 6, 9, 123456, tzinfo=paris)

    async def main() -> tuple[datetime, datetime | None, datetime]:
        async with opened(migrated) as engine:
            a, b = await add_users(engine, 2)
            async with sessions(engine) as session, session.begin():
                session.add(
                    Message(
                        from_user_id=a,
                        to_user_id=b,
                        conversation_id=conversation_id(a, b),
                        text="hi",
                        ts=sent,
                        read_at=None,
                    )
                )
            async with sessions(engine) as session:
                message = (await session.execute(select(Message))).scalar_one()
                created = (await session.execute(select(User.created_at))).scalars().first()
                assert created is not None
                return message.ts, message.read_at, created

    ts, read_at, created = asyncio.run(main())
    assert ts == sent and ts.tzinfo is UTC and ts.hour == 18
    assert read_at is None
    assert created.tzinfo is UTC and abs(datetime.now(UTC) - created) < timedelta(minutes=1)


def test_naive_times_are_refused(migrated: str) -> None:
    async def main() -> None:
        async with opened(migrated) as engine:
            a, b = await add_users(engine, 2)
            async with sessions(engine) as session, session.begin():
                session.add(
                    Message(
                        from_user_id=a,
                        to_user_id=b,
                        conversation_id=conversation_id(a, b),
                        text="hi",
                        ts=datetime(2026, 1, 1),
                    )
                )

    with pytest.raises(StatementError, match="naive datetime"):
        asyncio.run(main())


def test_deleting_a_user_deletes_their_requests_and_messages(migrated: str) -> None:
    async def main() -> tuple[int, int]:
        async with opened(migrated) as engine:
            a, b, c = await add_users(engine, 3)
            async with sessions(engine) as session, session.begin():
                session.add(ConnectionRequest.between(a, b, "accepted"))
                session.add(ConnectionRequest.between(c, b, "interested"))
                session.add(
                    Message(
                        from_user_id=a,
                        to_user_id=b,
                        conversation_id=conversation_id(a, b),
                        text="hi",
                    )
                )
            async with engine.begin() as conn:
                await conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": a})
            async with engine.connect() as conn:
                requests = await conn.execute(text("SELECT count(*) FROM connection_requests"))
                messages = await conn.execute(text("SELECT count(*) FROM messages"))
                return requests.scalar_one(), messages.scalar_one()

    assert asyncio.run(main()) == (1, 0)
