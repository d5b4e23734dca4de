"""What the consumer runtime hands its handlers, and the records and signals around a call.

``HandlerContext.tx`` is a Redis MULTI pipeline under WATCH of the unit's idempotency
markers: commands a handler queues on it run with the markers in one transaction
(``finish``), so such effects happen exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from confluent_kafka import Message

from devctl.errors import UsageError
from devctl.events.consumer_options import RecordAction
from devctl.events.envelope import Event

Handler = Callable[..., Any]


@dataclass
class Route:
    func: Handler
    batch: bool
    wants_ctx: bool


@dataclass(slots=True)
class Record:
    """One record of a polled batch and what the runtime does with it."""

    msg: Message
    topic: str
    partition: int
    offset: int
    event: Event | None = None
    action: RecordAction = RecordAction.HANDLE
    reason: str = ""  # a dead letter's dlq-reason
    error: str = ""
    error_type: str = ""


class Duplicate(Exception):
    """Raised inside ctx.tx when another consumer marked events of the unit meanwhile.

    ``markers`` are the marked ones (empty: the WATCH fired but no marker is set now).
    """

    def __init__(self, markers: set[str]):
        super().__init__(f"{len(markers)} event(s) handled elsewhere")
        self.markers = markers


class Stall(Exception):
    """The runtime's own infrastructure failed: do not commit, seek back, retry later.

    ``server`` is the one that failed: "redis" (the guard, markers) or "kafka" (dead letters).
    """

    def __init__(self, message: str, server: str = "redis"):
        super().__init__(message)
        self.server = server


class Abandon(Exception):
    """Stopping while a record waits for a retry: leave it for the next run."""


class HandlerContext:
    """What a handler gets besides its event(s).

    ``tx`` is a Redis MULTI pipeline: commands queued on it run atomically with the
    idempotency marker after the handler returns (exactly-once Redis effects).
    """

    def __init__(
        self,
        group: str,
        records: list[Record],
        attempt: int,
        redis_client: redis.Redis | None,
        markers: list[str],
    ):
        self.group = group
        self.attempt = attempt
        self.records = [(r.topic, r.partition, r.offset) for r in records]
        self.redis = redis_client
        self._markers = markers
        self._tx: Any = None

    @property
    def topic(self) -> str:
        return self.records[0][0]

    @property
    def partition(self) -> int:
        return self.records[0][1]

    @property
    def offset(self) -> int:
        return self.records[0][2]

    @property
    def tx(self) -> Any:
        if self._tx is None:
            if self.redis is None:
                raise UsageError("ctx.tx needs Redis: give the runtime a Redis client")
            pipe = self.redis.pipeline(transaction=True)
            if self._markers:
                pipe.watch(*self._markers)  # type: ignore[no-untyped-call]
                found = pipe.mget(self._markers)
                marked = {m for m, value in zip(self._markers, found, strict=True) if value}
                if marked:
                    pipe.reset()
                    raise Duplicate(marked)
            pipe.multi()
            self._tx = pipe
        return self._tx

    def finish(self, ttl: int) -> list[str]:
        """After the handler: with a tx, run it with the markers (Duplicate if another
        consumer set them meanwhile) and return []; without, the markers still to write."""
        if self._tx is None:
            return self._markers
        for marker in self._markers:
            self._tx.set(marker, "1", ex=ttl)
        try:
            self._tx.execute()
        except redis.WatchError:
            self._tx.reset()
            found = self.redis.mget(self._markers) if self.redis is not None else []
            raise Duplicate(
                {m for m, value in zip(self._markers, found, strict=True) if value}
            ) from None
        return []

    def close(self) -> None:
        """Give the tx's connection back (whatever happened)."""
        if self._tx is not None:
            self._tx.reset()


# Error prefixes of a Redis that refuses writes for reasons of its own state.
_REFUSING_ERRORS = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.MasterDownError,
)
_REFUSING = ("OOM", "MISCONF", "READONLY", "LOADING", "BUSY", "NOREPLICAS", "MASTERDOWN")


def redis_refuses_writes(exc: redis.ResponseError) -> bool:
    if isinstance(exc, _REFUSING_ERRORS):
        return True
    text = str(exc).lstrip("-").upper()
    if isinstance(exc, redis.exceptions.ExecAbortError):
        # MULTI discarded because a queued command was refused; the cause follows.
        return any(prefix in text for prefix in _REFUSING)
    return text.startswith(_REFUSING)


def repeats(records: list[Record]) -> set[int]:
    """Records (by ``id()``) repeating an event id seen earlier in the same batch."""
    seen: set[str] = set()
    found: set[int] = set()
    for record in records:
        if record.action is RecordAction.HANDLE and record.event is not None:
            if record.event.id in seen:
                found.add(id(record))
            seen.add(record.event.id)
    return found


def where(records: list[Record]) -> str:
    first = records[0]
    text = f"{first.topic}[{first.partition}]@{first.offset}"
    return text if len(records) == 1 else f"{text} (+{len(records) - 1})"
