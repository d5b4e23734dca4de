"""The event producer: idempotent, acks=all, never blocking the caller on the network.

``publish`` validates and encodes the event, hands it to librdkafka's local
queue and returns at once with a ``DeliveryFuture`` that resolves to a
``Delivery`` (or raises ``DeliveryFailed``) when the broker answers. A background
thread serves delivery reports, so futures resolve without the caller polling;
``publish_async`` (or ``await future.wait_async()``) awaits it from asyncio code.

``publish_batch`` queues many events of one type at about twice the rate: the
list is validated first in one pydantic-core call (a bad item: nothing queued),
the events share a block of ids and one publish time, successes are counted by
one shared callback and failures still come one by one; one BatchFuture.

The local queue is bounded (``events.producer_queue_size``). When it is full the
policy ``events.producer_queue_full`` applies: ``error`` (default) raises
``ProducerQueueFull`` at once and nothing is queued (a batch that does not fit is
refused whole); ``block`` waits up to ``events.producer_block_timeout`` seconds
for room, then raises. A batch that meets a full queue half-way waits that long
whatever the policy, then reports the rest as failed. That is the only wait:
publishing never waits for the network.

No failure is silent: a failed delivery is logged, counted in ``stats.failed``,
passed to the caller's callback and set on the future. Events still queued when
the producer closes are purged and reported as failed the same way.

A broker that loses its producer state (the embedded engine after a restart: its
storage is memory) makes librdkafka's idempotent producer fail fatally. The
producer then replaces its client and re-sends the events the broker refused or
never saw (same event ids: consumers' idempotency guards absorb any copy);
events whose fate is unknown (timed out) are reported as failed as usual.

librdkafka does not always fail fatally: when nothing was in flight as the broker
died, it retries UNKNOWN_PRODUCER_ID with epoch bumps forever and every event
times out. Its ``eos`` debug log is watched for that loop (``_LibrdkafkaLog``);
a loop with no delivery in between triggers the same replacement. Events the old
client still holds after a grace period are purged and sent again too.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import fetch_metadata, kafka_reason, producer_conf
from devctl.config.loader import Settings
from devctl.errors import KafkaUnavailable, UsageError
from devctl.events._batches import Headers
from devctl.events.envelope import (
    _CONTENT_TYPE_BYTES,
    DATA_MEMBER,
    HEADER_CONTENT_TYPE,
    HEADER_ID,
    HEADER_TYPE,
    EncodedEvent,
    encode_event,
    envelope_text,
    event_headers,
    event_id_of,
    iso_millis,
)
from devctl.events.errors import DeliveryFailed, ProducerQueueFull
from devctl.events.ids import block_ids, uuid7_block
from devctl.events.registry import REGISTRY, EventType

if TYPE_CHECKING:
    from confluent_kafka.admin import ClusterMetadata

log = logging.getLogger("devctl.events.producer")

QUEUE_FULL_POLICIES = ("error", "block")

# Outcomes of a fatally failed client that mean "the broker did not store it":
# such events are sent again through the replacement client.
_SEND_AGAIN = frozenset(
    {
        KafkaError._PURGE_QUEUE,
        KafkaError._PURGE_INFLIGHT,  # only from a replaced client (see _rebuild)
        KafkaError._FATAL,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.INVALID_PRODUCER_EPOCH,
    }
)


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


# The unknown-producer-id loop: this many UNKPID log lines over at least this many
# seconds, with no delivery in between (a normal recovery takes one epoch bump).
_STUCK_LINES = 5
_STUCK_SECONDS = 1.0
_rdkafka_log = logging.getLogger("devctl.events.librdkafka")


class _LibrdkafkaLog:
    """librdkafka's ``logger``: forwards its log, and spots the unknown-producer-id loop."""

    def __init__(self, owner: EventProducer, generation: int):
        self._owner = owner
        self._generation = generation  # the client it watches (a replaced one is ignored)
        self._lines = 0
        self._since = 0.0
        self._delivered = -1

    def log(self, level: int, fmt: str, *args: Any) -> None:
        # confluent-kafka calls log(python_level, "%s [%s] %s", facility, name, text).
        if args and args[0] == "UNKPID":
            self._unknown_producer_id()
        elif args and args[0] == "IDEMPSTATE" and str(args[-1]).endswith("-> Assigned"):
            self._owner._id_assigned(self._generation)
        if _rdkafka_log.isEnabledFor(level):
            _rdkafka_log.log(level, fmt, *args)

    def _unknown_producer_id(self) -> None:
        owner = self._owner
        now = time.monotonic()
        delivered = owner.stats.delivered
        if delivered != self._delivered:
            self._delivered, self._lines, self._since = delivered, 0, now
        self._lines += 1
        if self._lines >= _STUCK_LINES and now - self._since >= _STUCK_SECONDS:
            self._lines, self._since = 0, now
            owner._mark_failed(
                self._generation,
                "the broker keeps refusing the producer id (UNKNOWN_PRODUCER_ID) and "
                "librdkafka does not recover",
            )


