"""The outbox relay: publishes committed events to Kafka, in order, and marks them sent.

Requests never wait for Kafka: they commit their rows and events together and
ring the relay's doorbell. The relay holds the outbox lease (one relay at a time
across API instances, so events of one key leave in commit order), takes the
oldest unsent rows, hands them to the idempotent producer and marks a row sent
only once the broker acknowledged it. With Kafka down the rows wait in the
database (requests keep succeeding); the producer retries until its delivery
timeout, the relay then backs off and tries again: nothing is lost. A failed
delivery leaves the rows after it in the same partition failed too (the
idempotent producer's guarantee), so what is marked sent is, per key, a prefix:
order holds when the rest goes out later. While waiting for acknowledgements the
relay renews its lease, so a slow broker never lets a second relay publish the
same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devctl.db import outbox
from devctl.errors import DevctlError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from devctl.events.producer import EventProducer

log = logging.getLogger("devctl.api.relay")

_IDLE_POLL = 1.0  # seconds between looks at the outbox when nobody rang (other instances' rows)
_BACKOFF_FIRST, _BACKOFF_MAX = 0.5, 30.0
_PRUNE_EVERY = 60.0
# After the doorbell rings, wait this long before the round, so a burst of commits
# (a chat conversation, a seed run) goes out in one round rather than one round per
# commit. Measured (docs/benchmarks.md, real time): a round per chat message (two
# write transactions and a produce) tripled the message delivery latency of the
# instance (p50 3.3 -> 10 ms); events reach Kafka this much later instead.
_GATHER = 0.02


@dataclass
class RelayStats:
    published: int = 0
    failed_rounds: int = 0
    last_error: str | None = None
    last_published_at: float | None = None


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        producer: EventProducer,
        *,
        batch_size: int,
        lease: float,
        retention: float,
        owner: str | None = None,
        on_delivered: Callable[[float], None] | None = None,
    ):
        self.engine = engine
        self.producer = producer
        self.batch_size = batch_size
        self.lease = lease
        self.retention = retention
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.stats = RelayStats()
        # Told the seconds from a row's commit to the broker's acknowledgement.
        self.on_delivered = on_delivered
        self._doorbell = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff = 0.0
        self._last_prune = 0.0

    def wake(self) -> None:
        self._doorbell.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, timeout: float) -> None:
        """Publish what is committed (up to ``timeout``), then let the lease go."""
        self._stopping.set()
        self._doorbell.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.warning(
                    "the outbox relay did not finish within %gs; rows stay for the next relay",
                    timeout,
                )
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
        with contextlib.suppress(Exception):
            await outbox.release(self.engine, self.owner)

    async def _run(self) -> None:
        while True:
            try:
                busy = await self._round()
            except asyncio.CancelledError:
                raise
            except DevctlError as exc:  # database unavailable and the like: wait, retry
                busy = False
                self._failed(str(exc))
            except Exception as exc:  # never let the relay die: log it, back off, go on
                busy = False
                log.exception("outbox relay round failed")
                self._failed(f"{type(exc).__name__}: {exc}")
            if self._stopping.is_set() and not busy:
                return
            if busy and not self._backoff:
                continue  # more rows may be waiting: no pause between full batches
            await self._pause()

    async def _pause(self) -> None:
        delay = self._backoff or _IDLE_POLL
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._doorbell.wait(), delay)
            if not self._stopping.is_set() and not self._backoff:
                await asyncio.sleep(_GATHER)

    def _failed(self, reason: str) -> None:
        self.stats.failed_rounds += 1
        self.stats.last_error = reason
        self._backoff = min(_BACKOFF_MAX, max(_BACKOFF_FIRST, self._backoff * 2))
        if self._stopping.is_set():
            self._backoff = 0.0  # stopping: no long pause, stop() bounds the time

    async def _round(self) -> bool:
        """Publish one batch; True when a full batch went out (there may be more)."""
        # Cleared before looking, not before sleeping: a commit that rings while this
        # round publishes is then seen by the next round at once, not a poll later.
        self._doorbell.clear()
        await self._maybe_prune()
        claim = await outbox.claim(self.engine, self.owner, limit=self.batch_size, lease=self.lease)
        if claim is None or not claim.rows:
            self._backoff = 0.0
            return False
        rows = claim.rows
        futures = [
            self.producer.publish_raw(
                row.topic,
                row.value,
                key=row.key,
                headers=[
                    (name, value.encode("utf-8") if value is not None else None)
                    for name, value in (row.headers or [])
                ],
            )
            for row in rows
        ]
        delivered, failure = await self._await_all(rows, futures)
        if delivered:
            await outbox.mark_sent(self.engine, self.owner, delivered)
            self.stats.published += len(delivered)
            self.stats.last_published_at = time.time()
        if failure is not None:
            self._failed(failure)
            log.warning(
                "outbox relay: %d of %d events not delivered yet (%s); retrying",
                len(rows) - len(delivered),
                len(rows),
                failure,
            )
            return False
        self._backoff = 0.0
        return len(rows) >= self.batch_size

    async def _await_all(self, rows: list[Any], futures: list[Any]) -> tuple[list[int], str | None]:
        """Wait for every acknowledgement, renewing the lease meanwhile."""
        waiting = asyncio.gather(*(f.wait_async() for f in futures), return_exceptions=True)
        renew_every = max(self.lease / 3, 0.2)
        while True:
            try:
                results = await asyncio.wait_for(asyncio.shield(waiting), renew_every)
                break
            except TimeoutError:
                if not await outbox.renew(self.engine, self.owner, lease=self.lease):
                    log.error("outbox relay lost its lease while waiting for Kafka")
        delivered: list[int] = []
        failure: str | None = None
        now = time.time()
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or str(result)
            else:
                delivered.append(row.id)
                if self.on_delivered is not None:
                    self.on_delivered(max(0.0, now - row.created_at.timestamp()))
        return delivered, failure

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < _PRUNE_EVERY:
            return
        self._last_prune = now
        pruned = await outbox.prune(self.engine, older_than=self.retention)
        if pruned:
            log.info("outbox relay pruned %d published rows", pruned)
