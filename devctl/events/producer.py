"""The event producer: idempotent, acks=all, never blocking the caller on the network.

``publish`` validates and encodes the event, hands it to librdkafka's local
queue and returns at once with a ``DeliveryFuture`` that resolves to a
``Delivery`` (or raises ``DeliveryFailed``) when the broker answers. A background
thread serves delivery reports, so futures resolve without the caller polling;
``publish_async`` (or ``await future.wait_async()``) awaits it from asyncio code.

The local queue is bounded (``events.producer_queue_size``). When it is full the
policy ``events.producer_queue_full`` applies: ``error`` (default) raises
``ProducerQueueFull`` at once and nothing is queued; ``block`` waits up to
``events.producer_block_timeout`` seconds for room, then raises.

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
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import kafka_reason, producer_conf
from devctl.config.loader import Settings
from devctl.errors import UsageError
from devctl.events._batches import Headers
from devctl.events.envelope import EncodedEvent, encode_event
from devctl.events.errors import DeliveryFailed, ProducerQueueFull
from devctl.events.registry import EventType

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

    def __init__(self, owner: EventProducer):
        self._owner = owner
        self._lines = 0
        self._since = 0.0
        self._delivered = -1

    def log(self, level: int, fmt: str, *args: Any) -> None:
        # confluent-kafka calls log(python_level, "%s [%s] %s", facility, name, text).
        if args and args[0] == "UNKPID":
            self._unknown_producer_id()
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
            owner._fatal = owner._fatal or (
                "the broker keeps refusing the producer id (UNKNOWN_PRODUCER_ID) and "
                "librdkafka does not recover"
            )


_UNSET: Any = object()
_future_lock = threading.Lock()


class DeliveryFuture:
    """The outcome of one publish: ``result(timeout)``, ``add_done_callback``, ``wait_async``.

    A lean future: concurrent.futures.Future builds a Condition per instance, which
    cost more than the whole publish path; this one makes a waiter only when a
    caller actually waits.
    """

    __slots__ = (
        "_callbacks",
        "_exception",
        "_generation",
        "_on_delivery",
        "_owner",
        "_partition",
        "_result",
        "_waiter",
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
        self._result: Any = _UNSET
        self._exception: BaseException | None = None
        self._waiter: threading.Event | None = None
        self._callbacks: list[Callable[[DeliveryFuture], None]] | None = None
        self._owner = owner
        self._on_delivery = on_delivery
        self._generation = 0  # which client of the producer queued it
        self._partition: int | None = None
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
        self,
        waiter: threading.Event | None,
        callbacks: list[Callable[[DeliveryFuture], None]] | None,
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

    def result(self, timeout: float | None = None) -> Delivery:
        """The Delivery; raises DeliveryFailed if the broker refused, TimeoutError on timeout."""
        self._wait(timeout)
        if self._exception is not None:
            raise self._exception
        return self._delivery()

    def _delivery(self) -> Delivery:
        # Delivery reports store the librdkafka message; it becomes a Delivery on demand.
        result = self._result
        if not isinstance(result, Delivery):
            result = self._result = _delivery_of(result, self.event_id, self.type, None)
        return result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._exception

    def add_done_callback(self, callback: Callable[[DeliveryFuture], None]) -> None:
        """Call ``callback(future)`` when done (at once, in this thread, if already done)."""
        with _future_lock:
            if not self.done():
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback(self)

    async def wait_async(self) -> Delivery:
        """Await the delivery from asyncio code without blocking the event loop."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Delivery] = loop.create_future()

        def relay(done: DeliveryFuture) -> None:
            loop.call_soon_threadsafe(_settle, waiter, done)

        self.add_done_callback(relay)
        return await waiter


