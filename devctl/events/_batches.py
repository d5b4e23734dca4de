"""Reading records: batches without ``Consumer.consume``'s latency, typed accessors.

``consume(n, timeout)`` waits for *n* records or the whole timeout, so a quiet
topic would add ``timeout`` of latency to every batch. Here: take what is ready;
if nothing is, wait for one record, then take whatever arrived with it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

# Headers as librdkafka hands them over and takes them.
Headers = list[tuple[str, str | bytes | None]]


def coordinates(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a record (always set on one without an error)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("a record without topic, partition or offset")
    return topic, partition, offset


def headers_of(msg: Message) -> Headers:
    found = msg.headers()
    if found is None:
        return []
    return list(found.items()) if isinstance(found, dict) else list(found)


def next_batch(consumer: Consumer, size: int, timeout: float) -> list[Message]:
    ready: list[Message] = consumer.consume(size, 0)
    if ready:
        return ready
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(size - 1, 0)] if size > 1 else [first]


def commit_after(consumer: Consumer, done: Iterable[tuple[str, int, int]]) -> None:
    """Commit, per partition, past the highest of the (topic, partition, offset) done."""
    ends: dict[tuple[str, int], int] = {}
    for topic, partition, offset in done:
        ends[(topic, partition)] = max(ends.get((topic, partition), -1), offset + 1)
    offsets = [TopicPartition(t, p, o) for (t, p), o in ends.items()]
    consumer.commit(offsets=offsets, asynchronous=False)


def seek_back(consumer: Consumer, undone: Iterable[tuple[str, int, int]]) -> None:
    """Seek each partition to the first of the (topic, partition, offset) not done, in order."""
    first: dict[tuple[str, int], int] = {}
    for topic, partition, offset in undone:
        first.setdefault((topic, partition), offset)
    for (topic, partition), offset in first.items():
        with contextlib.suppress(KafkaException):
            consumer.seek(TopicPartition(topic, partition, offset))


def join_timeout(conf: dict[str, object]) -> float:
    """How long a first group join may take: the session timeout and a margin."""
    return int(str(conf.get("session.timeout.ms", 45000))) / 1000 + 5


def close_consumer(
    consumer: Consumer, joined: Callable[[], bool] | None = None, timeout: float = 0.0
) -> None:
    """Close (and leave the group), letting a first join in progress finish first.

    Tansu breaks a group whose member leaves during its first join: later members
    are answered with the departed leader and never get partitions. So a member
    that has not had its first assignment yet keeps polling (up to ``timeout``)
    until it has. Records read meanwhile are neither stored nor committed.
    """
    with contextlib.suppress(KafkaException, RuntimeError):
        if joined is not None:
            deadline = time.monotonic() + timeout
            while not joined() and time.monotonic() < deadline:
                consumer.poll(0.1)
        consumer.close()
