"""Reading records: batches without ``Consumer.consume``'s latency, typed accessors.

``consume(n, timeout)`` waits for *n* records or the whole timeout, so a quiet
topic would add ``timeout`` of latency to every batch. Here: take what is ready;
if nothing is, wait for one record, then take whatever arrived with it.
"""

from __future__ import annotations

from confluent_kafka import Consumer, Message

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
