"""Poison records on the real broker: no record stops tail or the consumer runtime.

Written by an independent client (kafka-python) where it can, by librdkafka where
kafka-python refuses (a record with neither key nor value).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from confluent_kafka import Producer
from kafka import KafkaProducer

from devctl.clients.kafka_client import producer_conf
from devctl.events.producer import EventProducer
from tests.events.conftest import DEVCTL
from tests.events.test_consumer_runtime import committed, dead_letters, runtime

LOGIN = "devconnect.user.login"
NESTED = b"[" * 200_000 + b"]" * 200_000
BIG = json.dumps({"blob": "x" * 900_000}).encode()  # ~900 KB: valid JSON, not an event


def _good(user: str) -> bytes:
    from devctl.events.envelope import encode_event

    return encode_event(LOGIN, {"userId": user}, source="/test").value


def _write_poison(stack: Any, topic: str) -> list[tuple[str, bytes | None]]:
    """good0, nested, good1, 900 KB, bad UTF-8, tombstone, null key, good2 on partition 0."""
    client = KafkaProducer(bootstrap_servers=stack.endpoints.kafka_brokers, max_request_size=2**21)
    records: list[tuple[str, bytes | None, bytes | None]] = [
        ("good0", b"u0", _good("u0")),
        ("nested", b"u0", NESTED),
        ("good1", b"u1", _good("u1")),
        ("big", b"u1", BIG),
        ("bad-utf8", b"u1", b'{"specversion": "1.0", "id": "\xff\xfe"}'),
    ]
    try:
        for _name, key, value in records:
            client.send(topic, key=key, value=value, partition=0).get(timeout=20)
    finally:
        client.close()
    # kafka-python refuses a record with neither key nor value: librdkafka writes it.
    last = _good("u2")
    raw = Producer(producer_conf(stack.endpoints, stack.settings))
    raw.produce(topic, value=None, key=None, partition=0)
    raw.produce(topic, value=last, key=None, partition=0)
    assert raw.flush(20) == 0
    return [(name, value) for name, _key, value in records] + [
        ("tombstone", None),
        ("good2", last),
    ]


@pytest.mark.parametrize("output", ["json", "pretty", "raw"])
def test_tail_shows_every_record_in_order_and_moves_on(
    stack: Any, make_topic: Any, devctl: Any, output: str
) -> None:
    topic = make_topic("poison", partitions=1)
    written = _write_poison(stack, topic)
    if output == "raw":
        # Text mode cannot hold the bad UTF-8 line: raw output is read as bytes.
        raw = subprocess.run(
            [*DEVCTL, "tail", topic, "--offset", "0:0", "--no-follow", "-o", "raw"],
            env={**stack.env, "NO_COLOR": "1"},
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert raw.returncode == 0, raw.stderr
        assert raw.stdout == b"".join((value or b"") + b"\n" for _name, value in written)
        assert raw.stderr.count(b"is not a valid event") == 4
        assert b"7 events shown" in raw.stderr and b"Traceback" not in raw.stderr
        return
    result = devctl("tail", topic, "--offset", "0:0", "--no-follow", "-o", output, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert f"tail: 7 events shown ({topic} 7); 4 not valid events" in result.stderr
    out = result.stdout
    if output == "json":
        lines = [json.loads(line) for line in out.splitlines()]
        assert [line["offset"] for line in lines] == list(range(7))
        warnings = {line["offset"]: line.get("warning") for line in lines}
        assert [o for o, w in warnings.items() if w] == [1, 3, 4, 5]
        assert "nested too deeply" in warnings[1]
        assert "not UTF-8" in warnings[4] and "tombstone" in warnings[5]
        assert [line["event"]["subject"] for line in lines if not line.get("warning")] == [
            "u0",
            "u1",
            "u2",
        ]
        assert lines[6]["key"] is None
    else:
        shown = out.splitlines()
        assert len(shown) == 7
        assert [i for i, line in enumerate(shown) if "⚠" in line] == [1, 3, 4, 5]
        assert " 0:1 ⚠ not a valid event (value nested too deeply to decode)" in shown[1]


def test_healthy_records_before_a_bad_one_are_written_first(
    stack: Any, make_topic: Any, devctl: Any
) -> None:
    """--count stops right after the nested record: the one before it is on stdout."""
    topic = make_topic("order", partitions=1)
    _write_poison(stack, topic)
    result = devctl("tail", topic, "--offset", "0:0", "--count", "2", "-o", "json")
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["event"]["subject"] == "u0" and "nested" in second["warning"]


def test_consumer_dead_letters_poison_and_moves_on(
    stack: Any, make_topic: Any, unique: str
) -> None:
    topic = make_topic("poison-rt", partitions=1, dead_letter=True)
    _write_poison(stack, topic)
    handled: list[str] = []
    rt = runtime(stack, topic, f"g-{unique}", idempotency=False)
    rt.on(LOGIN, lambda event: handled.append(event.data["userId"]))
    counters = rt.run(install_signals=False, until_idle=1.5)
    assert handled == ["u0", "u1", "u2"]
    assert counters.dead_lettered == 4
    assert committed(stack, f"g-{unique}", topic) == {0: 7}
    letters = dead_letters(stack, topic)
    reasons = [dict(m.headers())["dlq-reason"] for m in letters]
    assert reasons == [b"invalid-envelope"] * 4
    offsets = [dict(m.headers())["dlq-offset"] for m in letters]
    assert offsets == [b"1", b"3", b"4", b"5"]
    errors = [dict(m.headers())["dlq-error"].decode() for m in letters]
    assert "nested too deeply" in errors[0] and "tombstone" in errors[3]
    assert letters[0].value() == NESTED and letters[1].value() == BIG  # copied unchanged
    assert letters[3].value() is None
    # A restart does not meet the poison again: the offset moved past it.
    again = runtime(stack, topic, f"g-{unique}", idempotency=False)
    again.on(LOGIN, lambda event: handled.append(event.data["userId"]))
    assert again.run(install_signals=False, until_idle=1.0).dead_lettered == 0
    assert handled == ["u0", "u1", "u2"]


def test_an_event_on_the_wrong_topic_is_flagged(
    stack: Any, devctl: Any, producer: EventProducer, unique: str
) -> None:
    """message.sent written to user-events (publish refuses it, other clients do not)."""
    sent = {
        "fromUserId": f"a{unique}",
        "toUserId": f"b{unique}",
        "messageId": "m1",
        "text": "hi",
        "ts": "2026-11-25T18:00:00Z",
    }
    delivery = producer.publish("devconnect.message.sent", sent, topic="user-events").result(10)
    where = f"{delivery.partition}:{delivery.offset}"
    shown = devctl("tail", "user-events", "--offset", where, "--count", "1", "-o", "json")
    line = json.loads(shown.stdout)
    assert line["warning"] == "devconnect.message.sent belongs on message-events, not user-events"
    from devctl.events.consumer import ConsumerRuntime

    rt = ConsumerRuntime(
        stack.endpoints,
        stack.settings,
        group=f"wrong-{unique}",
        topics=["user-events"],
        idempotency=False,
        lag_interval=0,
    )
    rt.on("devconnect.message.sent", lambda event: pytest.fail("handled on the wrong topic"))
    from confluent_kafka import Message

    msg = Message(
        topic="user-events",
        partition=delivery.partition,
        offset=delivery.offset,
        key=delivery.key.encode() if delivery.key else None,
        value=_read_value(stack, delivery),
        headers=None,
    )
    record = rt._classify(msg)
    assert (record.action, record.reason) == ("dead", "wrong-topic")


def _read_value(stack: Any, delivery: Any) -> bytes:
    from confluent_kafka import Consumer, TopicPartition

    from devctl.clients.kafka_client import consumer_conf

    consumer = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id="wrong-reader"))
    try:
        consumer.assign([TopicPartition("user-events", delivery.partition, delivery.offset)])
        for _ in range(100):
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                return bytes(msg.value() or b"")
    finally:
        consumer.close()
    raise AssertionError("record not read back")


def test_only_devctl_check_1_is_skipped_by_the_consumer(
    stack: Any, make_topic: Any, producer: EventProducer, unique: str
) -> None:
    topic = make_topic("probe-values", partitions=1, dead_letter=True)
    for user, value in (("probe", b"1"), ("zero", b"0"), ("no", b"no")):
        producer.publish(
            LOGIN, {"userId": user}, topic=topic, headers=[("devctl-check", value)]
        ).result(10)
    handled: list[str] = []
    rt = runtime(stack, topic, f"g-{unique}", idempotency=False)
    rt.on(LOGIN, lambda event: handled.append(event.data["userId"]))
    counters = rt.run(install_signals=False, until_idle=1.0)
    assert handled == ["zero", "no"] and counters.skipped == 1
