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
import dataclasses
import inspect
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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
    commit_after,
    coordinates,
    headers_of,
    join_timeout,
    next_batch,
    seek_back,
)
from devctl.events.consumer_lag import LagMeter
from devctl.events.consumer_options import ConsumerOptions, Counters, RecordAction
from devctl.events.dead_letters import (
    DLQ_ATTEMPTS,
    DLQ_ERROR,
    DLQ_ERROR_TYPE,
    DLQ_GROUP,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_REASONS,
    DLQ_TIME,
    DLQ_TOPIC,
    READER_ERROR_TYPES,
    DeadLetters,
    dead_letter_topic,
)
from devctl.events.envelope import event_of
from devctl.events.errors import PermanentError
from devctl.events.handling import (
    Abandon,
    Duplicate,
    Handler,
    HandlerContext,
    Record,
    Route,
    Stall,
    redis_refuses_writes,
    repeats,
    where,
)
from devctl.events.markers import CHECK_HEADER  # records of `devctl test`: skipped
from devctl.events.producer import EventProducer
from devctl.events.reading import read_record
from devctl.streams.offsets import Partition

log = logging.getLogger("devctl.events.consumer")


__all__ = [
    "ANY_TYPE",
    "CHECK_HEADER",
    "DLQ_ATTEMPTS",
    "DLQ_ERROR",
    "DLQ_ERROR_TYPE",
    "DLQ_GROUP",
    "DLQ_OFFSET",
    "DLQ_PARTITION",
    "DLQ_REASON",
    "DLQ_REASONS",
    "DLQ_TIME",
    "DLQ_TOPIC",
    "ConsumerOptions",
    "ConsumerRuntime",
    "Counters",
    "Handler",
    "HandlerContext",
    "RecordAction",
    "dead_letter_topic",
]

