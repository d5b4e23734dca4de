"""Reading topics for `devctl tail`: start positions, filters, decoding; no rendering here.

By default partitions are *assigned*, not subscribed: tail never joins a group and
never commits, so it cannot disturb a consumer group. ``group=`` opts into one
(the caller stores offsets with ``written()`` once it has written records out;
stored offsets are committed periodically and on close).

Every end offset comes from the foundation's helper (``end_offsets``), because
the embedded broker under-reports its high watermark after multi-record batches.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import consumer_conf, fetch_metadata, make_admin
from devctl.config.loader import Settings
from devctl.errors import NotFound, OperationFailed, UsageError
from devctl.events._batches import (
    Headers,
    close_consumer,
    coordinates,
    headers_of,
    join_timeout,
    next_batch,
)
from devctl.events.envelope import iso_millis
from devctl.events.reading import read_record
from devctl.events.registry import REGISTRY
from devctl.streams.offsets import Partition, end_offsets
from devctl.streams.positions import offsets_for_time

START_MODES = ("end", "beginning", "last", "since", "offsets")
# The inputs that choose a start mode a consumer group cannot take (for errors about it).
_START_FIELDS = {
    "last": "start_last",
    "since": "start_since",
    "offsets": "start_offset",
}


@dataclass(frozen=True)
class Start:
    """Where each partition starts: the end (follow), the beginning, the last N, a time, offsets."""

    mode: str = "end"
    last: int = 0
    since_ms: int = 0
    offsets: tuple[tuple[str | None, int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in START_MODES:
            raise UsageError(f"unknown start mode {self.mode!r}")


@dataclass(frozen=True)
class Filters:
    """All given filters must match. Types may be globs (devconnect.user.*)."""

    types: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    grep: re.Pattern[str] | None = None

    @property
    def active(self) -> bool:
        return bool(self.types or self.keys or self.headers or self.grep)

    def type_matches(self, event_type: str | None, legacy: str | None = None) -> bool:
        """The type (or, for a legacy record, today's name) matches one of ``types``."""
        if not self.types:
            return True
        return any(
            name is not None
            and any(name == wanted or fnmatch.fnmatchcase(name, wanted) for wanted in self.types)
            for name in (event_type, legacy)
        )


def resolve_types(types: Sequence[str]) -> tuple[tuple[str, ...], list[str]]:
    """Type filters with today's names (USER_LOGIN) added as their registered types.

    Returns the filters and notes for the user: which legacy names were mapped, and
    names that are neither registered nor globs (still kept: foreign types exist).
    """
    from devctl.events.legacy import LEGACY_NAMES

    resolved: list[str] = []
    notes: list[str] = []
    for name in types:
        resolved.append(name)
        if name in REGISTRY or any(c in name for c in "*?["):
            continue
        mapped = LEGACY_NAMES.get(name) or LEGACY_NAMES.get(name.upper())
        if mapped:
            resolved.extend(mapped)
            notes.append(
                f"{name} is today's name of {' and '.join(mapped)}: "
                "matching legacy records and typed events"
            )
            continue
        close = difflib.get_close_matches(name, [*REGISTRY, *LEGACY_NAMES], n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see `devctl events types`"
        notes.append(
            f"no registered event type {name} ({hint}); only records of that exact type match"
        )
    return tuple(dict.fromkeys(resolved)), notes


def parse_header_filter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UsageError(
            f"a header filter is NAME=VALUE, got '{text}'",
            hint="e.g. event-type=x",
            field="header_filter",
            data={"value": text, "examples": ("event-type=x",)},
        )
    return name, value


@dataclass(slots=True)
class TailRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    headers: Headers
    value: bytes | None
    event: dict[str, Any] | None = None  # the decoded CloudEvent, when valid
    problem: str | None = None  # why the value is not a valid event (``event`` set: registry)
    mode: str | None = None  # structured | binary | legacy (see devctl.events.reading)
    legacy: str | None = None  # today's name of an upcast legacy record
    check: bool = False  # a probe written by `devctl test`

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value.encode() if isinstance(value, str) else value
        return None


@dataclass(frozen=True)
class StartPosition:
    """Where reading one partition starts, and why there (for the banner)."""

    topic: str
    partition: int
    offset: int
    origin: str  # end | beginning | last | since | offset | committed


@dataclass
class TailStats:
    shown: Counter[str] = field(default_factory=Counter)  # per topic
    scanned: int = 0
    invalid: int = 0
    checks: int = 0  # `devctl test` probes skipped

    def summary(self) -> str:
        total = sum(self.shown.values())
        per_topic = ", ".join(f"{topic} {n}" for topic, n in sorted(self.shown.items()))
        text = f"{total} event{'s' if total != 1 else ''} shown"
        if per_topic:
            text += f" ({per_topic})"
        if self.invalid:
            text += f"; {self.invalid} not valid event{'s' if self.invalid != 1 else ''}"
        if self.scanned != total:
            text += f"; {self.scanned} records read"
        if self.checks:
            text += f"; {self.checks} `devctl test` record{'s' if self.checks != 1 else ''} skipped"
        return text


class Tail:
    """Iterate over the records of some topics, filtered and decoded, one at a time.

    ``on_ready`` is told where each partition starts (in group mode: at every
    assignment); ``on_notice`` gets warnings meant for the user (the broker stopped or
    came back, an offset past the end). Neither prints: the caller decides how.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        settings: Settings,
        topics: Sequence[str],
        *,
        start: Start | None = None,
        filters: Filters | None = None,
        follow: bool = True,
        count: int | None = None,
        group: str | None = None,
        include_checks: bool = False,
        batch_size: int = 1000,
        poll_timeout: float = 0.2,
        on_ready: Callable[[list[StartPosition]], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ):
        if not topics:
            raise UsageError("name at least one topic")
        self.endpoints = endpoints
        self.settings = settings
        self.topics = list(dict.fromkeys(topics))
        self.start = start or Start()
        self.filters = filters or Filters()
        self.follow = follow
        self.count = count
        self.group = group
        self.include_checks = include_checks
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.on_ready = on_ready
        self.on_notice = on_notice
        self.stats = TailStats()
        self.timeout = settings.kafka.request_timeout_ms / 1000
        if group is not None and self.start.mode in ("last", "since", "offsets"):
            raise UsageError(
                "a consumer group resumes from its committed offsets; "
                "it takes no other start position",
                field="group",
                data={"value": group, "conflicts": (_START_FIELDS[self.start.mode],)},
            )
        self._consumer: Consumer | None = None
        self._ends: dict[Partition, int] = {}
        self._done: set[Partition] = set()
        self._assigned: set[Partition] = set()
        self._joined = False  # group mode: the first assignment came
        self._join_timeout = 0.0
        # Broker liveness while idle: the last time it answered (a record or a probe),
        # whether the user was told it went silent, and whether an outage was seen (the
        # client's error callback or a failed probe) since it last answered.
        self._last_answer = time.monotonic()
        self._down_told = False
        self._client_down = False
        self._last_probe = 0.0
        self._last_reset_check = 0.0
        self._scanned: dict[Partition, int] = {}  # group mode: to store, next offset per partition
        self._next: dict[Partition, int] = {}  # past the last record read, per partition

    def _notice(self, text: str) -> None:
        if self.on_notice is not None:
            self.on_notice(text)

    # --- positions ----------------------------------------------------------

    def partitions(self) -> list[Partition]:
        admin = make_admin(self.endpoints, self.settings)
        metadata, _ = fetch_metadata(admin, self.endpoints, self.timeout)
        missing = [t for t in self.topics if t not in metadata.topics]
        if missing:
            raise NotFound(
                f"topic{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"do{'' if len(missing) > 1 else 'es'} not exist",
                hint="see `devctl topics list`",
            )
        return [
            (topic, p) for topic in self.topics for p in sorted(metadata.topics[topic].partitions)
        ]

    def plan(self) -> list[TopicPartition]:
        """The assignment: each partition with its start offset (assign mode)."""
        partitions = self.partitions()
        ends = end_offsets(self.endpoints, self.settings, partitions, timeout=self.timeout * 2)
        self._ends = {key: value.high for key, value in ends.items()}
        mode = self.start.mode
        starts: dict[Partition, int]
        if mode == "end":
            starts = {key: value.high for key, value in ends.items()}
        elif mode == "beginning":
            starts = {key: value.low for key, value in ends.items()}
        elif mode == "last":
            starts = {
                key: max(value.low, value.high - self.start.last) for key, value in ends.items()
            }
        elif mode == "since":
            starts = offsets_for_time(
                self.endpoints,
                self.settings,
                partitions,
                self.start.since_ms,
                timeout=self.timeout * 2,
                ends=ends,
            )
        else:
            starts = self._explicit_offsets(partitions)
            for (topic, partition), offset in starts.items():
                bounds = ends[(topic, partition)]
                if offset > bounds.high:
                    self._notice(
                        f"offset {offset} of {topic}[{partition}] lies past its end "
                        f"({bounds.high}): only records written from now on reach it"
                    )
                elif offset < bounds.low:
                    self._notice(
                        f"offset {offset} of {topic}[{partition}] lies before its first "
                        f"record ({bounds.low}): reading starts there"
                    )
        return [TopicPartition(t, p, starts[(t, p)]) for t, p in partitions if (t, p) in starts]

    def _explicit_offsets(self, partitions: list[Partition]) -> dict[Partition, int]:
        starts: dict[Partition, int] = {}
        for topic, partition, offset in self.start.offsets:
            targets = [topic] if topic is not None else self.topics
            for name in targets:
                if (name, partition) not in partitions:
                    raise UsageError(
                        f"topic {name} has no partition {partition}",
                        hint="`devctl topics describe` lists the partitions",
                        field="start_offset",
                        data={"value": f"{name}:{partition}:{offset}"},
                    )
                starts[(name, partition)] = offset
        return starts

    # --- reading ------------------------------------------------------------

    def _on_client_error(self, error: KafkaError) -> None:
        # librdkafka reports losing every broker here (never through poll()).
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._client_down = True  # probe at once rather than at the next interval

    def _open(self) -> Consumer:
        if self.group is None:
            assignment = self.plan()
            conf = consumer_conf(
                self.endpoints,
                self.settings,
                # librdkafka wants a group id even for assign-only reading; nothing is committed.
                group_id=f"devctl-tail-{uuid.uuid4().hex[:8]}",
                **{
                    "enable.partition.eof": True,
                    "fetch.wait.max.ms": 100,
                    "error_cb": self._on_client_error,
                },
            )
            consumer = Consumer(conf)
            consumer.assign(assignment)
            if self.on_ready is not None:
                origin = "offset" if self.start.mode == "offsets" else self.start.mode
                self.on_ready(
                    [StartPosition(tp.topic, tp.partition, tp.offset, origin) for tp in assignment]
                )
            self._done = {
                (tp.topic, tp.partition)
                for tp in assignment
                if tp.offset >= self._ends.get((tp.topic, tp.partition), 0)
            }
            self._assigned = {(tp.topic, tp.partition) for tp in assignment}
            return consumer
        self.partitions()  # NotFound before joining
        conf = consumer_conf(
            self.endpoints,
            self.settings,
            group_id=self.group,
            **{
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": 1000,
                "enable.partition.eof": not self.follow,
                "error_cb": self._on_client_error,
            },
        )
        consumer = Consumer(conf)
        self._join_timeout = join_timeout(conf)
        consumer.subscribe(self.topics, on_assign=self._on_assign)
        if self.on_ready is not None:
            self.on_ready([])  # joining; told again with the positions once assigned
        return consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Committed partitions resume there; the others start at the true end (or beginning)."""
        self._joined = True
        committed = consumer.committed(partitions, timeout=self.timeout)
        keys = [(tp.topic, tp.partition) for tp in committed]
        ends = end_offsets(self.endpoints, self.settings, keys, timeout=self.timeout * 2)
        use_low = self.start.mode == "beginning"
        positions: list[StartPosition] = []
        for tp in committed:
            bounds = ends.get((tp.topic, tp.partition))
            if tp.offset >= 0:
                positions.append(StartPosition(tp.topic, tp.partition, tp.offset, "committed"))
            elif bounds is not None:
                tp.offset = bounds.low if use_low else bounds.high
                origin = "beginning" if use_low else "end"
                positions.append(StartPosition(tp.topic, tp.partition, tp.offset, origin))
        self._ends = {key: bounds.high for key, bounds in ends.items()}
        self._assigned = set(keys)
        self._done = {
            (tp.topic, tp.partition)
            for tp in committed
            if tp.offset >= self._ends.get((tp.topic, tp.partition), 0)
        }
        consumer.assign(committed)
        if self.on_ready is not None:
            self.on_ready(positions)

    def records(self) -> Iterator[TailRecord | None]:
        """Matching records, decoded one at a time as they are taken; ``None`` after each poll.

        A record is decoded only once the one before it has been taken (and written
        out), so a bad record never holds back the good ones before it.
        """
        consumer = self._consumer = self._open()
        remaining = self.count
        started = time.monotonic()
        try:
            if not self.follow and self.group is None and self._assigned == self._done:
                return
            while True:
                messages = next_batch(consumer, self.batch_size, self.poll_timeout)
                if messages:
                    self._broker_answered(consumer)
                else:
                    self._watch_broker(consumer)
                for record in self._select(messages):
                    self.stats.shown[record.topic] += 1
                    yield record
                    if remaining is not None:
                        remaining -= 1
                        if remaining == 0:
                            yield None  # the caller writes (and stores) before the close
                            return
                yield None
                if not self.follow and self._finished(started):
                    return
        finally:
            self.close()

    def batches(self) -> Iterator[list[TailRecord]]:
        """Matching records, a list per poll (an empty list when nothing arrived)."""
        batch: list[TailRecord] = []
        for record in self.records():
            if record is None:
                yield batch
                batch = []
            else:
                batch.append(record)
        if batch:
            yield batch

    def _finished(self, started: float) -> bool:
        if self.group is not None and not self._joined:
            if time.monotonic() - started > self._join_timeout:
                raise OperationFailed(
                    f"group {self.group} got no partitions within {self._join_timeout:g}s",
                    hint="another member may hold them; see `devctl groups describe`",
                )
            return False
        return self._assigned <= self._done

    def _broker_answered(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if self._down_told:
            self._notice(f"the broker answers again (after {now - self._last_answer:.0f}s)")
            self._down_told = False
        # After any outage, even one too short to warn about: until the check could run
        # (the topic may not be back yet), at most once a second.
        if self._client_down and now - self._last_reset_check >= 1.0:
            self._last_reset_check = now
            if self._check_log_reset(consumer):
                self._client_down = False
        self._last_answer = now

    def _watch_broker(self, consumer: Consumer) -> None:
        """While no record comes: probe the broker (a metadata request) every second or so,
        warn once it has not answered for the request timeout, and say when it is back.

        An idle topic and a dead (or hung) broker look alike to a fetch loop: only asking
        tells them apart. The client's own error callback only makes the probe come sooner.
        """
        now = time.monotonic()
        interval = 0.5 if self._client_down else min(1.0, self.timeout / 2)
        if now - self._last_probe < interval:
            return
        self._last_probe = now
        try:
            consumer.list_topics(self.topics[0], timeout=min(1.0, self.timeout))
        except KafkaException:
            self._client_down = True
            silent = time.monotonic() - self._last_answer
            if not self._down_told and silent >= self.timeout:
                self._down_told = True
                self._notice(
                    f"the broker at {self.endpoints.kafka_brokers} does not answer "
                    f"(for {silent:.0f}s); still trying"
                )
            return
        self._broker_answered(consumer)

    def _check_log_reset(self, consumer: Consumer) -> bool:
        """After an outage: a partition whose end is now below what tail knew of it (its end
        at the start, or past the last record read) lost its log: the embedded broker keeps
        it in memory; a topic may be deleted and created again. A log never shrinks
        otherwise, and the broker would answer nothing there for ever: say so and start
        that partition over. False when the check could not run (the topic is not back)."""
        known = dict(self._ends)
        for key, position in self._next.items():
            known[key] = max(known.get(key, 0), position)
        if not known:
            return True
        try:
            ends = end_offsets(self.endpoints, self.settings, list(known), timeout=self.timeout)
        except Exception:
            return False
        if len(ends) < len(known):
            return False
        for (topic, partition), seen in known.items():
            bounds = ends[(topic, partition)]
            if bounds.high >= seen:
                continue
            self._notice(
                f"{topic}[{partition}] was reset while the broker was away (its end is "
                f"{bounds.high}, it was {seen}): reading it from {bounds.low}"
            )
            with contextlib.suppress(KafkaException):
                consumer.seek(TopicPartition(topic, partition, bounds.low))
            self._next[(topic, partition)] = bounds.low
            self._ends[(topic, partition)] = bounds.high
        return True

    def written(self, records: Sequence[TailRecord]) -> None:
        """Group mode: the caller has written out every record taken so far; store offsets.

        Offsets go past every record read up to now, shown or filtered out (a skipped
        `devctl test` probe is consumed too, or the group would lag behind it for ever).
        Only stored offsets are committed (periodically and on close), and the caller
        says ``written`` only after its output took the records, so records read but
        never written (the reader of a pipe went away) are not consumed for the group.
        """
        consumer = self._consumer
        if self.group is None or consumer is None or not self._scanned:
            return
        scanned, self._scanned = self._scanned, {}
        consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in scanned.items()])

    def _select(self, messages: list[Message]) -> Iterator[TailRecord]:
        filters = self.filters
        track_end = not self.follow
        skip_checks = not self.include_checks
        group_mode = self.group is not None
        scanned = self._scanned
        following = self._next
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._done.add((msg.topic() or "", msg.partition() or 0))
                    continue
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise NotFound(f"topic {msg.topic()} no longer exists")
                continue
            topic, partition, offset = coordinates(msg)
            following[(topic, partition)] = offset + 1
            if group_mode:
                scanned[(topic, partition)] = offset + 1
            if track_end:
                end = self._ends.get((topic, partition), 0)
                if offset >= end:
                    self._done.add((topic, partition))
                    continue  # past the end taken at start
                if offset + 1 >= end:
                    self._done.add((topic, partition))
            self.stats.scanned += 1
            headers = headers_of(msg)
            key = msg.key()
            value = msg.value()
            if filters.keys and (key is None or key.decode("utf-8", "replace") not in filters.keys):
                continue
            if filters.headers and not _headers_match(headers, filters.headers):
                continue
            if filters.grep is not None and (
                value is None or not filters.grep.search(value.decode("utf-8", "replace"))
            ):
                continue
            record = TailRecord(topic, partition, offset, msg.timestamp()[1], key, headers, value)
            # A type filter matches the type tail shows, decoded from the record: a header can
            # disagree with the value (another client's bug), so it is never trusted here.
            decode(record)
            if record.check and skip_checks:  # a `devctl test` probe (rare: decoded first)
                self.stats.checks += 1
                continue
            if filters.types and not filters.type_matches(
                record.event.get("type") if record.event is not None else None, record.legacy
            ):
                continue
            if record.problem is not None:
                self.stats.invalid += 1
            yield record

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        # In group mode this commits the stored offsets and leaves (after the first join).
        close_consumer(
            consumer, None if self.group is None else (lambda: self._joined), self._join_timeout
        )


def _headers_match(headers: Headers, wanted: tuple[tuple[str, str], ...]) -> bool:
    have: dict[str, set[str]] = {}
    for name, value in headers:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")
        have.setdefault(name, set()).add(text)
    return all(value in have.get(name, ()) for name, value in wanted)


def decode(record: TailRecord) -> None:
    """Fill in the event (or the problem) of a record; never raises (devctl.events.reading)."""
    reading = read_record(
        record.topic,
        record.key,
        record.value,
        record.headers,
        partition=record.partition,
        offset=record.offset,
    )
    record.event = reading.event
    record.problem = reading.problem
    record.mode = reading.mode
    record.legacy = reading.legacy
    record.check = reading.check


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def to_ndjson(record: TailRecord, enrichment: dict[str, Any] | None = None) -> str:
    """The NDJSON line of one record (the format documented in docs/events.md)."""

    head: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": iso_millis(record.timestamp_ms),
        "key": None if record.key is None else record.key.decode("utf-8", "replace"),
        "headers": {
            name: (value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
            for name, value in record.headers
        },
    }
    if enrichment is not None:
        head["enrich"] = enrichment
    if record.legacy is not None:
        head["legacy"] = record.legacy
    value = record.value
    if (
        record.mode == "structured"
        and record.problem is None
        and value is not None
        and b"\n" not in value
        and b"\r" not in value
    ):
        # The value was just parsed as a valid event: splice its bytes in, unchanged.
        return f'{_dumps(head)[:-1]},"event":{value.decode()}}}'
    if record.event is not None:
        head["event"] = record.event
        if record.problem is not None:
            head["warning"] = record.problem
        return _text_line(head)
    head["event"] = None
    head["raw"] = None if value is None else value.decode("utf-8", "backslashreplace")
    head["warning"] = record.problem
    return _text_line(head)


_SURROGATE = re.compile("[\ud800-\udfff]")
_ascii_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def _text_line(head: dict[str, Any]) -> str:
    """JSON text that encodes as UTF-8: lone surrogates (from a "\\ud800" escape in the
    value) cannot, so such a line is written with every non-ASCII character escaped."""
    line = _dumps(head)
    return _ascii_dumps(head) if _SURROGATE.search(line) else line