def _settle(waiter: asyncio.Future[Delivery], done: DeliveryFuture) -> None:
    if waiter.cancelled():
        return
    if done._exception is not None:
        waiter.set_exception(done._exception)
    else:
        waiter.set_result(done._delivery())


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
                "error_cb": self._client_error,
            },
        )
        conf.update(overrides)
        if conf.get("enable.idempotence") and "logger" not in conf:
            debug = str(conf.get("debug") or "")
            conf["debug"] = f"{debug},eos" if debug else "eos"
            conf["logger"] = _LibrdkafkaLog(self)
        self.brokers = endpoints.kafka_brokers
        self._conf = conf
        self._producer = Producer(conf)
        self._swap = threading.Lock()
        self._generation = 0
        self._fatal: str | None = None
        self._again: list[tuple[DeliveryFuture, str, bytes | None, bytes | None, Any]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name="devctl-producer-deliveries", daemon=True
        )
        self._thread.start()

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
        return self._produce(topic, value, key, headers, partition, None, None, on_delivery)

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
    ) -> DeliveryFuture:
        if self._closed.is_set():
            raise DeliveryFailed("the producer is closed")
        future = DeliveryFuture(self, event_id, event_type, callback)
        future._partition = partition
        for _attempt in range(2):
            future._generation = generation = self._generation
            try:
                if partition is None:
                    self._producer.produce(topic, value, key, headers=headers, on_delivery=future)
                else:
                    self._producer.produce(
                        topic, value, key, partition, headers=headers, on_delivery=future
                    )
                break
            except BufferError:
                kwargs: dict[str, Any] = {"key": key, "headers": headers, "on_delivery": future}
                if partition is not None:
                    kwargs["partition"] = partition
                self._wait_for_room(topic, value, kwargs)
                break
            except KafkaException as exc:
                if not _is_fatal(exc) or _attempt:
                    # Invalid arguments, or a client that cannot be replaced: nothing queued.
                    raise DeliveryFailed(
                        f"cannot queue an event for {topic}: {kafka_reason(exc)}"
                    ) from exc
                self._fatal = self._fatal or kafka_reason(exc)
                self._rebuild(generation)
        with self._lock:
            self.stats.queued += 1
        return future

    def _wait_for_room(self, topic: str, value: bytes | None, kwargs: dict[str, Any]) -> None:
        if self.queue_full == "block":
            deadline = time.monotonic() + self.block_timeout
            while time.monotonic() < deadline:
                self._producer.poll(0.05)
                try:
                    self._producer.produce(topic, value, **kwargs)
                    return
                except BufferError:
                    continue
        with self._lock:
            self.stats.rejected += 1
            waiting = self.stats.in_flight
        waited = f" after waiting {self.block_timeout:g}s" if self.queue_full == "block" else ""
        raise ProducerQueueFull(
            f"the producer's local queue is full ({waiting} events waiting for Kafka at "
            f"{self.brokers}){waited}; this event was not queued",
            hint="is the broker reachable? raise events.producer_queue_size, or use "
            "events.producer_queue_full: block to wait for room",
        )

    # --- delivery reports ---------------------------------------------------

    def _serve(self) -> None:
        # A short wait keeps close() quick; an idle poll costs next to nothing.
        while not self._closed.is_set():
            try:
                self._producer.poll(0.05)
            except KafkaException as exc:
                if _is_fatal(exc):
                    self._fatal = self._fatal or kafka_reason(exc)
                else:
                    log.warning("producer poll: %s", kafka_reason(exc))
            except Exception:  # this thread must outlive any callback's bug
                log.exception("producer poll failed")
            if self._fatal is not None:
                self._rebuild(self._generation)
            if self._again:
                self._send_again()

    def _rebuild(self, seen_generation: int) -> None:
        """Replace a fatally failed client; what it never stored is sent again."""
        with self._swap:
            if self._generation != seen_generation:
                return  # another thread did it
            old = self._producer
            reason = self._fatal or "fatal error"
            self._producer = Producer(self._conf)
            self._generation += 1
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
        self._send_again()

    def _send_again(self) -> None:
        with self._swap:
            batch, self._again = self._again, []
        for pending, topic, value, key, headers in batch:
            pending._generation = self._generation
            kwargs: dict[str, Any] = {"key": key, "headers": headers, "on_delivery": pending}
            if pending._partition is not None:
                kwargs["partition"] = pending._partition
            try:
                try:
                    self._producer.produce(topic, value, **kwargs)
                except BufferError:
                    self._wait_for_room(topic, value, kwargs)
            except (KafkaException, ProducerQueueFull) as exc:
                self._fail(pending, topic, key, f"not sent again: {exc}")
                continue
            with self._lock:
                self.stats.resent += 1

    def _fail(self, pending: DeliveryFuture, topic: str, key: bytes | None, reason: str) -> None:
        with self._lock:
            self.stats.failed += 1
        delivery = Delivery(
            topic, -1, -1, key.decode("utf-8", "replace") if key else None,
            pending.event_id, pending.type, reason, None,
        )  # fmt: skip
        log.error("delivery of %s %s to %s failed: %s", pending.type or "record",
                  pending.event_id or "", topic, reason)  # fmt: skip
        pending._finish(None, DeliveryFailed(f"{pending.type or 'record'} to {topic}: {reason}"))
        for callback in (pending._on_delivery, self._on_delivery):
            if callback is not None:
                try:
                    callback(delivery)
                except Exception:
                    log.exception("delivery callback raised")

    def _report(self, pending: DeliveryFuture, err: KafkaError | None, msg: Message) -> None:
        if (
            err is not None
            and err.code() in _SEND_AGAIN
            and (self._fatal is not None or pending._generation != self._generation)
            and not self._closed.is_set()
        ):
            with self._swap:
                self._again.append(
                    (pending, msg.topic() or "", msg.value(), msg.key(), msg.headers())
                )
            return
        callbacks = (pending._on_delivery, self._on_delivery)
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
        for callback in callbacks:
            if callback is not None:
                try:
                    callback(delivery)
                except Exception:  # a caller's bug must not stop delivery reports
                    log.exception("delivery callback raised")

    def _client_error(self, err: KafkaError) -> None:
        with self._lock:
            self.stats.errors += 1
        text = f"Kafka client error ({self.brokers}): {err.str()}"
        if err.fatal():
            self._fatal = err.str()
            log.error("%s (fatal: the client will be replaced)", text)
        else:
            log.warning("%s", text)
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
            client = self._producer
            left = max(deadline - time.monotonic(), 0.0)
            remaining = int(client.flush(min(left, 0.5)))
            settled = client is self._producer and not self._again and self._fatal is None
            if (remaining == 0 and settled) or time.monotonic() >= deadline:
                return remaining + len(self._again)

    def close(self, timeout: float = 10.0) -> int:
        """Flush, then fail (and report) whatever is still queued; return that count."""
        if self._closed.is_set():
            return 0
        remaining = self.flush(timeout)
        if remaining:
            log.error(
                "%d events still queued for %s after %gs; reporting them as failed",
                remaining,
                self.brokers,
                timeout,
            )
            self._producer.purge()
            self._producer.flush(1.0)  # serves the purge reports
        self._closed.set()
        self._thread.join(timeout=1.0)
        # Events waiting to be sent again (after a fatal error) were never queued anew:
        # their futures must not wait for ever.
        with self._swap:
            left, self._again = self._again, []
        for pending, topic, _value, key, _headers in left:
            self._fail(pending, topic, key, "the producer closed before it was sent again")
        return remaining

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _is_fatal(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (error.fatal() or error.code() == KafkaError._FATAL)
