"""Partition offsets: the one end-offset helper everything else uses.

The embedded broker (Tansu 0.6) reports a partition's high watermark as the base
offset of its last record batch plus one: too low whenever that batch held more
than one record (10 records in one batch report 1, not 10). Its fetch responses
do carry the true end, so the helper reads from the reported end minus one and
takes the offset of the end-of-partition event. On Apache Kafka the same read
returns the reported value, so one code path serves every engine.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import common_conf, kafka_reason
from devctl.config.loader import Settings
from devctl.errors import KafkaUnavailable

Partition = tuple[str, int]


@dataclass(frozen=True)
class PartitionOffsets:
    topic: str
    partition: int
    low: int
    high: int  # the true end: the offset the next record will get
    reported_high: int  # what the broker's watermark said
    # False when the end could not be confirmed in time: `high` is then only the
    # broker's report, which may be too low on Tansu.
    exact: bool = True

    @property
    def messages(self) -> int:
        return max(self.high - self.low, 0)


def offsets_consumer(endpoints: Endpoints, settings: Settings) -> Consumer:
    """A consumer that only assigns partitions: it never joins a group or commits."""
    conf = common_conf(endpoints, settings)
    conf.update(
        {
            # A group id is required by librdkafka even when nothing is committed.
            "group.id": f"devctl-offsets-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    return Consumer(conf)


def end_offsets(
    endpoints: Endpoints,
    settings: Settings,
    partitions: Iterable[Partition],
    *,
    timeout: float = 10.0,
    consumer: Consumer | None = None,
) -> dict[Partition, PartitionOffsets]:
    """Low and true end offsets of each partition.

    ``consumer`` may be passed to reuse one; its assignment is replaced and
    cleared again, so it must not be a subscribed group member.
    """
    own = consumer is None
    consumer = consumer or offsets_consumer(endpoints, settings)
    try:
        return _end_offsets(consumer, list(partitions), timeout, endpoints)
    finally:
        if own:
            consumer.close()


def _end_offsets(
    consumer: Consumer, partitions: list[Partition], timeout: float, endpoints: Endpoints
) -> dict[Partition, PartitionOffsets]:
    deadline = time.monotonic() + timeout
    reported: dict[Partition, tuple[int, int]] = {}
    for topic, partition in partitions:
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=remaining, cached=False
            )
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"Kafka at {endpoints.kafka_brokers} did not return offsets of "
                f"{topic}[{partition}]: {kafka_reason(exc)}"
            ) from exc
        reported[(topic, partition)] = (low, high)

    return _confirm_ends(consumer, reported, deadline)


def end_offsets_within(
    endpoints: Endpoints,
    settings: Settings,
    partitions: Iterable[Partition],
    *,
    timeout: float,
    consumer: Consumer | None = None,
) -> dict[Partition, PartitionOffsets] | None:
    """Like ``end_offsets``, but never much past ``timeout``, however many partitions.

    None when the watermarks could not all be read in time (or the broker refused);
    a partition whose true end was not confirmed in time has ``exact=False``. For
    listings that must stay fast and must not show a wrong number: the caller
    shows "unknown" instead.
    """
    own = consumer is None
    consumer = consumer or offsets_consumer(endpoints, settings)
    deadline = time.monotonic() + timeout
    wanted = list(partitions)
    reported: dict[Partition, tuple[int, int]] = {}
    try:
        # ListOffsets for a chunk of partitions at once (end_offsets asks one
        # partition at a time); chunks keep each request short so the deadline holds.
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            lows = _list_offsets(consumer, chunk, OFFSET_BEGINNING, deadline)
            highs = _list_offsets(consumer, chunk, OFFSET_END, deadline)
            if lows is None or highs is None:
                return None
            reported.update({key: (lows[key], highs[key]) for key in chunk})
        return _confirm_ends(consumer, reported, deadline)
    finally:
        if own:
            consumer.close()


_CHUNK = 1000


def _list_offsets(
    consumer: Consumer, chunk: list[Partition], which: int, deadline: float
) -> dict[Partition, int] | None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    try:
        # A logical offset (-1 end, -2 beginning) as the "timestamp" asks ListOffsets
        # for the latest or earliest offset, as get_watermark_offsets does.
        found = consumer.offsets_for_times(
            [TopicPartition(t, p, which) for t, p in chunk], timeout=remaining
        )
    except KafkaException:
        return None
    if any(tp.error is not None or tp.offset < 0 for tp in found):
        return None
    return {(str(tp.topic), int(tp.partition)): int(tp.offset) for tp in found}


def _confirm_ends(
    consumer: Consumer, reported: dict[Partition, tuple[int, int]], deadline: float
) -> dict[Partition, PartitionOffsets]:
    true_end = {key: high for key, (_low, high) in reported.items()}
    # Only a non-empty partition can hide records behind its reported end.
    pending = {key for key, (low, high) in reported.items() if high > low}
    if pending:
        consumer.assign([TopicPartition(t, p, reported[(t, p)][1] - 1) for t, p in sorted(pending)])
        try:
            while pending and time.monotonic() < deadline:
                message = consumer.poll(0.05)
                if message is None:
                    continue
                key = (str(message.topic()), int(message.partition() or 0))
                offset = int(message.offset() or 0)
                error = message.error()
                if error is None:
                    true_end[key] = max(true_end[key], offset + 1)
                elif error.code() == KafkaError._PARTITION_EOF:
                    # The end-of-partition event carries the offset it stopped at.
                    true_end[key] = max(true_end[key], offset)
                    pending.discard(key)
        finally:
            consumer.unassign()
    return {
        key: PartitionOffsets(key[0], key[1], low, true_end[key], high, key not in pending)
        for key, (low, high) in reported.items()
    }
