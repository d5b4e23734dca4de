"""Offsets by time: times and relative durations, and the first offset at or after one.

Offsets by timestamp go through the broker's ListOffsets-by-time first. Tansu 0.6
answers it with offset 0 whatever the time, so every answer is verified against
the records themselves (the record at the offset is at or after the time, the
one before it is earlier); an answer that fails the check is replaced by a
binary search over the partition's record timestamps, which assumes they grow
with offsets (true for events stamped by their producer at send time).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from devctl.clients.endpoints import Endpoints
from devctl.config.loader import Settings
from devctl.errors import UsageError
from devctl.streams.offsets import Partition, PartitionOffsets, end_offsets, offsets_consumer

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_time(text: str, *, now_ms: int | None = None, field: str | None = None) -> int:
    """'10m', '2h', '1d' (ago) or an ISO-8601 time (UTC if no zone) -> epoch milliseconds.

    ``field`` names the input the text came from, for the error.
    """
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        return now - int(float(match.group(1)) * _UNIT_MS[match.group(2)])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        examples = ("10m", "2h", "1d", "2026-11-25T18:00:00Z")
        raise UsageError(
            f"'{text}' is neither a duration nor an ISO-8601 time",
            hint=f"e.g. {', '.join(examples)}",
            field=field,
            data={"value": text, "examples": examples},
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def offsets_for_time(
    endpoints: Endpoints,
    settings: Settings,
    partitions: Iterable[Partition],
    timestamp_ms: int,
    *,
    timeout: float = 10.0,
    ends: dict[Partition, PartitionOffsets] | None = None,
) -> dict[Partition, int]:
    """The first offset at or after ``timestamp_ms`` in each partition (its true end if none)."""
    wanted = list(partitions)
    consumer = offsets_consumer(endpoints, settings)
    try:
        if ends is None:
            ends = end_offsets(endpoints, settings, wanted, timeout=timeout, consumer=consumer)
        try:
            answers = consumer.offsets_for_times(
                [TopicPartition(t, p, timestamp_ms) for t, p in wanted], timeout=timeout
            )
            answered = {(tp.topic, tp.partition): tp.offset for tp in answers}
        except KafkaException:
            answered = {}
        out: dict[Partition, int] = {}
        for key in wanted:
            bounds = ends[key]
            if bounds.high <= bounds.low:
                out[key] = bounds.high
                continue
            answer = answered.get(key, -1)
            candidate = bounds.high if answer is None or answer < 0 else answer
            reader = _TimestampReader(consumer, key, timeout)
            if _verified(reader, candidate, bounds, timestamp_ms):
                out[key] = candidate
            else:
                out[key] = _search(reader, bounds, timestamp_ms)
        return out
    finally:
        consumer.close()


class _TimestampReader:
    def __init__(self, consumer: Consumer, partition: Partition, timeout: float):
        self.consumer = consumer
        self.topic, self.partition = partition
        self.timeout = timeout

    def at(self, offset: int) -> tuple[int, int] | None:
        """(offset, timestamp ms) of the first record at or after ``offset``; None at the end."""
        self.consumer.assign([TopicPartition(self.topic, self.partition, offset)])
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                msg = self.consumer.poll(0.05)
                if msg is None or msg.topic() != self.topic or msg.partition() != self.partition:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return None
                    continue
                found = msg.offset()
                if found is None or found < offset:
                    continue
                return found, msg.timestamp()[1]
            return None
        finally:
            self.consumer.unassign()


def _verified(
    reader: _TimestampReader, candidate: int, bounds: PartitionOffsets, timestamp_ms: int
) -> bool:
    if not bounds.low <= candidate <= bounds.high:
        return False
    if candidate < bounds.high:
        found = reader.at(candidate)
        if found is None or found[1] < timestamp_ms:
            return False
    if candidate > bounds.low:
        before = reader.at(candidate - 1)
        if before is not None and before[0] == candidate - 1 and before[1] >= timestamp_ms:
            return False
    return True


def _search(reader: _TimestampReader, bounds: PartitionOffsets, timestamp_ms: int) -> int:
    low, high = bounds.low, bounds.high
    while low < high:
        middle = (low + high) // 2
        found = reader.at(middle)
        if found is None or found[1] >= timestamp_ms:
            high = middle
        else:
            low = found[0] + 1
    return low
