"""EventProducer: the facade that validates, encodes, queues, serves reports and closes.

The parts it is built of: ``futures`` (what publishing returns), ``reports`` (report
dispatch: counters, log, callbacks), ``clients`` (the librdkafka client and its
replacement), ``admission`` (queue room and batches under way) and the batch
encoder beside the envelope code (``devctl.events._batch_encode``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException, Producer

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import fetch_metadata, kafka_reason, producer_conf
from devctl.config.loader import Settings
from devctl.errors import KafkaUnavailable, UsageError
from devctl.events._batch_encode import ANY_PARTITION, STAMP_ON_SEND, BatchRecords
from devctl.events._batches import Headers
from devctl.events.envelope import EncodedEvent, encode_event
from devctl.events.errors import DeliveryFailed, ProducerQueueFull
from devctl.events.ids import uuid7_block
from devctl.events.producer.admission import Admission
from devctl.events.producer.clients import Clients, is_fatal
from devctl.events.producer.futures import (
    BatchFuture,
    Delivery,
    DeliveryCallback,
    DeliveryFuture,
    ErrorCallback,
    ProducerStats,
)
from devctl.events.producer.reports import Reports
from devctl.events.registry import REGISTRY, EventType

if TYPE_CHECKING:
    from confluent_kafka.admin import ClusterMetadata

log = logging.getLogger("devctl.events.producer")

QUEUE_FULL_POLICIES = ("error", "block")

# The delivery thread's longest wait. close() waits for the thread, which notices only
# when its poll returns: 50 ms added that much to every close() (a one-event `devctl
# publish` included). A poll returns at once when reports arrive; an idle one costs
# a few microseconds.
_SERVE_INTERVAL = 0.01

# How long close() waits at most for batches to stop and for its delivery thread.
_CLOSE_PATIENCE = 30.0

# A batch is handed to the client in chunks; each chunk re-reads the current client,
# so a batch under way when the client is replaced moves to the new one.
_CHUNK = 512


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
        self.brokers = endpoints.kafka_brokers
        self._endpoints = endpoints
        self._max_record_bytes = int(conf.get("message.max.bytes", 1_000_000))
        self._reports = Reports(on_delivery, on_error)
        self.stats: ProducerStats = self._reports.stats
        self._clients = Clients(conf, self._reports, self.brokers)
        self._reports.take_back = self._clients.take_back
        self._admission = Admission(self._reports, self.queue_size, self.brokers)
        self._thread = threading.Thread(
            target=self._serve, name="devctl-producer-deliveries", daemon=True
        )
        self._thread.start()

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
        client = self._clients.current[0]
        metadata, _ms = fetch_metadata(client, self._endpoints, timeout)
        if not self._clients.watch_log:
            return metadata  # not idempotent, or the caller's logger: nothing to watch
        pause = 0.002
        while not self._clients.has_id.wait(pause):
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
        return self._max_record_bytes

    @property
    def batches_under_way(self) -> int:
        """How many ``publish_batch`` calls are queueing events right now."""
        return self._admission.publishing

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
        """Queue a record as-is (no envelope, no validation): raw publishing and dead letters."""
        return self._produce(
            topic, value, key, headers, partition, None, None, on_delivery, headers
        )

    async def publish_async(
        self, event_type: str | EventType, data: Any, **kwargs: Any
    ) -> Delivery:
        """Publish from asyncio code: queues without blocking, then awaits the delivery."""
        return await self.publish(event_type, data, **kwargs).wait_async()

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
        self._admission.begin_batch(count, refuse_if_full=self.queue_full == "error")
        batch: BatchFuture | None = None
        try:
            prefix, first, ms = uuid7_block(count)
            batch = BatchFuture(
                self._reports,
                spec.name,
                count,
                (prefix, first),
                on_delivery,
                extra,
                self._clients.generation,
            )
            if count:
                records = BatchRecords(spec, self.source, ms, (prefix, first), rows, extra)
                self._queue_batch(batch, records, topic or spec.topic)
            return batch
        finally:
            self._admission.end_batch(count - (batch.queued if batch is not None else 0))

    def _queue_batch(self, batch: BatchFuture, records: BatchRecords, topic: str) -> None:
        count = batch.total
        report = batch.delivery_report()
        index = attempts = 0
        room_until: float | None = None  # one wait for room per batch, not per event
        while index < count:
            if self._admission.closing:
                self._reject_rest(batch, records, index, topic, "the producer closed first")
                return
            client, generation = self._clients.current
            batch.sent_to(index, generation)
            start, high = index, min(index + _CHUNK, count)
            try:
                records.produce(client.produce, topic, report, start, high)
            except (BufferError, KafkaException) as exc:
                index = records.position
                self._count_queued(batch, index - start)
                failure: BaseException = exc
            else:
                self._count_queued(batch, high - start)  # before a report can count it
                index, attempts = high, 0
                try:
                    client.poll(0)  # the reports that are ready, in this thread
                except KafkaException as exc:
                    if is_fatal(exc):
                        self._clients.mark_failed(generation, kafka_reason(exc))
                continue
            if isinstance(failure, BufferError):
                room_until = room_until or time.monotonic() + self.block_timeout
                value, key, record_headers = records.record(index)
                kwargs = {"key": key, "headers": record_headers, "on_delivery": report}
                try:
                    waited_on = self._wait_for_room(
                        topic, value, kwargs, block=True, until=room_until
                    )
                    self._count_queued(batch, 1)
                    batch.sent_to(index, waited_on)  # maybe a new client
                    index += 1
                    continue
                except (ProducerQueueFull, DeliveryFailed) as full:
                    self._reject_rest(batch, records, index, topic, full.message)
                    return
                except KafkaException as exc:
                    failure = exc
            assert isinstance(failure, KafkaException)
            if is_fatal(failure) and attempts < 2:
                attempts += 1  # replace the client, then queue this event again
                self._replace(generation, kafka_reason(failure))
                continue
            batch.unsent(index, topic, records.key(index), f"not queued: {kafka_reason(failure)}")
            index += 1
        # A KeyboardInterrupt raised in here leaves the batch unsettled: the caller gets
        # the exception instead of the future, queued events still report one by one.

    def _count_queued(self, batch: BatchFuture, count: int) -> None:
        batch.queued += count
        with self._reports.lock:
            self.stats.queued += count
        self._admission.queued(count)

    @staticmethod
    def _reject_rest(
        batch: BatchFuture, records: BatchRecords, index: int, topic: str, reason: str
    ) -> None:
        """Events index.. of a batch never reached the queue: each fails visibly (rejected)."""
        for left in range(index, batch.total):
            batch.unsent(left, topic, records.key(left), reason)

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
        if self._admission.closing:
            raise DeliveryFailed("the producer is closed")
        future = DeliveryFuture(self._reports, event_id, event_type, callback)
        future.partition = partition
        future.kept_headers = kept_headers
        target = ANY_PARTITION if partition is None else partition
        for attempt in range(3):
            client, future.generation = self._clients.current
            try:
                # Positional arguments: see devctl.events._batch_encode.ANY_PARTITION.
                client.produce(topic, value, key, target, future, None, STAMP_ON_SEND, headers)
                break
            except BufferError:
                kwargs: dict[str, Any] = {"key": key, "headers": headers, "on_delivery": future}
                if partition is not None:
                    kwargs["partition"] = partition
                try:
                    future.generation = self._wait_for_room(topic, value, kwargs)
                    break
                except (ProducerQueueFull, DeliveryFailed):  # no room in time / closing
                    with self._reports.lock:
                        self.stats.rejected += 1
                    raise
                except KafkaException as exc:
                    failure = exc
            except KafkaException as exc:
                failure = exc
            if not is_fatal(failure) or attempt == 2:
                # Invalid arguments, or a client that cannot be replaced: nothing queued.
                raise DeliveryFailed(
                    f"cannot queue an event for {topic}: {kafka_reason(failure)}"
                ) from failure
            self._replace(future.generation, kafka_reason(failure))
        with self._reports.lock:
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
            while time.monotonic() < deadline and not self._admission.closing:
                client, generation = self._clients.current
                client.poll(0.05)
                try:
                    client.produce(topic, value, **kwargs)
                    return generation
                except BufferError:
                    continue
        if self._admission.closing:
            raise DeliveryFailed("the producer closed while the event waited for queue room")
        with self._reports.lock:
            waiting = self.stats.in_flight
        waited = f" after waiting {self.block_timeout:g}s" if block else ""
        raise ProducerQueueFull(
            f"the producer's local queue is full ({waiting} events waiting for Kafka at "
            f"{self.brokers}){waited}; this event was not queued",
            hint="is the broker reachable? raise events.producer_queue_size, or use "
            "events.producer_queue_full: block to wait for room",
        )

    # --- delivery reports and client replacement ------------------------------

    def _serve(self) -> None:
        clients = self._clients
        while not clients.closed.is_set():
            client, generation = clients.current
            try:
                if self._admission.no_batch.is_set():
                    client.poll(_SERVE_INTERVAL)
                else:
                    # A batch serves its reports (see Admission.no_batch).
                    self._admission.no_batch.wait(_SERVE_INTERVAL)
            except KafkaException as exc:
                if is_fatal(exc):
                    clients.mark_failed(generation, kafka_reason(exc))
                else:
                    log.warning("producer poll: %s", kafka_reason(exc))
            except Exception:  # this thread must outlive any callback's bug
                log.exception("producer poll failed")
            if clients.failed and clients.rebuild(clients.generation()):
                self._send_again()
            if clients.has_work:
                self._send_again()
                clients.serve_retired()

    def _replace(self, generation: int, reason: str) -> None:
        """A fatal error from the client of ``generation``: replace it (once)."""
        self._clients.mark_failed(generation, reason)
        if self._clients.rebuild(generation):
            self._send_again()

    def _send_again(self) -> None:
        clients = self._clients
        for pending, topic, value, key, headers in clients.take_again():
            if clients.closed.is_set():  # close() has drained the clients: nothing would send it
                self._reports.fail(
                    pending, topic, key, "the producer closed before it was sent again"
                )
                continue
            client, pending.generation = clients.current
            kwargs: dict[str, Any] = {"key": key, "headers": headers, "on_delivery": pending}
            if pending.partition is not None:
                kwargs["partition"] = pending.partition
            try:
                try:
                    client.produce(topic, value, **kwargs)
                except BufferError:
                    pending.generation = self._wait_for_room(topic, value, kwargs)
            except (KafkaException, ProducerQueueFull, DeliveryFailed) as exc:
                self._reports.fail(pending, topic, key, f"not sent again: {exc}")
                continue
            with self._reports.lock:
                self.stats.resent += 1

    # --- shutdown -----------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` seconds for queued events; return how many are still queued."""
        deadline = time.monotonic() + timeout
        while True:
            client = self._clients.current[0]
            left = max(deadline - time.monotonic(), 0.0)
            remaining = int(client.flush(min(left, 0.5)))
            waiting, settled = self._clients.backlog(client)
            if (remaining == 0 and not waiting and settled) or time.monotonic() >= deadline:
                return remaining + waiting

    def close(self, timeout: float = 10.0) -> int:
        """Flush, then fail (and report) whatever is still queued; return that count.

        Publishing stops first: a batch under way stops queueing at its next chunk and
        reports the rest as failed; close() waits for it before flushing.
        """
        deadline = time.monotonic() + timeout
        if not self._admission.close(max(timeout, _CLOSE_PATIENCE)):
            return 0
        remaining = self.flush(max(deadline - time.monotonic(), 0.0))
        if remaining:
            log.error(
                "%d events still queued for %s after %gs; reporting them as failed",
                remaining,
                self.brokers,
                timeout,
            )
            self._drain(self._clients.current[0])
        self._clients.closed.set()
        self._thread.join(timeout=_CLOSE_PATIENCE)
        if self._thread.is_alive():
            log.warning("the producer's delivery thread is still busy (a callback blocks?)")
        # What is left anywhere now (a publish that passed its check just before close,
        # clients replaced meanwhile) is purged: each purge report fails its event.
        for client in self._clients.retire_all():
            if len(client):
                self._drain(client)
        # Events waiting to be sent again (after a fatal error) were never queued anew:
        # their futures must not wait for ever.
        for pending, topic, _value, key, _headers in self._clients.take_again():
            self._reports.fail(pending, topic, key, "the producer closed before it was sent again")
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
