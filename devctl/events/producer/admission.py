"""Admission: whether a batch fits in the local queue, which batches are under way, and
the stop of publishing when the producer closes."""

from __future__ import annotations

import threading
import time

from devctl.events.errors import DeliveryFailed, ProducerQueueFull
from devctl.events.producer.reports import Reports


class Admission:
    """Batches under way and the queue room they took, behind one gate.

    Events of admitted batches not queued yet count as taken: two batches admitted
    together cannot both be promised the same room.
    """

    def __init__(self, reports: Reports, queue_size: int, brokers: str):
        self._reports = reports
        self._queue_size = queue_size
        self._brokers = brokers
        self._gate = threading.Condition()
        self._publishing = 0  # batches under way: close() waits for them to stop queueing
        self._reserved = 0  # events of admitted batches not queued yet
        # Set while no batch is being queued. A batch serves delivery reports itself
        # between chunks; the delivery thread stays out of its way meanwhile, because two
        # threads serving reports hand the GIL back and forth per report (measured: ~10%
        # of a batch's throughput).
        self.no_batch = threading.Event()
        self.no_batch.set()
        self.closing = False

    @property
    def publishing(self) -> int:
        """How many batches are being queued now."""
        return self._publishing

    def begin_batch(self, count: int, *, refuse_if_full: bool) -> None:
        """Admit a batch of ``count`` events (DeliveryFailed once closing; ProducerQueueFull
        with ``refuse_if_full`` when it does not fit whole)."""
        with self._gate:
            if self.closing:
                raise DeliveryFailed("the producer is closed")
            if refuse_if_full:
                self._admit(count)
            self._publishing += 1
            self._reserved += count
            self.no_batch.clear()

    def queued(self, count: int) -> None:
        """``count`` events of a batch reached the client's queue: no longer reserved."""
        with self._gate:
            self._reserved -= count

    def end_batch(self, unqueued: int) -> None:
        """A batch stopped queueing; ``unqueued`` of its events never reached the queue."""
        with self._gate:
            self._reserved -= unqueued
            self._publishing -= 1
            if not self._publishing:
                self.no_batch.set()
                self._gate.notify_all()

    def _admit(self, count: int) -> None:
        """Refuse, whole, a batch that does not fit in the local queue's free room."""
        # Our own count: len(client) also counts the client's pending callbacks and errors.
        # Events of batches admitted but not queued yet are taken too (caller holds _gate).
        reports = self._reports
        with reports.lock:
            waiting = max(reports.stats.in_flight, 0) + self._reserved
        room = self._queue_size - waiting
        if count <= room:
            return
        with reports.lock:
            reports.stats.rejected += count
        too_big = count > self._queue_size
        raise ProducerQueueFull(
            f"a batch of {count:,} events does not fit in the producer's local queue "
            f"({room:,} of {self._queue_size:,} free, {waiting:,} events waiting for Kafka "
            f"at {self._brokers}); nothing of it was queued",
            hint="split the batch (it is larger than the whole queue)"
            if too_big
            else "is the broker reachable? raise events.producer_queue_size, or use "
            "events.producer_queue_full: block to wait for room",
        )

    def close(self, patience: float) -> bool:
        """Stop admitting; wait up to ``patience`` seconds for batches under way to stop.
        False if closing had begun already."""
        with self._gate:
            if self.closing:
                return False
            self.closing = True
            # Batches notice at their next chunk (or while waiting for room): not long.
            until = time.monotonic() + patience
            while self._publishing and time.monotonic() < until:
                self._gate.wait(0.1)
        return True
