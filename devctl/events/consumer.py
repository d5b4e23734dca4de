"""The consumer runtime: subscribe, decode and validate, dispatch by type, commit after success.

Semantics (docs/events.md has the long form):

- **At-least-once.** Offsets are committed only after every record before them in
  the partition was handled, skipped, or written to the dead-letter topic.
- **Idempotency guard.** Per consumer group and event id, a Redis marker (key from
  ``KeySchema.idempotency``, TTL ``events.idempotency_ttl``) says the event was
  handled; a redelivered event with a marker is skipped (counted as a duplicate),
  and so is a repeat of an event id within one poll. When markers appear while a
  batch handler runs (another consumer after a rebalance), only the marked events
  are duplicates: the handler runs again on the rest.
  Redis commands a handler queues on ``ctx.tx`` run in one MULTI/EXEC with the
  marker, under WATCH: such effects happen exactly once, even across a crash or
  two consumers racing after a rebalance. Other effects (HTTP calls, ...) are
  at-least-once: a crash between the effect and the marker repeats them.
- **Retries.** A handler that raises is retried with exponential backoff
  (``events.consumer_backoff_ms`` doubling up to ``..._backoff_max_ms``) up to
  ``events.consumer_max_retries`` times; ``PermanentError`` skips the retries.
- **Dead letters.** A record that is not a valid event, has an unknown type, fails
  its schema, or exhausts its retries is copied (key, value and headers
  unchanged) to the topic's dead-letter topic with ``dlq-*`` headers saying why,
  and the consumer moves on. A failing batch is retried one event at a time
  first, so only the poisonous events are dead-lettered.
- **Stalls.** When the runtime's own infrastructure fails (Redis for the guard,
  the dead-letter write), it neither dead-letters nor commits: it seeks back and
  tries again after a backoff, until the failure clears or it is stopped. Redis
  refusing writes (OOM, read-only, loading) is such a failure, not a handler error.
  With ``stall_limit`` (seconds), a stall lasting longer than that ends ``run()``
  with ``RedisUnavailable`` or ``KafkaUnavailable`` naming the cause, for callers
  (checks, one-off jobs) that must not wait for ever.
- **Check records** (header ``devctl-check``) are skipped and committed past.
- **Shutdown.** SIGTERM/SIGINT finish the in-flight batch, commit, and leave the
  group; a record waiting for a retry is left for the next run. A second signal
  stops at once (nothing more is committed).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import redis
from confluent_kafka import OFFSET_STORED, Consumer, KafkaException, Message, TopicPartition

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import consumer_conf, kafka_reason
from devctl.config.loader import Settings
from devctl.errors import KafkaUnavailable, RedisUnavailable, UsageError
from devctl.events._batches import (
    close_consumer,
    coordinates,
    headers_of,
    join_timeout,
    next_batch,
)
from devctl.events.envelope import Event, event_of, iso_millis
from devctl.events.errors import PermanentError
from devctl.events.markers import CHECK_HEADER  # records of `devctl test`: skipped
from devctl.events.producer import EventProducer
from devctl.events.reading import read_record
from devctl.streams.offsets import Partition, end_offsets, offsets_consumer

log = logging.getLogger("devctl.events.consumer")


# Dead-letter headers (all values UTF-8 text).
DLQ_REASON = "dlq-reason"
DLQ_ERROR = "dlq-error"
DLQ_ERROR_TYPE = "dlq-error-type"
DLQ_TOPIC = "dlq-topic"
DLQ_PARTITION = "dlq-partition"
DLQ_OFFSET = "dlq-offset"
DLQ_GROUP = "dlq-group"
DLQ_ATTEMPTS = "dlq-attempts"
DLQ_TIME = "dlq-time"
DLQ_REASONS = (
    "invalid-envelope",  # not JSON, or not a CloudEvents 1.0 event (or undecodable at all)
    "unknown-type",  # a type the registry does not know (or an unknown legacy name)
    "invalid-data",  # data fails the type's schema (or names another schema version)
    "wrong-topic",  # a registered type on another registered type's topic
    "handler-rejected",  # the handler raised PermanentError
    "retries-exhausted",  # the handler kept failing
)

ANY_TYPE = "*"

# The dlq-error-type header of records the reader could not take (as before: error class names).
_ERROR_TYPES = {
    "invalid-envelope": "InvalidEvent",
    "unknown-type": "UnknownEventType",
    "invalid-data": "InvalidEventData",
    "wrong-topic": "WrongTopic",
}


def dead_letter_topic(settings: Settings, topic: str) -> str:
    """The configured dead-letter topic of ``topic`` (``<topic><suffix>`` by default)."""
    for spec in settings.topics:
        if spec.dead_letter_of == topic:
            return spec.name
    return topic + settings.topic_defaults.dead_letter_suffix


@dataclass
class Counters:
    processed: int = 0  # events whose handler succeeded
    retried: int = 0  # handler attempts that were retried
    dead_lettered: int = 0
    duplicates: int = 0  # redelivered events skipped by the idempotency guard
    ignored: int = 0  # valid events of a type with no handler
    skipped: int = 0  # check records (devctl-check header)
    stalls: int = 0  # infrastructure failures that paused the runtime
    failed_commits: int = 0
    batches: int = 0
    lag: int | None = None  # records behind the true end, over assigned partitions
    lag_by_partition: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class HandlerContext:
    """What a handler gets besides its event(s).

    ``tx`` is a Redis MULTI pipeline: commands queued on it run atomically with the
    idempotency marker after the handler returns (exactly-once Redis effects).
    """

    def __init__(
        self,
        runtime: ConsumerRuntime,
        records: list[_Record],
        attempt: int,
    ):
        self.group = runtime.group
        self.attempt = attempt
        self.records = [(r.topic, r.partition, r.offset) for r in records]
        self.redis = runtime.redis
        self._runtime = runtime
        self._markers = (
            [runtime._marker(r.event.id) for r in records if r.event is not None]
            if runtime.idempotency
            else []
        )
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
                    raise _Duplicate(marked)
            pipe.multi()
            self._tx = pipe
        return self._tx


Handler = Callable[..., Any]


@dataclass
class _Route:
    func: Handler
    batch: bool
    wants_ctx: bool


@dataclass(slots=True)
class _Record:
    msg: Message
    topic: str
    partition: int
    offset: int
    event: Event | None = None
    action: str = "handle"  # handle | ignore | skip | dead
    reason: str = ""
    error: str = ""
    error_type: str = ""


class _Duplicate(Exception):
    """Raised inside ctx.tx when another consumer marked events of the unit meanwhile.

    ``markers`` are the marked ones (empty: the WATCH fired but no marker is set now).
    """

    def __init__(self, markers: set[str]):
        super().__init__(f"{len(markers)} event(s) handled elsewhere")
        self.markers = markers


class _Stall(Exception):
    """The runtime's own infrastructure failed: do not commit, seek back, retry later.

    ``server`` is the one that failed: "redis" (the guard, markers) or "kafka" (dead letters).
    """

    def __init__(self, message: str, server: str = "redis"):
        super().__init__(message)
        self.server = server


class _Abandon(Exception):
    """Stopping while a record waits for a retry: leave it for the next run."""


class ConsumerRuntime:
    """Consume DevConnect events with handlers registered per type.

    ``partitions`` pins the consumer to fixed partitions (no group join; offsets are
    still committed to the group), for single-instance workers and quick checks.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        settings: Settings,
        *,
        group: str,
        topics: Sequence[str] = (),
        partitions: Sequence[Partition] | None = None,
        redis_client: redis.Redis | None = None,
        idempotency: bool = True,
        keys: Any = None,
        batch_size: int | None = None,
        max_retries: int | None = None,
        backoff_ms: int | None = None,
        backoff_max_ms: int | None = None,
        idempotency_ttl: int | None = None,
        skip_check_records: bool = True,
        poll_timeout: float = 0.5,
        lag_interval: float = 5.0,
        producer: EventProducer | None = None,
        stall_limit: float | None = None,
        **overrides: Any,
    ):
        events = settings.events
        if not topics and not partitions:
            raise UsageError("a consumer needs topics (or partitions) to read")
        self.endpoints = endpoints
        self.settings = settings
        self.group = group
        self.topics = list(dict.fromkeys(list(topics) + [t for t, _ in partitions or ()]))
        self.partitions = list(partitions) if partitions is not None else None
        self.batch_size = batch_size or events.consumer_batch_size
        self.max_retries = events.consumer_max_retries if max_retries is None else max_retries
        self.backoff_ms = events.consumer_backoff_ms if backoff_ms is None else backoff_ms
        self.backoff_max_ms = (
            events.consumer_backoff_max_ms if backoff_max_ms is None else backoff_max_ms
        )
        self.ttl = idempotency_ttl or events.idempotency_ttl
        self.skip_check_records = skip_check_records
        self.poll_timeout = poll_timeout
        self.lag_interval = lag_interval
        self.idempotency = idempotency
        # None: stall (and retry) until the failure clears or the runtime is stopped.
        self.stall_limit = stall_limit
        self._stalled_since: float | None = None
        self.counters = Counters()
        self._overrides = overrides
        self._routes: dict[str, _Route] = {}
        self._stop = threading.Event()
        self._force = False
        self._consumer: Consumer | None = None
        self._assigned_at: float | None = None  # when the first assignment came
        self._join_timeout = 0.0
        # Dead letters go through this producer (made on first use unless given).
        self._producer = producer
        self._own_producer = producer is None
        self._lag_consumer: Consumer | None = None
        self._own_redis = False
        if idempotency and redis_client is None:
            from devctl.clients.redis_client import make_redis

            redis_client = make_redis(endpoints, settings)
            self._own_redis = True
        self.redis = redis_client
        if keys is None:
            from devctl.state.keys import KeySchema

            keys = KeySchema(settings.redis.key_prefix)
        self.keys = keys

    # --- registration -------------------------------------------------------

    def on(self, event_type: str, func: Handler, *, batch: bool = False) -> None:
        """Route ``event_type`` ('*' for any type without its own handler) to ``func``.

        ``func(event)`` or ``func(event, ctx)``; batch handlers get a list of events.
        """
        if event_type != ANY_TYPE:
            from devctl.events.registry import REGISTRY

            REGISTRY[event_type]  # UnknownEventType for a typo
        if event_type in self._routes:
            raise UsageError(f"{event_type} already has a handler")
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        self._routes[event_type] = _Route(func, batch, len(params) >= 2)

    def handler(self, *event_types: str) -> Callable[[Handler], Handler]:
        def decorate(func: Handler) -> Handler:
            for name in event_types:
                self.on(name, func)
            return func

        return decorate

    def batch_handler(self, *event_types: str) -> Callable[[Handler], Handler]:
        def decorate(func: Handler) -> Handler:
            for name in event_types:
                self.on(name, func, batch=True)
            return func

        return decorate

    # --- life cycle ---------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the in-flight batch, commit and leave (thread-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, install_signals: bool = True, until_idle: float | None = None) -> Counters:
        """Consume until stopped (signal, ``stop()``, or ``until_idle`` seconds without records)."""
        if not self._routes:
            raise UsageError("register at least one handler before run()")
        restore = self._install_signals() if install_signals else None
        self._consumer = self._open()
        last_record = time.monotonic()
        last_lag = 0.0
        try:
            while not self._stop.is_set():
                messages = next_batch(self._consumer, self.batch_size, self.poll_timeout)
                now = time.monotonic()
                if messages:
                    last_record = now
                    self._process(messages)
                elif (
                    until_idle is not None
                    # Idle time counts from the first assignment (a group join takes seconds).
                    and self._assigned_at is not None
                    and now - max(last_record, self._assigned_at) >= until_idle
                ):
                    break
                if self.lag_interval and now - last_lag >= self.lag_interval:
                    last_lag = now
                    self.refresh_lag()
        finally:
            self._close()
            if restore is not None:
                restore()
        return self.counters

    def _open(self) -> Consumer:
        conf = consumer_conf(self.endpoints, self.settings, group_id=self.group)
        conf.update(self._overrides)
        consumer = Consumer(conf)
        self._join_timeout = join_timeout(conf)
        if self.partitions is not None:
            consumer.assign([TopicPartition(t, p, OFFSET_STORED) for t, p in self.partitions])
            self._assigned_at = time.monotonic()
        else:
            self._assigned_at = None
            consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        return consumer

    def _on_assign(self, _consumer: Consumer, parts: list[TopicPartition]) -> None:
        log.info("%s: assigned %s", self.group, _partition_list(parts))
        if self._assigned_at is None:
            self._assigned_at = time.monotonic()

    def _on_revoke(self, _consumer: Consumer, parts: list[TopicPartition]) -> None:
        log.info("%s: revoked %s", self.group, _partition_list(parts))

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            # Leaves the group at once (no wait for the session timeout), after the first
            # join if it is still in progress (unless a second signal forces the stop).
            close_consumer(
                consumer,
                None if self._force else (lambda: self._assigned_at is not None),
                self._join_timeout,
            )
        if self._producer is not None and self._own_producer:
            self._producer.close(5.0)
            self._producer = None
        if self._lag_consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self._lag_consumer.close()
            self._lag_consumer = None
        if self._own_redis and self.redis is not None:
            self.redis.close()
        log.info("%s: stopped; %s", self.group, self.counters.as_dict())

    def _install_signals(self) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if self._stop.is_set():
                self._force = True
                raise KeyboardInterrupt
            log.info(
                "%s: %s received: finishing the batch", self.group, signal.Signals(signum).name
            )
            self._stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    # --- one batch ----------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        self.counters.batches += 1
        records: list[_Record] = []
        for msg in messages:
            error = msg.error()
            if error is None:
                records.append(self._classify(msg))
            else:
                log.warning("%s: consumer error: %s", self.group, error.str())
        finished: list[_Record] = []
        pending_marks: list[str] = []
        try:
            units = self._units(records, self._already_handled(records) | _repeats(records))
            for unit in units:
                self._run_unit(unit, pending_marks)
                finished.extend(unit)
            self._write_marks(pending_marks)
        except (_Stall, _Abandon) as exc:
            if pending_marks:
                # Events handled before the failure keep their markers if Redis allows.
                with contextlib.suppress(_Stall):
                    self._write_marks(pending_marks)
            self._rewind(records, finished)
            if isinstance(exc, _Stall):
                self._stalled(exc)
        else:
            self._stalled_since = None
        if finished and not self._force:
            self._commit(finished)

    def _stalled(self, exc: _Stall) -> None:
        """Pause before the batch is tried again; past ``stall_limit``, give up."""
        self.counters.stalls += 1
        now = time.monotonic()
        if self._stalled_since is None:
            self._stalled_since = now
        stalled = now - self._stalled_since
        delay = self._delay(min(self.counters.stalls, 6))
        if self.stall_limit is not None:
            if stalled >= self.stall_limit:
                error = RedisUnavailable if exc.server == "redis" else KafkaUnavailable
                raise error(
                    f"{self.group}: stalled for {stalled:.1f}s (limit {self.stall_limit:g}s): {exc}"
                ) from exc
            delay = min(delay, self.stall_limit - stalled)  # the last try comes at the limit
        log.error("%s: stalled, retrying after a pause: %s", self.group, exc)
        self._stop.wait(delay)

    def _classify(self, msg: Message) -> _Record:
        record = _Record(msg, *coordinates(msg))
        headers = headers_of(msg)
        if self.skip_check_records and headers and any(k == CHECK_HEADER for k, _ in headers):
            record.action = "skip"
            return record
        reading = read_record(
            record.topic,
            msg.key(),
            msg.value(),
            headers,
            partition=record.partition,
            offset=record.offset,
        )
        if reading.problem is not None or reading.event is None:
            record.action, record.reason = "dead", reading.reason or "invalid-envelope"
            record.error = reading.problem or "no event"
            record.error_type = _ERROR_TYPES.get(record.reason, "InvalidEvent")
            return record
        record.event = event_of(reading.event, reading.payload, reading.legacy)
        if self._route(record.event.type) is None:
            record.action = "ignore"
        return record

    def _route(self, event_type: str) -> _Route | None:
        return self._routes.get(event_type) or self._routes.get(ANY_TYPE)

    def _already_handled(self, records: list[_Record]) -> set[int]:
        """Records (by ``id()``) whose event already has a marker."""
        if not self.idempotency or self.redis is None:
            return set()
        todo = [r for r in records if r.action == "handle" and r.event is not None]
        if not todo:
            return set()
        try:
            found = self.redis.mget([self._marker(r.event.id) for r in todo if r.event])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise _Stall(f"Redis (idempotency guard): {exc}") from exc
        return {id(r) for r, marker in zip(todo, found, strict=True) if marker}

    def _units(self, records: list[_Record], duplicates: set[int]) -> list[list[_Record]]:
        """Consecutive events of one batch-handled type form one unit; others are alone.

        ``duplicates`` holds ``id()`` of records to skip as duplicates.
        """
        units: list[list[_Record]] = []
        for record in records:
            if record.action == "handle" and record.event is not None:
                if id(record) in duplicates:
                    record.action = "duplicate"
                else:
                    route = self._route(record.event.type)
                    if (
                        route is not None
                        and route.batch
                        and units
                        and units[-1][-1].action == "handle"
                        and units[-1][-1].event is not None
                        and self._route(units[-1][-1].event.type) is route
                        and units[-1][-1].event.type == record.event.type
                    ):
                        units[-1].append(record)
                        continue
            units.append([record])
        return units

    def _run_unit(self, unit: list[_Record], pending_marks: list[str]) -> None:
        first = unit[0]
        if first.action == "skip":
            self.counters.skipped += 1
            return
        if first.action == "ignore":
            self.counters.ignored += 1
            return
        if first.action == "duplicate":
            self.counters.duplicates += 1
            return
        if first.action == "dead":
            self._dead_letter(first, attempts=0)
            return
        self._handle(unit, pending_marks)

    def _handle(self, unit: list[_Record], pending_marks: list[str]) -> None:
        attempt = 0
        while True:
            try:
                try:
                    self._call(unit, attempt, pending_marks)
                    return
                except _Duplicate as dup:
                    # Only the marked events are duplicates: the rest are handled again
                    # without them (their tx effects were discarded with the transaction).
                    rest = [
                        r
                        for r in unit
                        if r.event is None or self._marker(r.event.id) not in dup.markers
                    ]
                    if len(rest) < len(unit):
                        kept = {id(r) for r in rest}
                        for record in unit:
                            if id(record) not in kept:
                                record.action = "duplicate"
                        self.counters.duplicates += len(unit) - len(rest)
                        unit = rest
                        if not unit:
                            return
                        continue
                    raise RuntimeError(
                        "the idempotency markers changed during the handler"
                    ) from dup
            except (_Stall, _Abandon):
                raise
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise _Stall(f"Redis: {exc}") from exc
            except PermanentError as exc:
                if len(unit) > 1:
                    self._one_by_one(unit, pending_marks)
                    return
                self._fail(unit[0], "handler-rejected", exc, attempt + 1)
                return
            except Exception as exc:
                if isinstance(exc, redis.ResponseError) and _redis_refuses_writes(exc):
                    # Out of memory, read-only replica, ...: an outage, not the handler's fault.
                    raise _Stall(f"Redis refuses writes: {exc}") from exc
                if attempt >= self.max_retries:
                    if len(unit) > 1:
                        self._one_by_one(unit, pending_marks)
                        return
                    self._fail(unit[0], "retries-exhausted", exc, attempt + 1)
                    return
                attempt += 1
                self.counters.retried += 1
                delay = self._delay(attempt)
                log.warning(
                    "%s: handler failed on %s (%s: %s); retry %d/%d in %.2fs",
                    self.group,
                    _where(unit),
                    type(exc).__name__,
                    exc,
                    attempt,
                    self.max_retries,
                    delay,
                )
                if self._stop.wait(delay):
                    raise _Abandon from exc

    def _one_by_one(self, unit: list[_Record], pending_marks: list[str]) -> None:
        log.warning("%s: batch of %d failed; retrying its events one by one", self.group, len(unit))
        for record in unit:
            self._handle([record], pending_marks)

    def _call(self, unit: list[_Record], attempt: int, pending_marks: list[str]) -> None:
        events = [r.event for r in unit if r.event is not None]
        route = self._route(events[0].type)
        assert route is not None
        ctx = HandlerContext(self, unit, attempt)
        try:
            argument: Any = events if route.batch else events[0]
            if route.wants_ctx:
                route.func(argument, ctx)
            else:
                route.func(argument)
            markers = ctx._markers
            if ctx._tx is not None:
                for marker in markers:
                    ctx._tx.set(marker, "1", ex=self.ttl)
                try:
                    ctx._tx.execute()
                except redis.WatchError:
                    ctx._tx.reset()
                    found = self.redis.mget(markers) if self.redis is not None else []
                    raise _Duplicate(
                        {m for m, value in zip(markers, found, strict=True) if value}
                    ) from None
            else:
                pending_marks.extend(markers)
        finally:
            if ctx._tx is not None:
                ctx._tx.reset()
        self.counters.processed += len(events)

    def _fail(self, record: _Record, reason: str, exc: BaseException, attempts: int) -> None:
        record.reason = reason
        record.error = f"{exc}"
        record.error_type = type(exc).__name__
        log.error(
            "%s: %s %s: %s (%s: %s)",
            self.group,
            _where([record]),
            record.event.type if record.event else "record",
            reason,
            record.error_type,
            exc,
        )
        self._dead_letter(record, attempts)

    def _dead_letter(self, record: _Record, attempts: int) -> None:
        target = dead_letter_topic(self.settings, record.topic)
        headers = headers_of(record.msg)
        headers += [
            (DLQ_REASON, record.reason.encode()),
            (DLQ_ERROR, record.error[:1000].encode("utf-8", "replace")),
            (DLQ_ERROR_TYPE, record.error_type.encode()),
            (DLQ_TOPIC, record.topic.encode()),
            (DLQ_PARTITION, str(record.partition).encode()),
            (DLQ_OFFSET, str(record.offset).encode()),
            (DLQ_GROUP, self.group.encode()),
            (DLQ_ATTEMPTS, str(attempts).encode()),
            (DLQ_TIME, iso_millis(int(time.time() * 1000)).encode()),
        ]
        if self._producer is None:
            self._producer = EventProducer(self.endpoints, self.settings, queue_full="block")
        future = self._producer.publish_raw(
            target, record.msg.value(), key=record.msg.key(), headers=headers
        )
        try:
            delivery = future.result(timeout=self.settings.events.delivery_timeout_ms / 1000 + 5)
        except Exception as exc:  # not moving on without the copy: that would lose the event
            raise _Stall(f"dead-letter write to {target} failed: {exc}", "kafka") from exc
        self.counters.dead_lettered += 1
        log.warning(
            "%s: %s dead-lettered to %s [%d@%d]: %s",
            self.group,
            _where([record]),
            target,
            delivery.partition,
            delivery.offset,
            record.reason,
        )

    def _write_marks(self, markers: list[str]) -> None:
        if not markers or self.redis is None:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for marker in markers:
                pipe.set(marker, "1", ex=self.ttl)
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            # A marker SET can only fail by the server's state (e.g. OOM): stall, never skip.
            raise _Stall(f"Redis (idempotency markers): {exc}") from exc
        markers.clear()

    def _commit(self, finished: Iterable[_Record]) -> None:
        assert self._consumer is not None
        ends: dict[Partition, int] = {}
        for record in finished:
            key = (record.topic, record.partition)
            ends[key] = max(ends.get(key, -1), record.offset + 1)
        offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The records are delivered again (to us or the partition's next owner);
            # the idempotency guard makes that harmless.
            self.counters.failed_commits += 1
            log.warning("%s: commit failed: %s", self.group, kafka_reason(exc))

    def _rewind(self, records: list[_Record], finished: list[_Record]) -> None:
        """Seek every partition back to its first unfinished record of this batch."""
        assert self._consumer is not None
        done = {(r.topic, r.partition, r.offset) for r in finished}
        first: dict[Partition, int] = {}
        for record in records:
            key = (record.topic, record.partition)
            if (record.topic, record.partition, record.offset) not in done and key not in first:
                first[key] = record.offset
        for (topic, partition), offset in first.items():
            with contextlib.suppress(KafkaException):
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def _delay(self, attempt: int) -> float:
        delay_ms: int = self.backoff_ms * 2 ** max(attempt - 1, 0)
        return min(delay_ms, self.backoff_max_ms) / 1000

    def _marker(self, event_id: str) -> str:
        return str(self.keys.idempotency(self.group, event_id))

    # --- lag ----------------------------------------------------------------

    def refresh_lag(self) -> int | None:
        """Update ``counters.lag`` from positions and true end offsets."""
        consumer = self._consumer
        if consumer is None:
            return self.counters.lag
        try:
            assigned = consumer.assignment()
            if not assigned:
                self.counters.lag = None
                return None
            positions = consumer.position(assigned)
            if self._lag_consumer is None:
                self._lag_consumer = offsets_consumer(self.endpoints, self.settings)
            ends = end_offsets(
                self.endpoints,
                self.settings,
                [(tp.topic, tp.partition) for tp in assigned],
                timeout=self.settings.kafka.request_timeout_ms / 1000,
                consumer=self._lag_consumer,
            )
        except Exception as exc:  # lag is informative; never stop consuming for it
            log.debug("%s: lag not refreshed: %s", self.group, exc)
            return self.counters.lag
        committed: dict[Partition, int] | None = None
        by_partition: dict[str, int] = {}
        for tp in positions:
            key = (tp.topic, tp.partition)
            position = tp.offset
            if position < 0:
                if committed is None:
                    committed = {
                        (c.topic, c.partition): c.offset
                        for c in consumer.committed(assigned, timeout=5)
                    }
                position = committed.get(key, -1)
                if position < 0:
                    position = ends[key].low
            by_partition[f"{tp.topic}[{tp.partition}]"] = max(ends[key].high - position, 0)
        self.counters.lag_by_partition = by_partition
        self.counters.lag = sum(by_partition.values())
        return self.counters.lag


# Error prefixes of a Redis that refuses writes for reasons of its own state.
_REFUSING_ERRORS = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.MasterDownError,
)
_REFUSING = ("OOM", "MISCONF", "READONLY", "LOADING", "BUSY", "NOREPLICAS", "MASTERDOWN")


def _redis_refuses_writes(exc: redis.ResponseError) -> bool:
    if isinstance(exc, _REFUSING_ERRORS):
        return True
    text = str(exc).lstrip("-").upper()
    if isinstance(exc, redis.exceptions.ExecAbortError):
        # MULTI discarded because a queued command was refused; the cause follows.
        return any(prefix in text for prefix in _REFUSING)
    return text.startswith(_REFUSING)


def _repeats(records: list[_Record]) -> set[int]:
    """Records (by ``id()``) repeating an event id seen earlier in the same batch."""
    seen: set[str] = set()
    repeats: set[int] = set()
    for record in records:
        if record.action == "handle" and record.event is not None:
            if record.event.id in seen:
                repeats.add(id(record))
            seen.add(record.event.id)
    return repeats


def _partition_list(parts: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in parts) or "nothing"


def _where(records: list[_Record]) -> str:
    first = records[0]
    text = f"{first.topic}[{first.partition}]@{first.offset}"
    return text if len(records) == 1 else f"{text} (+{len(records) - 1})"
