"""What publishing returns: one event's DeliveryFuture, one batch's BatchFuture, and their results.

Futures settle under their producer's lock (``Reports.lock``), the one that guards
its counters too: a delivery report takes a single lock.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from confluent_kafka import KafkaError, Message

from devctl.events._batches import Headers
from devctl.events.envelope import event_id_of
from devctl.events.ids import block_ids

if TYPE_CHECKING:
    from devctl.events.producer.reports import Reports

log = logging.getLogger("devctl.events.producer")


class Delivery(NamedTuple):
    """What the broker said about one event."""

    topic: str
    partition: int
    offset: int
    key: str | None
    event_id: str | None
    type: str | None
    error: str | None = None
    error_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


DeliveryCallback = Callable[[Delivery], None]
ErrorCallback = Callable[[str], None]
DeliveryReport = Callable[[KafkaError | None, Message], None]


@dataclass
class ProducerStats:
    queued: int = 0  # accepted into the local queue
    delivered: int = 0
    failed: int = 0  # delivery reports with an error (incl. purged at close)
    rejected: int = 0  # refused because the local queue was full
    errors: int = 0  # client-level errors (e.g. all brokers down)
    resent: int = 0  # refused by a broker that lost its producer state, sent again
    rebuilds: int = 0  # clients replaced after a fatal error

    @property
    def in_flight(self) -> int:
        return self.queued - self.delivered - self.failed


class BatchResult(NamedTuple):
    """What the broker said about a batch: how many were delivered, and every failure."""

    total: int
    delivered: int
    failures: list[Delivery]

    @property
    def ok(self) -> bool:
        return not self.failures


def delivery_of(
    msg: Message, event_id: str | None, event_type: str | None, err: KafkaError | None
) -> Delivery:
    key = msg.key()
    partition = msg.partition()
    offset = msg.offset()
    return Delivery(
        msg.topic() or "",
        -1 if partition is None else partition,
        -1 if offset is None else offset,
        key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
        event_id,
        event_type,
        None if err is None else err.str(),
        None if err is None else err.code(),
    )


_UNSET: Any = object()


class Outcome:
    """A lean future (result, waiter, callbacks) shared by one event's and one batch's.

    concurrent.futures.Future builds a Condition per instance, which cost more than the
    whole publish path; this one makes a waiter only when a caller actually waits.
    """

    __slots__ = ("_callbacks", "_exception", "_lock", "_result", "_waiter")

    def __init__(self, lock: threading.Lock) -> None:
        self._result: Any = _UNSET
        self._exception: BaseException | None = None
        self._waiter: threading.Event | None = None
        self._callbacks: list[Callable[[Any], None]] | None = None
        self._lock = lock

    def done(self) -> bool:
        return self._result is not _UNSET or self._exception is not None

    def settle(self, result: Any, exception: BaseException | None) -> None:
        """Resolve: wake the waiter, run the callbacks (the producer's report dispatch)."""
        with self._lock:
            self._result = result
            self._exception = exception
            waiter, callbacks = self._waiter, self._callbacks
            self._callbacks = None
        if waiter is not None or callbacks:
            self._notify(waiter, callbacks)

    def _notify(
        self, waiter: threading.Event | None, callbacks: list[Callable[[Any], None]] | None
    ) -> None:
        if waiter is not None:
            waiter.set()
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:
                log.exception("future callback raised")

    def _wait(self, timeout: float | None) -> None:
        with self._lock:
            if self.done():
                return
            if self._waiter is None:
                self._waiter = threading.Event()
            waiter = self._waiter
        if not waiter.wait(timeout):
            raise TimeoutError(f"no delivery report within {timeout:g}s")

    def _value(self) -> Any:
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._exception

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(future)`` when done (at once, in this thread, if already done)."""
        with self._lock:
            if not self.done():
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback(self)

    async def _wait_async(self) -> Any:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()

        def relay(_done: Outcome) -> None:
            loop.call_soon_threadsafe(self._hand_to, waiter)

        self.add_done_callback(relay)
        return await waiter

    def _hand_to(self, waiter: asyncio.Future[Any]) -> None:
        if waiter.cancelled():
            return
        if self._exception is not None:
            waiter.set_exception(self._exception)
        else:
            waiter.set_result(self._value())


class DeliveryFuture(Outcome):
    """The outcome of one publish: ``result(timeout)``, ``add_done_callback``, ``wait_async``.

    ``generation`` (which client of the producer queued it), ``partition`` and
    ``kept_headers`` are the producer's notes for a re-send after a client replacement.
    """

    __slots__ = (
        "_reports",
        "event_id",
        "generation",
        "kept_headers",
        "on_delivery",
        "partition",
        "type",
    )

    def __init__(
        self,
        reports: Reports | None = None,
        event_id: str | None = None,
        event_type: str | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        # Outcome's fields, set here: one future per event, so no super() call.
        self._result: Any = _UNSET
        self._exception: BaseException | None = None
        self._waiter: threading.Event | None = None
        self._callbacks: list[Callable[[Any], None]] | None = None
        self._lock = threading.Lock() if reports is None else reports.lock
        self._reports = reports
        self.on_delivery = on_delivery
        self.generation = 0
        self.partition: int | None = None
        # The record's headers, for a re-send: delivery reports do not carry them.
        self.kept_headers: Headers | None = None
        self.event_id = event_id
        self.type = event_type

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery report for this event (served by the producer's thread)."""
        reports = self._reports
        if reports is None:
            return
        if err is None and self.on_delivery is None and reports.on_delivery is None:
            # The hot path: count, store the message (a Delivery is built when asked for).
            with self._lock:
                reports.stats.delivered += 1
                self._result = msg
                waiter, callbacks = self._waiter, self._callbacks
                self._callbacks = None
            if waiter is not None or callbacks:
                self._notify(waiter, callbacks)
            return
        reports.report(self, err, msg)

    def result(self, timeout: float | None = None) -> Delivery:
        """The Delivery; raises DeliveryFailed if the broker refused, TimeoutError on timeout."""
        self._wait(timeout)
        if self._exception is not None:
            raise self._exception
        return self._value()

    def _value(self) -> Delivery:
        # Delivery reports store the librdkafka message; it becomes a Delivery on demand.
        result = self._result
        if not isinstance(result, Delivery):
            result = self._result = delivery_of(result, self.event_id, self.type, None)
        return result

    async def wait_async(self) -> Delivery:
        """Await the delivery from asyncio code without blocking the event loop."""
        result: Delivery = await self._wait_async()
        return result


# Fast successes are added to stats.delivered every this many (a power of two).
_CREDIT = 64
_MAX_GENERATION = 1 << 62


class BatchFuture(Outcome):
    """The outcome of one ``publish_batch``: done when every event of it has its report.

    ``result(timeout)`` gives a BatchResult (failures included: a batch with failures
    does not raise, each failure was also logged, counted and passed to the callbacks);
    ``event_ids`` lists the ids in the order of the input.
    """

    __slots__ = (
        "_current_generation",
        "_extra_headers",
        "_failures",
        "_fast",
        "_first",
        "_on_delivery",
        "_prefix",
        "_reports",
        "_segments",
        "_settled",
        "_slow",
        "_slow_lock",
        "queued",
        "total",
        "type",
    )

    def __init__(
        self,
        reports: Reports,
        event_type: str,
        count: int,
        ids: tuple[str, int],
        on_delivery: DeliveryCallback | None,
        extra_headers: Headers,
        current_generation: Callable[[], int],
    ) -> None:
        super().__init__(reports.lock)
        self._reports = reports
        self._current_generation = current_generation
        self.type = event_type
        self.total = count
        self._prefix, self._first = ids
        self._on_delivery = on_delivery
        self._extra_headers = extra_headers
        self._failures: list[Delivery] = []
        self._slow = 0  # events whose outcome went through report_one (not the fast count)
        self.queued = 0  # events handed to the client so far
        self._slow_lock = threading.Lock()
        # (first index, generation of the client it went to), in order: a re-send after
        # a client replacement needs to know which client an event was queued on.
        self._segments: list[tuple[int, int]] = []
        # next() of an itertools.count is atomic (a C call under the GIL): the cheapest
        # counter shared by the threads that serve delivery reports.
        self._settled = itertools.count(1).__next__
        self._fast = itertools.count(1).__next__  # successes counted without a Delivery
        if count == 0:
            self._complete()

    @property
    def event_ids(self) -> list[str]:
        return block_ids(self._prefix, self._first, self.total)

    def result(self, timeout: float | None = None) -> BatchResult:
        self._wait(timeout)
        if self._exception is not None:
            raise self._exception
        result: BatchResult = self._result
        return result

    async def wait_async(self) -> BatchResult:
        result: BatchResult = await self._wait_async()
        return result

    def sent_to(self, index: int, generation: int) -> None:
        """Events from ``index`` on go to the client of ``generation`` (until the next call)."""
        self._segments.append((index, generation))

    def delivery_report(self) -> DeliveryReport:
        """The delivery report callback of every event of the batch.

        Without per-event callbacks, successes are only counted (into the stats every
        _CREDIT of them); anything else goes through ``report_one``.
        """
        reports = self._reports
        if self._on_delivery is not None or reports.on_delivery is not None:
            return self.report_one
        settled, fast, complete, slow = self._settled, self._fast, self._complete, self.report_one
        stats, lock, credit, step, count = (
            reports.stats,
            reports.lock,
            _CREDIT - 1,
            _CREDIT,
            self.total,
        )

        def report(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                if not fast() & credit:  # every _CREDIT successes: into the stats
                    with lock:
                        stats.delivered += step
                if settled() == count:
                    complete()
            else:
                slow(err, msg)

        return report

    def report_one(self, err: KafkaError | None, msg: Message) -> None:
        """A delivery report that is not a plain success (or any, with a per-event callback)."""
        event_id = event_id_of(msg.value())
        with self._slow_lock:
            self._slow += 1
        pending = DeliveryFuture(self._reports, event_id, self.type, self._collect)
        pending.generation = self._generation_of(event_id)
        pending.kept_headers = self._extra_headers or None  # the rest is rebuilt (resend_headers)
        self._reports.report(pending, err, msg)

    def unsent(self, index: int, topic: str, key: str | None, reason: str) -> None:
        """An event of the batch that never reached the client's queue (counted as rejected)."""
        with self._slow_lock:
            self._slow += 1
        event_id = f"{self._prefix}{self._first + index:012x}"
        pending = DeliveryFuture(self._reports, event_id, self.type, self._collect)
        self._reports.fail(pending, topic, key.encode() if key else None, reason, rejected=True)

    def _complete(self) -> None:
        # Fast successes reach stats.delivered in steps of _CREDIT; here the rest.
        fast = self.total - self._slow
        with self._lock:
            self._reports.stats.delivered += fast % _CREDIT
        failures = sorted(self._failures, key=lambda d: d.event_id or "")
        self.settle(BatchResult(self.total, self.total - len(failures), failures), None)

    def _collect(self, delivery: Delivery) -> None:
        # The final outcome of one slow-path event (after any re-send); the producer
        # calls it after its own callback, so a settled batch has been seen whole.
        if self._on_delivery is not None:
            try:
                self._on_delivery(delivery)
            except Exception:  # a caller's bug must not leave the batch unsettled
                log.exception("delivery callback raised")
        if not delivery.ok:
            self._failures.append(delivery)
        if self._settled() == self.total:
            self._complete()

    def _generation_of(self, event_id: str | None) -> int:
        segments = self._segments
        if not segments:
            return self._current_generation()
        try:
            index = int((event_id or "")[-12:], 16) - self._first
        except ValueError:
            return segments[-1][1]
        position = bisect.bisect_right(segments, (index, _MAX_GENERATION)) - 1
        return segments[max(position, 0)][1]
