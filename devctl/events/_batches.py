"""Batch reads without the latency of ``Consumer.consume``'s timeout.

``consume(n, timeout)`` waits for *n* records or the whole timeout, so a quiet
topic would add ``timeout`` of latency to every batch. Here: take what is ready;
if nothing is, wait for one record, then take whatever arrived with it.
"""

from __future__ import annotations

from confluent_kafka import Consumer, Message


def next_batch(consumer: Consumer, size: int, timeout: float) -> list[Message]:
    ready: list[Message] = consumer.consume(size, 0)
    if ready:
        return ready
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(size - 1, 0)] if size > 1 else [first]
