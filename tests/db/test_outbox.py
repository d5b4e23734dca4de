"""The outbox store: append in the caller's transaction, one relay under a lease, in order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from devctl.db import outbox
from devctl.db.engine import backend
from devctl.db.errors import LeaseLost
from devctl.db.models import OutboxRow, User
from tests.db.helpers import event, opened, sessions, user


def test_append_rolls_back_with_the_change(migrated: str) -> None:
    async def main() -> tuple[int, int]:
        async with opened(migrated) as engine:
            with pytest.raises(RuntimeError):
                async with sessions(engine) as session, session.begin():
                    session.add(user())
                    outbox.append(session, [event(), event()])
                    await session.flush()  # the rows were written, then rolled back
                    raise RuntimeError("the request failed")
            async with sessions(engine) as session:
                users = await session.scalar(select(func.count()).select_from(User))
                rows = await session.scalar(select(func.count()).select_from(OutboxRow))
                return int(users or 0), int(rows or 0)

    assert asyncio.run(main()) == (0, 0)


def test_claim_mark_sent_release_prune_backlog(migrated: str) -> None:
    async def main() -> None:
        async with opened(migrated) as engine:
            assert await outbox.backlog(engine) == (0, None)
            events = [event(key=k) for k in (b"a", b"b", b"a", None, b"a")]
            async with sessions(engine) as session, session.begin():
                outbox.append(session, events[:3])
            async with sessions(engine) as session, session.begin():
                outbox.append(session, events[3])
                outbox.append(session, events[4:])

            count, age = await outbox.backlog(engine)
            assert count == 5 and age is not None and 0 <= age < 60

            first = await outbox.claim(engine, "relay-a", limit=3, lease=30)
            assert first is not None and first.owner == "relay-a"
            assert [r.event_id for r in first.rows] == [e.id for e in events[:3]]
            ids = [r.id for r in first.rows]
            assert ids == sorted(ids)
            row = first.rows[0]
            assert (row.topic, row.key, row.value, row.event_type) == (
                events[0].topic,
                b"a",
                events[0].value,
                events[0].type,
            )
            assert row.headers == [
                ("event-type", "devconnect.user.login"),
                ("event-id", row.event_id),
            ]
            assert row.created_at.tzinfo is not None
            assert first.until > datetime.now(first.until.tzinfo) + timedelta(seconds=20)

            # Another instance gets nothing while the lease is live.
            assert await outbox.claim(engine, "relay-b", limit=10, lease=30) is None
            with pytest.raises(LeaseLost):
                await outbox.mark_sent(engine, "relay-b", ids)

            assert await outbox.mark_sent(engine, "relay-a", ids) == 3
            assert await outbox.mark_sent(engine, "relay-a", ids) == 0  # already sent
            assert (await outbox.backlog(engine))[0] == 2

            rest = await outbox.claim(engine, "relay-a", limit=10, lease=30)
            assert rest is not None
            assert [r.event_id for r in rest.rows] == [e.id for e in events[3:]]
            assert rest.rows[0].key is None

            # Sent rows are kept for the retention period, then pruned.
            assert await outbox.prune(engine, older_than=3600) == 0
            assert await outbox.prune(engine, older_than=0) == 3
            assert (await outbox.backlog(engine))[0] == 2

            assert await outbox.release(engine, "relay-a")
            assert not await outbox.release(engine, "relay-a")
            taken = await outbox.claim(engine, "relay-b", limit=10, lease=30)
            assert taken is not None and [r.id for r in taken.rows] == [r.id for r in rest.rows]
            assert await outbox.mark_sent(engine, "relay-b", [r.id for r in taken.rows]) == 2
            assert await outbox.backlog(engine) == (0, None)
            assert await outbox.claim(engine, "relay-b", limit=10, lease=30) is not None

    asyncio.run(main())


def test_prune_works_in_batches(migrated: str) -> None:
    async def main() -> tuple[int, int]:
        async with opened(migrated) as engine:
            async with sessions(engine) as session, session.begin():
                outbox.append(session, [event() for _ in range(25)])
            claim = await outbox.claim(engine, "r", limit=20, lease=30)
            assert claim is not None
            await outbox.mark_sent(engine, "r", [r.id for r in claim.rows])
            pruned = await outbox.prune(engine, older_than=0, batch=7)
            return pruned, (await outbox.backlog(engine))[0]

    assert asyncio.run(main()) == (20, 5)


def test_an_expired_lease_passes_to_another_relay(migrated: str) -> None:
    async def main() -> None:
        async with opened(migrated) as engine:
            async with sessions(engine) as session, session.begin():
                outbox.append(session, [event() for _ in range(3)])
            a = await outbox.claim(engine, "relay-a", limit=10, lease=0.3)
            assert a is not None and len(a.rows) == 3
            assert await outbox.claim(engine, "relay-b", limit=10, lease=5) is None
            assert await outbox.renew(engine, "relay-a")  # by its claimed length, 0.3 s
            await asyncio.sleep(0.5)
            b = await outbox.claim(engine, "relay-b", limit=10, lease=5)
            # The same rows, from the oldest: relay-a never marked them.
            assert b is not None and [r.id for r in b.rows] == [r.id for r in a.rows]
            assert not await outbox.renew(engine, "relay-a", lease=5)
            with pytest.raises(LeaseLost):
                await outbox.mark_sent(engine, "relay-a", [a.rows[0].id])
            assert await outbox.renew(engine, "relay-b", lease=5)

    asyncio.run(main())


def test_concurrent_claimers_one_owner_at_a_time(migrated: str) -> None:
    """Four instances (own engines) claim, publish and mark at random; short leases make
    them take over from each other. No two owners' leases ever overlap, every row is
    marked, and each owner sees rows in id order."""
    lease = 0.25

    async def relay(name: str, url: str, stop: asyncio.Event, grants: list) -> None:  # type: ignore[type-arg]
        async with opened(url) as engine:
            while not stop.is_set():
                claim = await outbox.claim(engine, name, limit=6, lease=lease)
                if claim is None:
                    await asyncio.sleep(random.uniform(0, 0.03))
                    continue
                ids = [r.id for r in claim.rows]
                assert ids == sorted(ids)
                first_grant = all(owner != name for _s, _e, owner in grants)
                grants.append((claim.until - timedelta(seconds=lease), claim.until, name))
                # Each relay lets its first lease run out (another takes over), then
                # takes a varying time to "publish".
                await asyncio.sleep(0.4 if first_grant else random.choice([0, 0.01, 0.05]))
                with contextlib.suppress(LeaseLost):
                    await outbox.mark_sent(engine, name, ids)

    async def main() -> int:
        async with opened(migrated) as engine:
            async with sessions(engine) as session, session.begin():
                outbox.append(session, [event(key=str(i % 3).encode()) for i in range(36)])
            stop = asyncio.Event()
            grants: list[tuple[datetime, datetime, str]] = []
            tasks = [
                asyncio.create_task(relay(f"relay-{i}", migrated, stop, grants)) for i in range(4)
            ]
            deadline = asyncio.get_running_loop().time() + 20
            while (await outbox.backlog(engine))[
                0
            ] and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*tasks)
            grants.sort()
            for (_start, end, owner), (next_start, _next_end, next_owner) in itertools.pairwise(
                grants
            ):
                assert owner == next_owner or next_start >= end, (
                    owner,
                    end,
                    next_owner,
                    next_start,
                )
            # The leases did run out and pass between instances.
            assert len({owner for _s, _e, owner in grants}) >= 2
            return (await outbox.backlog(engine))[0]

    assert asyncio.run(main()) == 0


def test_simultaneous_claims_elect_one_relay(migrated: str) -> None:
    async def main() -> list[int]:
        engines = [opened(migrated) for _ in range(5)]
        opened_engines = [await e.__aenter__() for e in engines]
        try:
            async with sessions(opened_engines[0]) as session, session.begin():
                outbox.append(session, event())
            winners = []
            for round_ in range(3):
                results = await asyncio.gather(
                    *(
                        outbox.claim(e, f"relay-{i}", limit=10, lease=30)
                        for i, e in enumerate(opened_engines)
                    )
                )
                granted = [r for r in results if r is not None]
                winners.append(len(granted))
                await outbox.release(opened_engines[0], granted[0].owner)
                del round_
            return winners
        finally:
            for e in engines:
                await e.__aexit__(None, None, None)

    assert asyncio.run(main()) == [1, 1, 1]


def test_writers_of_one_key_commit_in_id_order(migrated: str) -> None:
    """A transaction that has written an event of a key holds back the next writer of
    that key until it commits, so ids follow commits within the key."""

    async def main() -> tuple[bool, int, int, bool]:
        async with opened(migrated) as first_engine, opened(migrated) as second_engine:
            first = sessions(first_engine)
            await first.begin()
            outbox.append(first, event(key=b"k"))
            await first.flush()

            async def second_writer(key: bytes) -> int:
                written = event(key=key)
                async with sessions(second_engine) as session, session.begin():
                    outbox.append(session, written)
                    await session.flush()
                    found = select(OutboxRow.id).where(OutboxRow.event_id == written.id)
                    return int((await session.execute(found)).scalar_one())

            blocked = asyncio.create_task(second_writer(b"k"))
            await asyncio.sleep(0.5)
            was_waiting = not blocked.done()
            # Another key need not wait on PostgreSQL (on SQLite every writer does).
            other_free = False
            if backend(migrated) == "postgresql":
                await asyncio.wait_for(second_writer(b"other"), 5)
                other_free = True
            first_id = (await first.execute(select(func.max(OutboxRow.id)))).scalar_one()
            await first.commit()
            await first.close()
            second_id = await asyncio.wait_for(blocked, 10)
            return was_waiting, first_id, second_id, other_free

    was_waiting, first_id, second_id, other_free = asyncio.run(main())
    assert was_waiting
    assert second_id > first_id
    assert other_free == (backend(migrated) == "postgresql")
