"""The transactional outbox: events are written with the change they report, then relayed.

The API calls ``append`` inside the transaction of a state change, so the event
exists exactly when the change does. A relay (in the API process) publishes the
rows in id order and marks them sent; Kafka being down only delays it.

One relay at a time: with several API instances, ``claim`` hands the outbox to
one owner under a lease (the ``outbox_relay`` row, taken by compare-and-set in a
transaction that holds its lock: ``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite). The owner keeps it by calling
``mark_sent``, ``renew`` (a heartbeat while Kafka is slow) or ``claim`` again before
``Claim.until``, and should stop publishing once it has passed; when it stops
(``release``) or dies, another instance takes over from the oldest unsent row. A
row may thus be published twice (after a crash between publishing and
``mark_sent``), never lost or reordered within its key: consumers deduplicate on
the event id.

Per-key order also needs ids in commit order within each key: SQLite's single
writer gives it; on PostgreSQL the writers of one key are queued by an advisory
lock taken when their outbox rows are flushed (``_lock_keys``).

Lease times come from the database's clock on PostgreSQL (instances may run on
different hosts) and from this host's on SQLite (a local file: one host).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, event, func, select, text, update
from sqlalchemy.orm import Session

from devctl.db.engine import BEGIN_OPTION, connection_errors
from devctl.db.errors import LeaseLost
from devctl.db.models import RELAY_LEASE_NAME, OutboxRow, RelayLease, utcnow
from devctl.events.envelope import EncodedEvent

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

# Namespace (first key) of the per-key advisory locks of outbox writers on PostgreSQL.
_KEY_LOCK_SPACE = 0x6F757462  # "outb"
# Ids per statement in mark_sent: below every backend's bound-parameter limit.
_IDS_PER_STATEMENT = 1000
PRUNE_BATCH = 5000


@dataclass(frozen=True)
class OutboxMessage:
    """One unsent event, as the relay hands it to the producer.

    Header values are text, as stored (``value.encode()`` gives the bytes again).
    """

    id: int
    event_id: str
    event_type: str
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | None]]
    created_at: datetime


@dataclass(frozen=True)
class Claim:
    """The lease held by ``owner`` until ``until``, and the oldest unsent rows, in id order."""

    owner: str
    until: datetime
    rows: list[OutboxMessage]


def _header_text(name: str, value: str | bytes | None) -> list[str | None]:
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError as exc:
            raise ValueError(f"header {name!r} is not UTF-8 text; the outbox stores text") from exc
    return [name, value]


def _row(event: EncodedEvent, now: datetime) -> OutboxRow:
    return OutboxRow(
        event_id=event.id,
        event_type=event.type,
        topic=event.topic,
        key=event.key,
        value=event.value,
        headers=[_header_text(name, value) for name, value in event.headers],
        created_at=now,
    )


def append(session: AsyncSession, encoded: EncodedEvent | Iterable[EncodedEvent]) -> None:
    """Add events to the outbox in ``session``'s transaction (committed or rolled back with it).

    The rows are inserted at the session's next flush (at the latest, its commit),
    in the order given.
    """
    events = [encoded] if isinstance(encoded, EncodedEvent) else list(encoded)
    now = utcnow()
    session.add_all([_row(event, now) for event in events])


def _key_lock(key: bytes) -> int:
    # crc32 as a signed int4, the argument type of pg_advisory_xact_lock(int, int).
    return (zlib.crc32(key) ^ 0x80000000) - 0x80000000


@event.listens_for(Session, "before_flush")
def _lock_keys(session: Session, _context: Any, _instances: Any) -> None:
    """On PostgreSQL, queue up the transactions that write events of the same key.

    Ids come from a sequence, which hands them out before commit: two transactions
    writing events of one key could commit in the other order, and the relay
    publish the later event first. Each transaction takes a transaction-scoped
    advisory lock per key before its outbox rows get their ids, so within every
    key ids follow commits. Locks are taken in sorted order (no deadlock between
    two flushes); a transaction flushing events twice should flush them in one
    go where it can. SQLite needs none of this: a writer holds the database's
    write lock from its first write to its commit, ids included.
    """
    keys = {obj.key for obj in session.new if isinstance(obj, OutboxRow) and obj.key}
    if not keys or session.get_bind(OutboxRow).dialect.name != "postgresql":
        return
    for lock in sorted({_key_lock(key) for key in keys}):
        session.execute(
            text("SELECT pg_advisory_xact_lock(:space, :key)"),
            {"space": _KEY_LOCK_SPACE, "key": lock},
            bind_arguments={"mapper": OutboxRow},
        )


def _url(engine: AsyncEngine) -> str:
    return engine.url.render_as_string(hide_password=True)


async def _now(connection: AsyncConnection) -> datetime:
    if connection.dialect.name == "postgresql":
        # clock_timestamp, not now(): now() is the start of the transaction, which
        # may have waited for the lease row's lock.
        found = await connection.scalar(select(func.clock_timestamp()))
        assert isinstance(found, datetime)
        return found.astimezone(UTC)
    return utcnow()


async def _locked_lease(connection: AsyncConnection, *, skip_locked: bool) -> Any:
    """The lease row, locked for this transaction (SQLite: by BEGIN IMMEDIATE already);
    None when another transaction holds it and ``skip_locked``."""
    query = (
        select(RelayLease.owner, RelayLease.until, RelayLease.lease_seconds)
        .where(RelayLease.name == RELAY_LEASE_NAME)
        .with_for_update(skip_locked=skip_locked)
    )
    row = (await connection.execute(query)).first()
    if row is None:
        # Skipped (locked), or missing: the migration creates the row, but recreate
        # it if someone deleted it. A plain read tells the two apart without waiting.
        present = await connection.scalar(
            select(RelayLease.name).where(RelayLease.name == RELAY_LEASE_NAME)
        )
        if present is None:
            await connection.execute(_insert_lease_if_missing(connection.dialect.name))
            row = (await connection.execute(query)).first()
    return row


def _insert_lease_if_missing(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(RelayLease).values(name=RELAY_LEASE_NAME).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(RelayLease).values(name=RELAY_LEASE_NAME).on_conflict_do_nothing()


def _message(row: Any) -> OutboxMessage:
    return OutboxMessage(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        topic=row.topic,
        key=row.key,
        value=row.value,
        headers=[(name, value) for name, value in row.headers],
        created_at=row.created_at,
    )


async def claim(engine: AsyncEngine, owner: str, *, limit: int, lease: float) -> Claim | None:
    """Become (or stay) the relay for ``lease`` seconds and take the ``limit`` oldest
    unsent rows, in id order; None while another owner's lease is live.

    The rows stay unsent until ``mark_sent``: a relay that claims again before
    marking gets the same rows again.
    """
    if lease <= 0 or limit < 1:
        raise ValueError("claim needs a positive lease and limit")
    with connection_errors(_url(engine)):
        async with engine.connect() as connection:
            connection = await connection.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            async with connection.begin():
                held = await _locked_lease(connection, skip_locked=True)
                if held is None:
                    return None  # another instance is claiming or renewing right now
                now = await _now(connection)
                if held.owner not in (None, owner) and held.until is not None and held.until > now:
                    return None
                until = now + timedelta(seconds=lease)
                await connection.execute(
                    update(RelayLease)
                    .where(RelayLease.name == RELAY_LEASE_NAME)
                    .values(owner=owner, until=until, lease_seconds=lease)
                )
                rows = await connection.execute(
                    select(OutboxRow.__table__)
                    .where(OutboxRow.sent_at.is_(None))
                    .order_by(OutboxRow.id)
                    .limit(limit)
                )
                return Claim(owner, until, [_message(row) for row in rows])


async def _renewed(
    connection: AsyncConnection, owner: str, lease: float | None
) -> tuple[datetime, datetime] | None:
    """In a transaction: renew ``owner``'s lease (by ``lease`` seconds, else by the
    length of its last claim); (now, new end), or None when ``owner`` does not hold it."""
    held = await _locked_lease(connection, skip_locked=False)
    if held is None or held.owner != owner:
        return None
    now = await _now(connection)
    # No length at all (the row was recreated meanwhile): the lease ends now, and the
    # owner's next claim sets one.
    length = lease if lease is not None else (held.lease_seconds or 0.0)
    until = now + timedelta(seconds=length)
    values: dict[str, Any] = {"until": until}
    if lease is not None:
        values["lease_seconds"] = lease
    await connection.execute(
        update(RelayLease).where(RelayLease.name == RELAY_LEASE_NAME).values(**values)
    )
    return now, until


async def renew(engine: AsyncEngine, owner: str, *, lease: float | None = None) -> bool:
    """Extend ``owner``'s lease (the relay's heartbeat while it waits for Kafka) by
    ``lease`` seconds, by default the length it claimed; False if it is not the owner."""
    with connection_errors(_url(engine)):
        async with engine.connect() as connection:
            connection = await connection.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            async with connection.begin():
                return await _renewed(connection, owner, lease) is not None


async def mark_sent(engine: AsyncEngine, owner: str, ids: Sequence[int]) -> int:
    """Mark rows published and renew the lease by its length; the rows newly marked.

    Raises ``LeaseLost`` when ``owner`` no longer holds the lease: another relay took
    over and publishes from the oldest unsent row itself (nothing is marked).
    """
    with connection_errors(_url(engine)):
        async with engine.connect() as connection:
            connection = await connection.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            async with connection.begin():
                renewed = await _renewed(connection, owner, None)
                if renewed is None:
                    raise LeaseLost(
                        f"relay {owner!r} no longer holds the outbox lease",
                        data={"owner": owner},
                    )
                now, _until = renewed
                marked = 0
                unique = sorted(set(ids))
                for start in range(0, len(unique), _IDS_PER_STATEMENT):
                    chunk = unique[start : start + _IDS_PER_STATEMENT]
                    result = await connection.execute(
                        update(OutboxRow)
                        .where(OutboxRow.id.in_(chunk), OutboxRow.sent_at.is_(None))
                        .values(sent_at=now)
                    )
                    marked += result.rowcount
                return marked


async def release(engine: AsyncEngine, owner: str) -> bool:
    """Give the lease up (a relay stopping), so another instance need not wait for it
    to run out; False if ``owner`` did not hold it."""
    with connection_errors(_url(engine)):
        async with engine.begin() as connection:
            result = await connection.execute(
                update(RelayLease)
                .where(RelayLease.name == RELAY_LEASE_NAME, RelayLease.owner == owner)
                .values(owner=None, until=None)
            )
            return bool(result.rowcount)


async def prune(engine: AsyncEngine, older_than: float, *, batch: int = PRUNE_BATCH) -> int:
    """Delete rows sent more than ``older_than`` seconds ago; how many were deleted.

    In batches of ``batch`` rows, one transaction each, so that SQLite's write lock
    is never held for long.
    """
    total = 0
    with connection_errors(_url(engine)):
        while True:
            async with engine.begin() as connection:
                cutoff = await _now(connection) - timedelta(seconds=older_than)
                oldest = (
                    select(OutboxRow.id)
                    .where(OutboxRow.sent_at.is_not(None), OutboxRow.sent_at < cutoff)
                    .order_by(OutboxRow.id)
                    .limit(batch)
                )
                result = await connection.execute(
                    delete(OutboxRow).where(OutboxRow.id.in_(oldest.scalar_subquery()))
                )
            total += result.rowcount
            if result.rowcount < batch:
                return total


async def backlog(engine: AsyncEngine) -> tuple[int, float | None]:
    """Unsent rows, and the age in seconds of the oldest (None when there is none)."""
    with connection_errors(_url(engine)):
        async with engine.connect() as connection:
            connection = await connection.execution_options(**{BEGIN_OPTION: "DEFERRED"})
            async with connection.begin():
                count, oldest = (
                    await connection.execute(
                        select(func.count(), func.min(OutboxRow.created_at)).where(
                            OutboxRow.sent_at.is_(None)
                        )
                    )
                ).one()
                now = await _now(connection)
    if oldest is None:
        return int(count), None
    return int(count), max(0.0, (now - oldest).total_seconds())
