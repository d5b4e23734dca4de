"""Reading topics for `devctl tail`: start positions, filters, decoding; no rendering here.

By default partitions are *assigned*, not subscribed: tail never joins a group and
never commits, so it cannot disturb a consumer group. ``group=`` opts into one
(the caller stores offsets with ``written()`` once it has written records out;
stored offsets are committed periodically and on close).

Every end offset comes from the foundation's helper (``end_offsets``), because
the embedded broker under-reports its high watermark after multi-record batches.
"""

from __future__ import annotations

import fnmatch
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import consumer_conf, fetch_metadata, make_admin
from devctl.config.loader import Settings
from devctl.errors import NotFound, UsageError
from devctl.events._batches import (
    Headers,
    close_consumer,
    coordinates,
    headers_of,
    join_timeout,
    next_batch,
)
from devctl.events.envelope import HEADER_TYPE, envelope_problem, validate_registered
from devctl.events.errors import InvalidEvent, UnknownEventType
from devctl.events.positions import offsets_for_time
from devctl.streams.offsets import Partition, end_offsets

START_MODES = ("end", "beginning", "last", "since", "offsets")


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

    def type_matches(self, event_type: str | None) -> bool:
        if not self.types:
            return True
        if event_type is None:
            return False
        return any(
            event_type == wanted or fnmatch.fnmatchcase(event_type, wanted) for wanted in self.types
        )


def parse_header_filter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UsageError(
            f"--header expects NAME=VALUE, got '{text}'", hint="e.g. --header event-type=x"
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

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value.encode() if isinstance(value, str) else value
        return None


@dataclass
class TailStats:
    shown: Counter[str] = field(default_factory=Counter)  # per topic
    scanned: int = 0
    invalid: int = 0

    def summary(self) -> str:
        total = sum(self.shown.values())
        per_topic = ", ".join(f"{topic} {n}" for topic, n in sorted(self.shown.items()))
        text = f"{total} event{'s' if total != 1 else ''} shown"
        if per_topic:
            text += f" ({per_topic})"
        if self.invalid:
            text += f"; {self.invalid} not valid events"
        if self.scanned != total:
            text += f"; {self.scanned} records read"
        return text


class Tail:
    """Iterate over the records of some topics, filtered and decoded, in batches."""

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
        batch_size: int = 1000,
        poll_timeout: float = 0.2,
        on_ready: Callable[[list[TopicPartition]], None] | None = None,
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
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.on_ready = on_ready  # told the assignment once reading starts
        self.stats = TailStats()
        self.timeout = settings.kafka.request_timeout_ms / 1000
        if group is not None and self.start.mode in ("last", "since", "offsets"):
            raise UsageError(
                "--group resumes from the group's committed offsets; "
                "it cannot be combined with --last, --since or --offset"
            )
        if group is not None and not follow:
            raise UsageError("--group follows the topics; use --count N to stop")
        self._consumer: Consumer | None = None
        self._ends: dict[Partition, int] = {}
        self._done: set[Partition] = set()
        self._assigned: set[Partition] = set()
        self._joined = False  # group mode: the first assignment came
        self._join_timeout = 0.0

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
        return [TopicPartition(t, p, starts[(t, p)]) for t, p in partitions if (t, p) in starts]

    def _explicit_offsets(self, partitions: list[Partition]) -> dict[Partition, int]:
        starts: dict[Partition, int] = {}
        for topic, partition, offset in self.start.offsets:
            targets = [topic] if topic is not None else self.topics
            for name in targets:
                if (name, partition) not in partitions:
                    raise UsageError(
                        f"--offset: {name} has no partition {partition}",
                        hint="`devctl topics describe` lists the partitions",
                    )
                starts[(name, partition)] = offset
        return starts

    # --- reading ------------------------------------------------------------

    def _open(self) -> Consumer:
        if self.group is None:
            assignment = self.plan()
            conf = consumer_conf(
                self.endpoints,
                self.settings,
                # librdkafka wants a group id even for assign-only reading; nothing is committed.
                group_id=f"devctl-tail-{uuid.uuid4().hex[:8]}",
                **{"enable.partition.eof": True, "fetch.wait.max.ms": 100},
            )
            consumer = Consumer(conf)
            consumer.assign(assignment)
            if self.on_ready is not None:
                self.on_ready(assignment)
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
            },
        )
        consumer = Consumer(conf)
        self._join_timeout = join_timeout(conf)
        consumer.subscribe(self.topics, on_assign=self._on_assign)
        if self.on_ready is not None:
            self.on_ready([])
        return consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions the group has never committed start at the true end (or the beginning)."""
        self._joined = True
        committed = consumer.committed(partitions, timeout=self.timeout)
        fresh = [(tp.topic, tp.partition) for tp in committed if tp.offset < 0]
        if fresh:
            ends = end_offsets(self.endpoints, self.settings, fresh, timeout=self.timeout * 2)
            use_low = self.start.mode == "beginning"
            for tp in committed:
                bounds = ends.get((tp.topic, tp.partition))
                if bounds is not None:
                    tp.offset = bounds.low if use_low else bounds.high
        consumer.assign(committed)

    def batches(self) -> Iterator[list[TailRecord]]:
        """Matching records, a batch per poll; an empty batch when nothing arrived."""
        consumer = self._consumer = self._open()
        remaining = self.count
        try:
            if not self.follow and self._assigned == self._done:
                return
            while True:
                messages = next_batch(consumer, self.batch_size, self.poll_timeout)
                batch = self._select(messages)
                if remaining is not None and len(batch) >= remaining:
                    batch = batch[:remaining]
                    remaining = 0
                elif remaining is not None:
                    remaining -= len(batch)
                for record in batch:
                    self.stats.shown[record.topic] += 1
                yield batch
                if remaining == 0:
                    return
                if not self.follow and self._assigned <= self._done:
                    return
        finally:
            self.close()

    def written(self, records: Sequence[TailRecord]) -> None:
        """Group mode: store the offsets past ``records``, which the caller has written out.

        Only stored offsets are committed (periodically and on close), so records read
        but never written (the reader of a pipe went away) are not consumed for the group.
        """
        consumer = self._consumer
        if self.group is None or consumer is None or not records:
            return
        ends: dict[Partition, int] = {}
        for record in records:
            key = (record.topic, record.partition)
            ends[key] = max(ends.get(key, 0), record.offset + 1)
        consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()])

    def _select(self, messages: list[Message]) -> list[TailRecord]:
        out: list[TailRecord] = []
        filters = self.filters
        track_end = not self.follow
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
            if filters.types:
                header_type = record.header(HEADER_TYPE)
                if header_type is not None and not filters.type_matches(header_type.decode()):
                    continue
            _decode(record)
            if filters.types and not filters.type_matches(
                record.event["type"] if record.event is not None else None
            ):
                continue
            if record.problem is not None:
                self.stats.invalid += 1
            out.append(record)
        return out

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


def _decode(record: TailRecord) -> None:
    value = record.value
    if value is None:
        record.problem = "empty value (a tombstone)"
        return
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        record.problem = f"not JSON ({exc})"
        return
    problem = envelope_problem(obj)
    if problem is not None:
        record.problem = f"not a CloudEvent: {problem}"
        return
    record.event = obj
    # A CloudEvent the registry rejects is shown, with the warning (consumers dead-letter it).
    try:
        validate_registered(obj["type"], obj["data"], obj.get("dataschema"))
    except (UnknownEventType, InvalidEvent) as exc:
        record.problem = exc.message