ANY_TYPE = "*"


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
        options: ConsumerOptions | None = None,
        redis_client: redis.Redis | None = None,
        keys: Any = None,
        producer: EventProducer | None = None,
        **kwargs: Any,
    ):
        """``options``: the tuning knobs (ConsumerOptions.from_settings(settings) if not
        given). Keyword arguments named like an option (``batch_size=``, ``stall_limit=``,
        ...) set that option; any others are librdkafka consumer settings."""
        if not topics and not partitions:
            raise UsageError("a consumer needs topics (or partitions) to read")
        knobs = {name: kwargs.pop(name) for name in ConsumerOptions.names() if name in kwargs}
        if options is None:
            options = ConsumerOptions.from_settings(settings, **knobs)
        elif knobs:
            options = dataclasses.replace(options, **knobs)
        self.options = options
        self.endpoints = endpoints
        self.settings = settings
        self.group = group
        self.topics = list(dict.fromkeys(list(topics) + [t for t, _ in partitions or ()]))
        self.partitions = list(partitions) if partitions is not None else None
        self.idempotency = options.idempotency
        self._stalled_since: float | None = None
        self.counters = Counters()
        self._overrides = kwargs
        self._routes: dict[str, Route] = {}
        self._stop = threading.Event()
        self._force = False
        self._consumer: Consumer | None = None
        self._assigned_at: float | None = None  # when the first assignment came
        self._join_timeout = 0.0
        self._dead_letters = DeadLetters(endpoints, settings, group, producer)
        self._lag = LagMeter(endpoints, settings)
        self._own_redis = False
        if options.idempotency and redis_client is None:
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

        ``func(event)`` or ``func(event, ctx)``; batch handlers get a list of events,
        of one type, except for an ANY_TYPE batch handler, which gets mixed types.
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
        self._routes[event_type] = Route(func, batch, len(params) >= 2)

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
        options = self.options
        try:
            while not self._stop.is_set():
                messages = next_batch(self._consumer, options.batch_size, options.poll_timeout)
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
                if options.lag_interval and now - last_lag >= options.lag_interval:
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
        self._dead_letters.close()
        self._lag.close()
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
        records: list[Record] = []
        for msg in messages:
            error = msg.error()
            if error is None:
                records.append(self._classify(msg))
            else:
                log.warning("%s: consumer error: %s", self.group, error.str())
        finished: list[Record] = []
        pending_marks: list[str] = []
        try:
            units = self._units(records, self._already_handled(records) | repeats(records))
            for unit in units:
                self._run_unit(unit, pending_marks)
                finished.extend(unit)
            self._write_marks(pending_marks)
        except (Stall, Abandon) as exc:
            if pending_marks:
                # Events handled before the failure keep their markers if Redis allows.
                with contextlib.suppress(Stall):
                    self._write_marks(pending_marks)
            self._rewind(records, finished)
            if isinstance(exc, Stall):
                self._stalled(exc)
        else:
            self._stalled_since = None
        if finished and not self._force:
            self._commit(finished)

    def _stalled(self, exc: Stall) -> None:
        """Pause before the batch is tried again; past ``stall_limit``, give up."""
        self.counters.stalls += 1
        now = time.monotonic()
        if self._stalled_since is None:
            self._stalled_since = now
        stalled = now - self._stalled_since
        delay = self.options.delay(min(self.counters.stalls, 6))
        limit = self.options.stall_limit
        if limit is not None:
            if stalled >= limit:
                error = RedisUnavailable if exc.server == "redis" else KafkaUnavailable
                raise error(
                    f"{self.group}: stalled for {stalled:.1f}s (limit {limit:g}s): {exc}"
                ) from exc
            delay = min(delay, limit - stalled)  # the last try comes at the limit
        log.error("%s: stalled, retrying after a pause: %s", self.group, exc)
        self._stop.wait(delay)

    def _classify(self, msg: Message) -> Record:
        record = Record(msg, *coordinates(msg))
        headers = headers_of(msg)
        if (
            self.options.skip_check_records
            and headers
            # Only the value checks write marks a probe (any other is a record like any other).
            and any(k == CHECK_HEADER and v in (b"1", "1") for k, v in headers)
        ):
            record.action = RecordAction.SKIP
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
            record.action, record.reason = RecordAction.DEAD, reading.reason or "invalid-envelope"
            record.error = reading.problem or "no event"
            record.error_type = READER_ERROR_TYPES.get(record.reason, "InvalidEvent")
            return record
        record.event = event_of(reading.event, reading.payload, reading.legacy)
        if self._route(record.event.type) is None:
            record.action = RecordAction.IGNORE
        return record

    def _route(self, event_type: str) -> Route | None:
        return self._routes.get(event_type) or self._routes.get(ANY_TYPE)

    def _already_handled(self, records: list[Record]) -> set[int]:
        """Records (by ``id()``) whose event already has a marker."""
        if not self.idempotency or self.redis is None:
            return set()
        todo = [r for r in records if r.action is RecordAction.HANDLE and r.event is not None]
        if not todo:
            return set()
        try:
            found = self.redis.mget([self._marker(r.event.id) for r in todo if r.event])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise Stall(f"Redis (idempotency guard): {exc}") from exc
        return {id(r) for r, marker in zip(todo, found, strict=True) if marker}

    def _units(self, records: list[Record], duplicates: set[int]) -> list[list[Record]]:
        """Consecutive events of one batch-handled type form one unit; others are alone.

        A batch handler of ANY_TYPE takes every type it handles, so its unit is the
        run of consecutive events it handles, whatever their types: on a topic of
        mixed types, per-type units were one or two events long (a transaction each;
        the analytics consumer ran at 13% of the no-op rate, docs/benchmarks.md).

        ``duplicates`` holds ``id()`` of records to skip as duplicates.
        """
        units: list[list[Record]] = []
        for record in records:
            if record.action is RecordAction.HANDLE and record.event is not None:
                if id(record) in duplicates:
                    record.action = RecordAction.DUPLICATE
                else:
                    route = self._route(record.event.type)
                    if (
                        route is not None
                        and route.batch
                        and units
                        and units[-1][-1].action is RecordAction.HANDLE
                        and units[-1][-1].event is not None
                        and self._route(units[-1][-1].event.type) is route
                        and (
                            units[-1][-1].event.type == record.event.type
                            or route is self._routes.get(ANY_TYPE)
                        )
                    ):
                        units[-1].append(record)
                        continue
            units.append([record])
        return units

    def _run_unit(self, unit: list[Record], pending_marks: list[str]) -> None:
        first = unit[0]
        if first.action is RecordAction.SKIP:
            self.counters.skipped += 1
            return
        if first.action is RecordAction.IGNORE:
            self.counters.ignored += 1
            return
        if first.action is RecordAction.DUPLICATE:
            self.counters.duplicates += 1
            return
        if first.action is RecordAction.DEAD:
            self._dead_letter(first, attempts=0)
            return
        self._handle(unit, pending_marks)

    def _handle(self, unit: list[Record], pending_marks: list[str]) -> None:
        attempt = 0
        while True:
            try:
                try:
                    self._call(unit, attempt, pending_marks)
                    return
                except Duplicate as dup:
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
                                record.action = RecordAction.DUPLICATE
                        self.counters.duplicates += len(unit) - len(rest)
                        unit = rest
                        if not unit:
                            return
                        continue
                    raise RuntimeError(
                        "the idempotency markers changed during the handler"
                    ) from dup
            except (Stall, Abandon):
                raise
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise Stall(f"Redis: {exc}") from exc
            except PermanentError as exc:
                if len(unit) > 1:
                    self._one_by_one(unit, pending_marks)
                    return
                self._fail(unit[0], "handler-rejected", exc, attempt + 1)
                return
            except Exception as exc:
                if isinstance(exc, redis.ResponseError) and redis_refuses_writes(exc):
                    # Out of memory, read-only replica, ...: an outage, not the handler's fault.
                    raise Stall(f"Redis refuses writes: {exc}") from exc
                if attempt >= self.options.max_retries:
                    if len(unit) > 1:
                        self._one_by_one(unit, pending_marks)
                        return
                    self._fail(unit[0], "retries-exhausted", exc, attempt + 1)
                    return
                attempt += 1
                self.counters.retried += 1
                delay = self.options.delay(attempt)
                log.warning(
                    "%s: handler failed on %s (%s: %s); retry %d/%d in %.2fs",
                    self.group,
                    where(unit),
                    type(exc).__name__,
                    exc,
                    attempt,
                    self.options.max_retries,
                    delay,
                )
                if self._stop.wait(delay):
                    raise Abandon from exc

    def _one_by_one(self, unit: list[Record], pending_marks: list[str]) -> None:
        log.warning("%s: batch of %d failed; retrying its events one by one", self.group, len(unit))
        for record in unit:
            self._handle([record], pending_marks)

    def _call(self, unit: list[Record], attempt: int, pending_marks: list[str]) -> None:
        events = [r.event for r in unit if r.event is not None]
        route = self._route(events[0].type)
        assert route is not None
        markers = [self._marker(e.id) for e in events] if self.idempotency else []
        ctx = HandlerContext(self.group, unit, attempt, self.redis, markers)
        try:
            argument: Any = events if route.batch else events[0]
            if route.wants_ctx:
                route.func(argument, ctx)
            else:
                route.func(argument)
            pending_marks.extend(ctx.finish(self.options.idempotency_ttl))
        finally:
            ctx.close()
        self.counters.processed += len(events)

    def _fail(self, record: Record, reason: str, exc: BaseException, attempts: int) -> None:
        record.reason = reason
        record.error = f"{exc}"
        record.error_type = type(exc).__name__
        log.error(
            "%s: %s %s: %s (%s: %s)",
            self.group,
            where([record]),
            record.event.type if record.event else "record",
            reason,
            record.error_type,
            exc,
        )
        self._dead_letter(record, attempts)

    def _dead_letter(self, record: Record, attempts: int) -> None:
        target, delivery = self._dead_letters.write(record, attempts)
        self.counters.dead_lettered += 1
        log.warning(
            "%s: %s dead-lettered to %s [%d@%d]: %s",
            self.group,
            where([record]),
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
                pipe.set(marker, "1", ex=self.options.idempotency_ttl)
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            # A marker SET can only fail by the server's state (e.g. OOM): stall, never skip.
            raise Stall(f"Redis (idempotency markers): {exc}") from exc
        markers.clear()

    def _commit(self, finished: Iterable[Record]) -> None:
        assert self._consumer is not None
        try:
            commit_after(self._consumer, ((r.topic, r.partition, r.offset) for r in finished))
        except KafkaException as exc:
            # The records are delivered again (to us or the partition's next owner);
            # the idempotency guard makes that harmless.
            self.counters.failed_commits += 1
            log.warning("%s: commit failed: %s", self.group, kafka_reason(exc))

    def _rewind(self, records: list[Record], finished: list[Record]) -> None:
        """Seek every partition back to its first unfinished record of this batch."""
        assert self._consumer is not None
        done = {id(r) for r in finished}
        seek_back(
            self._consumer, [(r.topic, r.partition, r.offset) for r in records if id(r) not in done]
        )

    def _marker(self, event_id: str) -> str:
        return str(self.keys.idempotency(self.group, event_id))

    # --- lag ----------------------------------------------------------------

    def refresh_lag(self) -> int | None:
        """Update ``counters.lag`` from positions and true end offsets."""
        if self._consumer is None:
            return self.counters.lag
        try:
            by_partition = self._lag.measure(self._consumer)
        except Exception as exc:  # lag is informative; never stop consuming for it
            log.debug("%s: lag not refreshed: %s", self.group, exc)
            return self.counters.lag
        if by_partition is None:
            self.counters.lag = None
            return None
        self.counters.lag_by_partition = by_partition
        self.counters.lag = sum(by_partition.values())
        return self.counters.lag


def _partition_list(parts: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in parts) or "nothing"