_UNSET: Any = object()
_future_lock = threading.Lock()


class _Outcome:
    """A lean future (result, waiter, callbacks) shared by one event's and one batch's.

    concurrent.futures.Future builds a Condition per instance, which cost more than the
    whole publish path; this one makes a waiter only when a caller actually waits.
    """

    __slots__ = ("_callbacks", "_exception", "_result", "_waiter")

    def __init__(self) -> None:
        self._result: Any = _UNSET
        self._exception: BaseException | None = None
        self._waiter: threading.Event | None = None
        self._callbacks: list[Callable[[Any], None]] | None = None

    def done(self) -> bool:
        return self._result is not _UNSET or self._exception is not None

    def _finish(self, result: Any, exception: BaseException | None) -> None:
        with _future_lock:
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
        with _future_lock:
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
        with _future_lock:
            if not self.done():
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback(self)

    async def _wait_async(self) -> Any:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()

        def relay(done: _Outcome) -> None:
            loop.call_soon_threadsafe(_settle, waiter, done)

        self.add_done_callback(relay)
        return await waiter


class DeliveryFuture(_Outcome):
    """The outcome of one publish: ``result(timeout)``, ``add_done_callback``, ``wait_async``."""

    __slots__ = (
        "_generation",
        "_headers",
        "_on_delivery",
        "_owner",
        "_partition",
        "event_id",
        "type",
    )

    def __init__(
        self,
        owner: EventProducer | None = None,
        event_id: str | None = None,
        event_type: str | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        # _Outcome's fields, set here: one future per event, so no super() call.
        self._result: Any = _UNSET
        self._exception: BaseException | None = None
        self._waiter: threading.Event | None = None
        self._callbacks: list[Callable[[Any], None]] | None = None
        self._owner = owner
        self._on_delivery = on_delivery
        self._generation = 0  # which client of the producer queued it
        self._partition: int | None = None
        # The record's headers, for a re-send: delivery reports do not carry them.
        self._headers: Headers | None = None
        self.event_id = event_id
        self.type = event_type

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery report for this event (served by the producer's thread)."""
        owner = self._owner
        if owner is None:
            return
        if err is None and self._on_delivery is None and owner._on_delivery is None:
            # The hot path: count, store the message (a Delivery is built when asked for).
            with _future_lock:
                owner.stats.delivered += 1
                self._result = msg
                waiter, callbacks = self._waiter, self._callbacks
                self._callbacks = None
            if waiter is not None or callbacks:
                self._notify(waiter, callbacks)
            return
        owner._report(self, err, msg)

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
            result = self._result = _delivery_of(result, self.event_id, self.type, None)
        return result

    async def wait_async(self) -> Delivery:
        """Await the delivery from asyncio code without blocking the event loop."""
        result: Delivery = await self._wait_async()
        return result


class BatchResult(NamedTuple):
    """What the broker said about a batch: how many were delivered, and every failure."""

    total: int
    delivered: int
    failures: list[Delivery]

    @property
    def ok(self) -> bool:
        return not self.failures


class BatchFuture(_Outcome):
    """The outcome of one ``publish_batch``: done when every event of it has its report.

    ``result(timeout)`` gives a BatchResult (failures included: a batch with failures
    does not raise, each failure was also logged, counted and passed to the callbacks);
    ``event_ids`` lists the ids in the order of the input.
    """

    __slots__ = (
        "_extra_headers",
        "_failures",
        "_fast",
        "_first",
        "_on_delivery",
        "_owner",
        "_prefix",
        "_queued",
        "_segments",
        "_settled",
        "_slow",
        "_slow_lock",
        "total",
        "type",
    )

    def __init__(
        self,
        owner: EventProducer,
        event_type: str,
        count: int,
        ids: tuple[str, int],
        on_delivery: DeliveryCallback | None,
        extra_headers: Headers,
    ) -> None:
        super().__init__()
        self._owner = owner
        self.type = event_type
        self.total = count
        self._prefix, self._first = ids
        self._on_delivery = on_delivery
        self._extra_headers = extra_headers
        self._failures: list[Delivery] = []
        self._slow = 0  # events whose outcome went through _report (not the fast count)
        self._queued = 0  # events handed to the client so far
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

    def _event_id(self, index: int) -> str:
        return f"{self._prefix}{self._first + index:012x}"

    def _complete(self) -> None:
        # Fast successes reach stats.delivered in steps of _CREDIT; here the rest.
        fast = self.total - self._slow
        with self._owner._lock:
            self._owner.stats.delivered += fast % _CREDIT
        failures = sorted(self._failures, key=lambda d: d.event_id or "")
        self._finish(BatchResult(self.total, self.total - len(failures), failures), None)

    def _report(self, err: KafkaError | None, msg: Message) -> None:
        """A delivery report that is not a plain success (or any, with a per-event callback)."""
        event_id = event_id_of(msg.value())
        with self._slow_lock:
            self._slow += 1
        pending = DeliveryFuture(self._owner, event_id, self.type, self._collect)
        pending._generation = self._generation_of(event_id)
        pending._headers = self._extra_headers or None  # the rest is rebuilt (resend_headers)
        self._owner._report(pending, err, msg)

    def _unsent(self, index: int, topic: str, key: str | None, reason: str) -> None:
        """An event of the batch that never reached the client's queue (counted as rejected)."""
        with self._slow_lock:
            self._slow += 1
        pending = DeliveryFuture(self._owner, self._event_id(index), self.type, self._collect)
        self._owner._fail(pending, topic, key.encode() if key else None, reason, rejected=True)

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
            return self._owner._current[1]
        try:
            index = int((event_id or "")[-12:], 16) - self._first
        except ValueError:
            return segments[-1][1]
        position = bisect.bisect_right(segments, (index, _MAX_GENERATION)) - 1
        return segments[max(position, 0)][1]


_MAX_GENERATION = 1 << 62
# Fast successes are added to stats.delivered every this many (a power of two).
_CREDIT = 64


# Producer.produce called with positional arguments: (topic, value, key, partition,
# callback, on_delivery, timestamp, headers), the order of confluent-kafka's C
# signature since headers came in. Parsing keywords costs ~0.25 µs a call, a tenth of
# a batched event's whole cost; tests/events/test_event_batch.py checks the mapping
# (partitioner, callback, timestamp and headers on the records) against the broker.
_ANY_PARTITION = -1  # RD_KAFKA_PARTITION_UA: the partitioner picks, by key
_NOW = 0  # timestamp 0: librdkafka stamps the record when it is produced

# The delivery thread's longest wait. close() waits for the thread, which notices only
# when its poll returns: 50 ms added that much to every close() (a one-event `devctl
# publish` included). A poll returns at once when reports arrive; an idle one costs
# a few microseconds.
_SERVE_INTERVAL = 0.01

# How long close() waits at most for batches to stop and for its delivery thread.
_CLOSE_PATIENCE = 30.0

# How long a replaced client is still served after its replacement.
_RETIRED_SECONDS = 5.0

# A batch is handed to the client in chunks; each chunk re-reads the current client,
# so a batch under way when the client is replaced moves to the new one.
_CHUNK = 512


def _settle(waiter: asyncio.Future[Any], done: _Outcome) -> None:
    if waiter.cancelled():
        return
    if done._exception is not None:
        waiter.set_exception(done._exception)
    else:
        waiter.set_result(done._value())


def _delivery_of(
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


class EventProducer:
    """Publish DevConnect events (or raw records) to Kafka.

    Use as a context manager, or call ``close()``: it flushes what is queued.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        settings: Settings,
        *,
        source: str | None = None,
        on_delivery: DeliveryCallback | None = None,
        on_error: ErrorCallback | None = None,
        queue_full: str | None = None,
        block_timeout: float | None = None,
        **overrides: Any,
    ):
        events = settings.events
        self.source = source or events.source
        self.queue_full = queue_full or events.producer_queue_full
        if self.queue_full not in QUEUE_FULL_POLICIES:
            raise UsageError(
                f"queue-full policy must be one of {', '.join(QUEUE_FULL_POLICIES)}, "
                f"got {self.queue_full!r}"
            )
        self.block_timeout = (
            events.producer_block_timeout if block_timeout is None else block_timeout
        )
        self.queue_size = int(
            overrides.pop("queue.buffering.max.messages", events.producer_queue_size)
        )
        self.stats = ProducerStats()
        self._on_delivery = on_delivery
        self._on_error = on_error
        # One lock guards the stats and every future's state: a delivery report takes it once.
        self._lock = _future_lock
        conf = producer_conf(
            endpoints,
            settings,
            **{
                "linger.ms": events.linger_ms,
                "message.timeout.ms": events.delivery_timeout_ms,
                "queue.buffering.max.messages": self.queue_size,
            },
        )
        conf.update(overrides)
        # Each client gets its own error callback and log watcher (see _new_client).
        self._own_error_cb = "error_cb" not in conf
        self._watch_log = bool(conf.get("enable.idempotence")) and "logger" not in conf
        if self._watch_log:
            debug = str(conf.get("debug") or "")
            conf["debug"] = f"{debug},eos" if debug else "eos"
        self.brokers = endpoints.kafka_brokers
        self._endpoints = endpoints
        self._conf = conf
        # Set once the first client has its idempotent producer id (see warm_up).
        self._has_id = threading.Event()
        self._swap = threading.Lock()  # guards _current, _fatal, _again and _retired
        self._fatal: str | None = None
        # (client, generation), replaced whole: a reader never pairs one client with
        # another's generation.
        self._current: tuple[Producer, int] = (self._new_client(0), 0)
        self._again: list[tuple[DeliveryFuture, str, bytes | None, bytes | None, Any]] = []
        self._retired: list[tuple[Producer, float]] = []  # replaced clients, still served
        # Batches under way: close() waits for them to stop queueing.
        self._gate = threading.Condition()
        self._publishing = 0
        # Events of admitted batches not queued yet: admission counts them as taken.
        self._reserved = 0
        # Set while no batch is being queued. A batch serves delivery reports itself
        # between chunks; the background thread stays out of its way meanwhile,
        # because two threads serving reports hand the GIL back and forth per report
        # (measured: ~10% of a batch's throughput).
        self._no_batch = threading.Event()
        self._no_batch.set()
        self._closing = False
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name="devctl-producer-deliveries", daemon=True
        )
        self._thread.start()

    def _new_client(self, generation: int) -> Producer:
        conf = dict(self._conf)
        if self._own_error_cb:
            conf["error_cb"] = functools.partial(self._client_error, generation=generation)
        if self._watch_log:
            conf["logger"] = _LibrdkafkaLog(self, generation)
        return Producer(conf)

    def _mark_failed(self, generation: int, reason: str) -> bool:
        """Flag the client of ``generation`` for replacement; False if it is replaced already.

        A replaced client (still served for a while) can report fatal errors too: they
        must not condemn its healthy successor.
        """
        with self._swap:
            if generation != self._current[1]:
                return False
            self._fatal = self._fatal or reason
            return True

    def _replace(self, generation: int, reason: str) -> None:
        """A fatal error from the client of ``generation``: replace it (once)."""
        self._mark_failed(generation, reason)
        self._rebuild(generation)

    def _id_assigned(self, generation: int) -> None:
        if generation == 0:
            self._has_id.set()

    def warm_up(self, timeout: float) -> ClusterMetadata:
        """Connect now: return the cluster's metadata (all topics) once the client can send.

        For one-shot callers (``devctl publish``), whose first event would otherwise wait
        about a second. librdkafka's idempotent producer asks for its producer id when
        metadata arrives and then only on a 500 ms timer. A fresh client's first attempt
        always finds no broker up: the bootstrap connection is dropped as soon as the
        metadata names the real broker, which is connected only afterwards. So the first
        event waited for one or two timer ticks. Every metadata answer re-runs that
        request, so asking again once the real broker is up gets the id at once.

        Raises KafkaUnavailable if no metadata comes within ``timeout``. Without the id
        by then, it returns anyway: events wait for the id as usual (nothing is lost).
        """
        deadline = time.monotonic() + timeout
        client = self._current[0]
        metadata, _ms = fetch_metadata(client, self._endpoints, timeout)
        if not self._watch_log:
            return metadata  # not idempotent, or the caller's logger: nothing to watch
        pause = 0.002
        while not self._has_id.wait(pause):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(KafkaUnavailable):
                metadata, _ms = fetch_metadata(client, self._endpoints, left)
            pause = min(pause * 2, 0.1)
        return metadata

    @property
    def max_record_bytes(self) -> int:
        """The client's record size limit (``message.max.bytes``)."""
        return int(self._conf.get("message.max.bytes", 1_000_000))

    # --- publishing ---------------------------------------------------------

    def encode(
        self,
        event_type: str | EventType,
        data: Any,
        *,
        key: str | None = None,
        subject: str | None = None,
    ) -> EncodedEvent:
        """Validate and encode without sending (raises UnknownEventType / InvalidEventData)."""
        return encode_event(event_type, data, source=self.source, key=key, subject=subject)

    def publish(
        self,
        event_type: str | EventType,
        data: Any,
        *,
        key: str | None = None,
        subject: str | None = None,
        topic: str | None = None,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> DeliveryFuture:
        """Queue one event; returns at once. ``topic`` overrides the registry's (tests, checks)."""
        encoded = encode_event(event_type, data, source=self.source, key=key, subject=subject)
        return self._produce(
            topic or encoded.topic,
            encoded.value,
            encoded.key,
            encoded.headers + headers if headers else encoded.headers,
            None,
            encoded.id,
            encoded.type,
            on_delivery,
            headers,
        )

    def publish_encoded(
        self,
        encoded: EncodedEvent,
        *,
        topic: str | None = None,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> DeliveryFuture:
        all_headers = encoded.headers + headers if headers else encoded.headers
        return self._produce(
            topic or encoded.topic,
            encoded.value,
            encoded.key,
            all_headers,
            None,
            encoded.id,
            encoded.type,
            on_delivery,
            headers,
        )

    def publish_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> DeliveryFuture:
        """Queue a record as-is (no envelope, no validation): --raw publishing and dead letters."""
        return self._produce(
            topic, value, key, headers, partition, None, None, on_delivery, headers
        )

    def publish_batch(
        self,
        event_type: str | EventType,
        items: Sequence[Any],
        *,
        topic: str | None = None,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> BatchFuture:
        """Queue many events of one type; returns at once with one future for the batch.

        Every item is validated before the first is queued: one bad item raises
        InvalidEventData naming it (by its position) and nothing is sent. The
        events share one publish time and a block of UUIDv7 ids (``event_ids``).

        Under the ``error`` policy a batch that does not fit in the local queue's
        free room is refused whole (ProducerQueueFull, nothing queued). If the queue
        fills anyway half-way (other threads publish too), the batch waits up to
        ``block_timeout`` for room; events that still find none are reported as
        failed through the future, the log, the counters and the callbacks.

        Successes are counted, not reported one by one, unless ``on_delivery`` (or
        the producer's own callback) wants each Delivery: that costs a callback per
        event, as ``publish`` does.
        """
        spec = event_type if isinstance(event_type, EventType) else REGISTRY[event_type]
        rows = spec.validate_many(items)  # raises before anything is queued
        count = len(rows)
        extra: Headers = list(headers or ())
        with self._gate:
            if self._closing:
                raise DeliveryFailed("the producer is closed")
            if self.queue_full == "error":
                self._admit(count)
            self._publishing += 1
            self._reserved += count
            self._no_batch.clear()
        batch: BatchFuture | None = None
        try:
            prefix, first, ms = uuid7_block(count)
            batch = BatchFuture(self, spec.name, count, (prefix, first), on_delivery, extra)
            if count:
                self._queue_batch(batch, spec, rows, topic or spec.topic, extra, ms)
            return batch
        finally:
            with self._gate:
                self._reserved -= count - (batch._queued if batch is not None else 0)
                self._publishing -= 1
                if not self._publishing:
                    self._no_batch.set()
                    self._gate.notify_all()

    def _queue_batch(
        self,
        batch: BatchFuture,
        spec: EventType,
        rows: list[dict[str, Any]],
        topic: str,
        extra: Headers,
        ms: int,
    ) -> None:
        count, prefix, first = batch.total, batch._prefix, batch._first
        report: Callable[[KafkaError | None, Message], None]
        if batch._on_delivery is None and self._on_delivery is None:
            settled, fast, complete, slow = (
                batch._settled,
                batch._fast,
                batch._complete,
                batch._report,
            )
            stats, lock, credit, step = self.stats, self._lock, _CREDIT - 1, _CREDIT

            def report(err: KafkaError | None, msg: Message) -> None:
                if err is None:
                    if not fast() & credit:  # every _CREDIT successes: into the stats
                        with lock:
                            stats.delivered += step
                    if settled() == count:
                        complete()
                else:
                    slow(err, msg)

        else:
            report = batch._report
        head, middle, tail = envelope_text(spec, self.source, iso_millis(ms))
        type_header: tuple[str, bytes] = (HEADER_TYPE, spec.name.encode())
        content: tuple[str, bytes] = (HEADER_CONTENT_TYPE, _CONTENT_TYPE_BYTES)
        key_of, subject_of, dump = spec.key_of, spec.subject_of, spec.fields_serializer
        # Locals, not globals, in the hot loop.
        id_name, data, anywhere, now = HEADER_ID, DATA_MEMBER, _ANY_PARTITION, _NOW
        index = attempts = 0
        room_until: float | None = None  # one wait for room per batch, not per event
        while index < count:
            if self._closing:
                self._reject_rest(batch, rows, index, topic, key_of, "the producer closed first")
                return
            client, generation = self._current
            batch._segments.append((index, generation))
            produce, start, high = client.produce, index, min(index + _CHUNK, count)
            try:
                # The hot loop: one f-string and one pydantic-core call per event.
                # Keys and subjects are id fields (the registry checks): no escaping.
                # After an exception, index names the event that raised it.
                for index in range(start, high):
                    fields = rows[index]
                    event_id = f"{prefix}{first + index:012x}"
                    key = key_of(fields)
                    text = f"{head}{event_id}{middle}{subject_of(fields)}{tail}{key}{data}"
                    value = text.encode() + dump(fields) + b"}"
                    record_headers: Headers = [type_header, (id_name, event_id), content]
                    if extra:
                        record_headers += extra
                    produce(topic, value, key, anywhere, report, None, now, record_headers)
                self._count_queued(batch, high - start)  # before a report can count it
                index, attempts = high, 0
                try:
                    client.poll(0)  # the reports that are ready, in this thread
                except KafkaException as exc:
                    if _is_fatal(exc):
                        self._mark_failed(generation, kafka_reason(exc))
                continue
            except (BufferError, KafkaException) as exc:
                self._count_queued(batch, index - start)
                failure: BaseException = exc
            if isinstance(failure, BufferError):
                room_until = room_until or time.monotonic() + self.block_timeout
                kwargs = {"key": key, "headers": record_headers, "on_delivery": report}
                try:
                    waited_on = self._wait_for_room(
                        topic, value, kwargs, block=True, until=room_until
                    )
                    self._count_queued(batch, 1)
                    batch._segments.append((index, waited_on))  # maybe a new client
                    index += 1
                    continue
                except (ProducerQueueFull, DeliveryFailed) as full:
                    self._reject_rest(batch, rows, index, topic, key_of, full.message)
                    return
                except KafkaException as exc:
                    failure = exc
            assert isinstance(failure, KafkaException)
            if _is_fatal(failure) and attempts < 2:
                attempts += 1  # replace the client, then queue this event again
                self._replace(generation, kafka_reason(failure))
                continue
            reason = f"not queued: {kafka_reason(failure)}"
            batch._unsent(index, topic, key_of(rows[index]), reason)
            index += 1
        # A KeyboardInterrupt raised in here leaves the batch unsettled: the caller gets
        # the exception instead of the future, queued events still report one by one.

    def _count_queued(self, batch: BatchFuture, count: int) -> None:
        batch._queued += count
        with self._lock:
            self.stats.queued += count
        with self._gate:
            self._reserved -= count

    @staticmethod
    def _reject_rest(
        batch: BatchFuture,
        rows: list[dict[str, Any]],
        index: int,
        topic: str,
        key_of: Callable[[Mapping[str, Any]], str],
        reason: str,
    ) -> None:
        """Events index.. of a batch never reached the queue: each fails visibly (rejected)."""
        for left in range(index, batch.total):
            batch._unsent(left, topic, key_of(rows[left]), reason)

    def _admit(self, count: int) -> None:
        """Refuse, whole, a batch that does not fit in the local queue's free room."""
        # Our own count: len(client) also counts the client's pending callbacks and errors.
        # Events of batches admitted but not queued yet are taken too (caller holds _gate).
        with self._lock:
            waiting = max(self.stats.in_flight, 0) + self._reserved
        room = self.queue_size - waiting
        if count <= room:
            return
        with self._lock:
            self.stats.rejected += count
        too_big = count > self.queue_size
        raise ProducerQueueFull(
            f"a batch of {count:,} events does not fit in the producer's local queue "
            f"({room:,} of {self.queue_size:,} free, {waiting:,} events waiting for Kafka at "
            f"{self.brokers}); nothing of it was queued",
            hint="split the batch (it is larger than the whole queue)"
            if too_big
            else "is the broker reachable? raise events.producer_queue_size, or use "
            "events.producer_queue_full: block to wait for room",
        )

    async def publish_async(
        self, event_type: str | EventType, data: Any, **kwargs: Any
    ) -> Delivery:
        """Publish from asyncio code: queues without blocking, then awaits the delivery."""
        return await self.publish(event_type, data, **kwargs).wait_async()

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        partition: int | None,
        event_id: str | None,
        event_type: str | None,
        callback: DeliveryCallback | None,
        kept_headers: Headers | None,
    ) -> DeliveryFuture:
        """``kept_headers``: what a re-send could not rebuild from the event's id and type
        (the caller's extra headers, or a raw record's). Kept on the future, so as little
        as possible: 100,000 events in flight holding their header lists cost the
        garbage collector ~12% of the publish rate (measured)."""
        if self._closing:
            raise DeliveryFailed("the producer is closed")
        future = DeliveryFuture(self, event_id, event_type, callback)
        future._partition = partition
        future._headers = kept_headers
        target = _ANY_PARTITION if partition is None else partition
        for attempt in range(3):
            client, future._generation = self._current
            try:
                # Positional arguments: see _ANY_PARTITION.
                client.produce(topic, value, key, target, future, None, _NOW, headers)
                break
            except BufferError:
                kwargs: dict[str, Any] = {"key": key, "headers": headers, "on_delivery": future}
                if partition is not None:
                    kwargs["partition"] = partition
                try:
                    future._generation = self._wait_for_room(topic, value, kwargs)
                    break
                except (ProducerQueueFull, DeliveryFailed):  # no room in time / closing
                    with self._lock:
                        self.stats.rejected += 1
                    raise
                except KafkaException as exc:
                    failure = exc
            except KafkaException as exc:
                failure = exc
            if not _is_fatal(failure) or attempt == 2:
                # Invalid arguments, or a client that cannot be replaced: nothing queued.
                raise DeliveryFailed(
                    f"cannot queue an event for {topic}: {kafka_reason(failure)}"
                ) from failure
            self._replace(future._generation, kafka_reason(failure))
        with self._lock:
            self.stats.queued += 1
        return future

    def _wait_for_room(
        self,
        topic: str,
        value: bytes | None,
        kwargs: dict[str, Any],
        *,
        block: bool | None = None,
        until: float | None = None,
    ) -> int:
        """Queue one record once the local queue has room; the generation of the client
        that took it. ProducerQueueFull (not counted here) when there is none in time."""
        if block is None:
            block = self.queue_full == "block"
        if block:
            deadline = time.monotonic() + self.block_timeout if until is None else until
            while time.monotonic() < deadline and not self._closing:
                client, generation = self._current
                client.poll(0.05)
                try:
                    client.produce(topic, value, **kwargs)
                    return generation
                except BufferError:
                    continue
        if self._closing:
            raise DeliveryFailed("the producer closed while the event waited for queue room")
        with self._lock:
            waiting = self.stats.in_flight
        waited = f" after waiting {self.block_timeout:g}s" if block else ""
        raise ProducerQueueFull(
            f"the producer's local queue is full ({waiting} events waiting for Kafka at "
            f"{self.brokers}){waited}; this event was not queued",
            hint="is the broker reachable? raise events.producer_queue_size, or use "
            "events.producer_queue_full: block to wait for room",
        )

    # --- delivery reports ---------------------------------------------------

    def _serve(self) -> None:
        while not self._closed.is_set():
            client, generation = self._current
            try:
                if self._no_batch.is_set():
                    client.poll(_SERVE_INTERVAL)
                else:
                    # A batch serves its reports (see __init__).
                    self._no_batch.wait(_SERVE_INTERVAL)
            except KafkaException as exc:
                if _is_fatal(exc):
                    self._mark_failed(generation, kafka_reason(exc))
                else:
                    log.warning("producer poll: %s", kafka_reason(exc))
            except Exception:  # this thread must outlive any callback's bug
                log.exception("producer poll failed")
            if self._fatal is not None:
                self._rebuild(self._current[1])
            if self._again:
                self._send_again()
            if self._retired:
                self._serve_retired()

    def _rebuild(self, seen_generation: int) -> None:
        """Replace a fatally failed client; what it never stored is sent again."""
        with self._swap:
            old, generation = self._current
            if generation != seen_generation or self._closed.is_set():
                return  # another thread did it, or close() has drained everything
            reason = self._fatal or "fatal error"
            self._current = (self._new_client(generation + 1), generation + 1)
            self._fatal = None
        with self._lock:
            self.stats.rebuilds += 1
        text = (
            f"the Kafka producer failed fatally ({reason}); continuing with a new one and "
            "re-sending the events the broker did not store"
        )
        log.error("%s", text)
        self._tell(text)
        # Events the old client still holds come back as purged (never sent) and are
        # queued again by _report; in-flight ones report their own outcome.
        with contextlib.suppress(KafkaException):
            old.purge(in_queue=True, in_flight=False)
        deadline = time.monotonic() + 2.0
        while len(old) and time.monotonic() < deadline:
            with contextlib.suppress(KafkaException):
                old.poll(0.05)
        if len(old):
            # Still held (e.g. retried for ever against a broker that forgot the producer):
            # purged in-flight events are sent again through the new client.
            with contextlib.suppress(KafkaException):
                old.purge(in_queue=True, in_flight=True)
                old.poll(0.5)
        # A publisher that read the client just before the swap may still queue into the
        # old one: it stays served (and purged) for a while, so nothing waits there for ever.
        with self._swap:
            self._retired.append((old, time.monotonic()))
        self._send_again()

    def _serve_retired(self) -> None:
        with self._swap:
            retired = list(self._retired)
        now = time.monotonic()
        done = []
        for client, since in retired:
            with contextlib.suppress(KafkaException):
                if len(client):
                    client.purge(in_queue=True, in_flight=True)
                client.poll(0)
            if not len(client) and now - since >= _RETIRED_SECONDS:
                done.append(client)
        if done:
            with self._swap:
                self._retired = [(c, t) for c, t in self._retired if not any(c is d for d in done)]

    def _send_again(self) -> None:
        with self._swap:
            batch, self._again = self._again, []
        for pending, topic, value, key, headers in batch:
            if self._closed.is_set():  # close() has drained the clients: nothing would send it
                self._fail(pending, topic, key, "the producer closed before it was sent again")
                continue
            client, pending._generation = self._current
            kwargs: dict[str, Any] = {"key": key, "headers": headers, "on_delivery": pending}
            if pending._partition is not None:
                kwargs["partition"] = pending._partition
            try:
                try:
                    client.produce(topic, value, **kwargs)
                except BufferError:
                    pending._generation = self._wait_for_room(topic, value, kwargs)
            except (KafkaException, ProducerQueueFull, DeliveryFailed) as exc:
                self._fail(pending, topic, key, f"not sent again: {exc}")
                continue
            with self._lock:
                self.stats.resent += 1

    def _fail(
        self,
        pending: DeliveryFuture,
        topic: str,
        key: bytes | None,
        reason: str,
        *,
        rejected: bool = False,
    ) -> None:
        """An event that failed without a delivery report; ``rejected``: it never reached
        the local queue (counted in stats.rejected, not stats.failed)."""
        with self._lock:
            if rejected:
                self.stats.rejected += 1
            else:
                self.stats.failed += 1
        delivery = Delivery(
            topic, -1, -1, key.decode("utf-8", "replace") if key else None,
            pending.event_id, pending.type, reason, None,
        )  # fmt: skip
        log.error("delivery of %s %s to %s failed: %s", pending.type or "record",
                  pending.event_id or "", topic, reason)  # fmt: skip
        pending._finish(None, DeliveryFailed(f"{pending.type or 'record'} to {topic}: {reason}"))
        self._call_back(pending, delivery)

    def _call_back(self, pending: DeliveryFuture, delivery: Delivery) -> None:
        # The producer's callback first: a batch's own (last) settles the batch, which
        # must not resolve before every callback has seen its events.
        for callback in (self._on_delivery, pending._on_delivery):
            if callback is not None:
                try:
                    callback(delivery)
                except Exception:  # a caller's bug must not stop delivery reports
                    log.exception("delivery callback raised")

    def _report(self, pending: DeliveryFuture, err: KafkaError | None, msg: Message) -> None:
        if (
            err is not None
            and err.code() in _SEND_AGAIN
            and (self._fatal is not None or pending._generation != self._current[1])
            and not self._closed.is_set()
        ):
            # Delivery reports carry no headers: rebuilt from what the future kept.
            with self._swap:
                self._again.append(
                    (pending, msg.topic() or "", msg.value(), msg.key(), resend_headers(pending))
                )
            return
        if err is None:
            with self._lock:
                self.stats.delivered += 1
            delivery = _delivery_of(msg, pending.event_id, pending.type, None)
            pending._finish(delivery, None)
        else:
            with self._lock:
                self.stats.failed += 1
            delivery = _delivery_of(msg, pending.event_id, pending.type, err)
            log.error(
                "delivery of %s %s to %s failed: %s",
                pending.type or "record",
                pending.event_id or f"(key {delivery.key})",
                delivery.topic,
                delivery.error,
            )
            pending._finish(
                None,
                DeliveryFailed(
                    f"{pending.type or 'record'} {pending.event_id or ''} to {delivery.topic} "
                    f"not delivered: {delivery.error}",
                    code=delivery.error_code,
                    retriable=bool(err.retriable()),
                ),
            )
        self._call_back(pending, delivery)

    def _client_error(self, err: KafkaError, generation: int = 0) -> None:
        with self._lock:
            self.stats.errors += 1
        text = f"Kafka client error ({self.brokers}): {err.str()}"
        if not err.fatal():
            log.warning("%s", text)
        elif self._mark_failed(generation, err.str()):
            log.error("%s (fatal: the client will be replaced)", text)
        else:
            log.warning("%s (from a client already replaced)", text)
        self._tell(text)

    def _tell(self, text: str) -> None:
        if self._on_error is not None:
            try:
                self._on_error(text)
            except Exception:
                log.exception("error callback raised")

    # --- shutdown -----------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` seconds for queued events; return how many are still queued."""
        deadline = time.monotonic() + timeout
        while True:
            client = self._current[0]
            left = max(deadline - time.monotonic(), 0.0)
            remaining = int(client.flush(min(left, 0.5)))
            with self._swap:
                again = len(self._again)
                retired = sum(len(c) for c, _since in self._retired)
                settled = client is self._current[0] and self._fatal is None
            if (remaining == 0 and not again and not retired and settled) or (
                time.monotonic() >= deadline
            ):
                return remaining + again + retired

    def close(self, timeout: float = 10.0) -> int:
        """Flush, then fail (and report) whatever is still queued; return that count.

        Publishing stops first: a batch under way stops queueing at its next chunk and
        reports the rest as failed; close() waits for it before flushing.
        """
        deadline = time.monotonic() + timeout
        with self._gate:
            if self._closing:
                return 0
            self._closing = True
            # Batches notice at their next chunk (or while waiting for room): not long,
            # whatever the timeout; what they queue must be in the flush below.
            patience = time.monotonic() + max(timeout, _CLOSE_PATIENCE)
            while self._publishing and time.monotonic() < patience:
                self._gate.wait(0.1)
        remaining = self.flush(max(deadline - time.monotonic(), 0.0))
        if remaining:
            log.error(
                "%d events still queued for %s after %gs; reporting them as failed",
                remaining,
                self.brokers,
                timeout,
            )
            self._drain(self._current[0])
        self._closed.set()
        self._thread.join(timeout=_CLOSE_PATIENCE)
        if self._thread.is_alive():
            log.warning("the producer's delivery thread is still busy (a callback blocks?)")
        # What is left anywhere now (a publish that passed its check just before close,
        # clients replaced meanwhile) is purged: each purge report fails its event.
        with self._swap:
            clients = [self._current[0], *(c for c, _since in self._retired)]
            self._retired = []
        for client in clients:
            if len(client):
                self._drain(client)
        # Events waiting to be sent again (after a fatal error) were never queued anew:
        # their futures must not wait for ever.
        with self._swap:
            left, self._again = self._again, []
        for pending, topic, _value, key, _headers in left:
            self._fail(pending, topic, key, "the producer closed before it was sent again")
        return remaining

    @staticmethod
    def _drain(client: Producer) -> None:
        with contextlib.suppress(KafkaException):
            client.purge()
            client.flush(1.0)  # serves the purge reports

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def resend_headers(pending: DeliveryFuture) -> Headers | None:
    """The headers of a record to send again: an event's are rebuilt from its id and
    type, plus whatever else the future kept (see EventProducer._produce)."""
    if pending.event_id is not None and pending.type is not None:
        return [*event_headers(pending.type, pending.event_id), *(pending._headers or ())]
    return pending._headers


def _is_fatal(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (error.fatal() or error.code() == KafkaError._FATAL)
