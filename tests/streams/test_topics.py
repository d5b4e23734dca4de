"""Topic administration against the real broker."""

from __future__ import annotations

import pytest

from devctl.config.schema import TopicSpec
from devctl.errors import NotFound, OperationFailed, UnsupportedOperation
from devctl.streams.topics import TopicAdmin


def test_create_describe_delete(stack, unique) -> None:  # type: ignore[no-untyped-def]
    admin = TopicAdmin(stack.endpoints, stack.settings)
    name = f"t-{unique}"
    admin.create(TopicSpec(name, 2, 1, {"retention.ms": "60000"}))
    desc = admin.describe(name)
    assert [p.partition for p in desc.partitions] == [0, 1]
    assert desc.configs.get("retention.ms") == "60000"
    with pytest.raises(OperationFailed, match="already exists"):
        admin.create(TopicSpec(name, 2))
    admin.delete(name)
    with pytest.raises(NotFound):
        admin.describe(name)
    with pytest.raises(NotFound):
        admin.delete(name)


def test_plan_and_apply(stack, unique) -> None:  # type: ignore[no-untyped-def]
    admin = TopicAdmin(stack.endpoints, stack.settings)
    existing = f"have-{unique}"
    admin.create(TopicSpec(existing, 2))
    specs = [
        TopicSpec(f"new-{unique}", 2),
        TopicSpec(existing, 2),
        TopicSpec(existing, 4),
        TopicSpec(existing, 1),
        TopicSpec(existing, 2, config={"retention.ms": "1234"}),
    ]
    actions = [(r.topic, r.action) for r in admin.plan(specs)]
    assert actions == [
        (f"new-{unique}", "create"),
        (existing, "unchanged"),
        (existing, "unsupported"),  # Tansu cannot add partitions
        (existing, "unsupported"),  # nobody can remove them
        (existing, "differs"),
    ]
    rows = admin.apply(admin.plan([specs[0], specs[4]]))
    assert [r.result for r in rows] == ["created", "updated"]
    assert admin.configs(existing)["retention.ms"] == "1234"
    assert [r.action for r in admin.plan([specs[0], specs[4]])] == ["unchanged", "unchanged"]
    for name in (existing, f"new-{unique}"):
        admin.delete(name)


def test_growing_a_topic_says_the_broker_cannot(stack, unique) -> None:  # type: ignore[no-untyped-def]
    admin = TopicAdmin(stack.endpoints, stack.settings)
    with pytest.raises(UnsupportedOperation, match="CreatePartitions"):
        admin.grow(f"any-{unique}", 6)


def test_list_counts_messages_with_true_end_offsets(stack, unique) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka import Producer

    from devctl.clients.kafka_client import producer_conf

    admin = TopicAdmin(stack.endpoints, stack.settings)
    name = f"count-{unique}"
    admin.create(TopicSpec(name, 1))
    producer = Producer(producer_conf(stack.endpoints, stack.settings, **{"linger.ms": 100}))
    for index in range(25):
        producer.produce(name, value=str(index).encode(), partition=0)
    assert producer.flush(10) == 0
    summary = {s.name: s for s in admin.summaries()}[name]
    assert summary.messages == 25
    assert not summary.configured
    assert {s.name for s in admin.summaries() if s.configured} >= {"user-events", "user-events.dlq"}
    admin.delete(name)
