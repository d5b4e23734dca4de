"""Keys land where Java, kafka-python and kafkajs producers put them (murmur2), on the real broker."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

with warnings.catch_warnings():
    # kafka-python's protocol modules use importlib.resources APIs deprecated since 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import murmur2

from devctl.events.producer import Delivery, EventProducer

KEYS = [f"user-{n}" for n in range(1000)]


def kafka_python_partition(key: bytes, partitions: int) -> int:
    # kafka-python's DefaultPartitioner for a keyed record: the Java client's formula.
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("partitions", [3, 6, 12])
def test_keys_land_on_the_java_compatible_partition(
    stack: Any, make_topic: Any, partitions: int
) -> None:
    topic = make_topic(f"murmur{partitions}", partitions=partitions)
    deliveries: list[Delivery] = []
    # Default producer settings: whatever devctl's producers use everywhere.
    with EventProducer(stack.endpoints, stack.settings) as producer:
        for key in KEYS:
            producer.publish_raw(topic, b"v", key=key.encode(), on_delivery=deliveries.append)
        assert producer.flush(30) == 0
    assert len(deliveries) == len(KEYS) and all(d.ok for d in deliveries)
    ours = {d.key: d.partition for d in deliveries}
    theirs = {key: kafka_python_partition(key.encode(), partitions) for key in KEYS}
    wrong = {k: (ours[k], theirs[k]) for k in KEYS if ours[k] != theirs[k]}
    assert not wrong, f"{len(wrong)} keys on another partition, e.g. {list(wrong.items())[:5]}"
    assert len(set(ours.values())) == partitions  # every partition gets keys


def test_events_are_placed_by_their_registry_key(stack: Any, make_topic: Any) -> None:
    topic = make_topic("murmur-events", partitions=6)
    with EventProducer(stack.endpoints, stack.settings) as producer:
        futures = [
            producer.publish("devconnect.user.login", {"userId": f"u{n}"}, topic=topic)
            for n in range(200)
        ]
        deliveries = [f.result(timeout=30) for f in futures]
        # publish_batch hands records to librdkafka through its own (positional) path.
        batch = producer.publish_batch(
            "devconnect.user.logout", [{"userId": f"u{n}"} for n in range(200)], topic=topic,
            on_delivery=deliveries.append,
        )  # fmt: skip
        assert batch.result(timeout=30).ok
    assert len(deliveries) == 400
    for delivery in deliveries:
        assert delivery.key is not None
        assert delivery.partition == kafka_python_partition(delivery.key.encode(), 6)
