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

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

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
