"""The producer against real brokers: futures, asyncio, nothing sent on bad input,
a bounded queue, and failures surfaced when the broker goes away and comes back."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import consumer_conf
from devctl.engines.local import LocalEngine
from devctl.engines.processes import free_port
from devctl.events.envelope import decode_event
from devctl.events.errors import (
    DeliveryFailed,
    InvalidEventData,
    ProducerQueueFull,
    UnknownEventType,
)
from devctl.events.producer import Delivery, DeliveryFuture, EventProducer
from devctl.streams.offsets import end_offsets
from tests.conftest import stack_settings


def read_all(stack: Any, topic: str, partitions: int) -> list[Any]:
    consumer = Consumer(
        consumer_conf(
            stack.endpoints, stack.settings, group_id="reader", **{"enable.partition.eof": True}
        )
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out, eof, deadline = [], set(), time.monotonic() + 10
        while len(eof) < partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error() is not None:
                eof.add(msg.partition())
                continue
            out.append(msg)
        return out
    finally:
        consumer.close()


def test_publish_returns_at_once_and_the_future_resolves(
    stack: Any, make_topic: Any, producer: EventProducer
) -> None:
    topic = make_topic("pub")
    seen: list[Delivery] = []
    started = time.perf_counter()
    futures = [
        producer.publish(
            "devconnect.user.login", {"userId": f"u{i}"}, topic=topic, on_delivery=seen.append
        )
        for i in range(50)
    ]
    queued_in = time.perf_counter() - started
    results = [f.result(timeout=10) for f in futures]
    assert queued_in < 0.5  # queueing never waited for the broker (linger alone is 20 ms)
    assert all(r.ok and r.topic == topic and r.offset >= 0 for r in results)
    assert {r.event_id for r in results} == {r.event_id for r in seen}
    assert producer.stats.delivered >= 50 and producer.stats.failed == 0
    records = read_all(stack, topic, 3)
    by_id = {decode_event(m.value()).id: m for m in records}
    for result in results:
        msg = by_id[result.event_id]
        assert (msg.partition(), msg.offset()) == (result.partition, result.offset)
        assert msg.key() == result.key.encode()  # type: ignore[union-attr]
        assert dict(msg.headers())["event-id"] == result.event_id.encode()  # type: ignore[union-attr]
    # One user's events share a key, hence a partition, hence an order.
    u1 = [r for r in results if r.key == "u1"]
    assert len({r.partition for r in u1}) == 1


def test_unknown_type_or_invalid_data_sends_nothing(
    stack: Any, make_topic: Any, producer: EventProducer
) -> None:
    topic = make_topic("nothing", partitions=1)
    with pytest.raises(UnknownEventType):
        producer.publish("devconnect.user.nope", {"userId": "u1"}, topic=topic)
    with pytest.raises(InvalidEventData, match="userId"):
        producer.publish("devconnect.user.login", {"user": "u1"}, topic=topic)
    assert producer.stats.queued == 0
    assert producer.flush(5) == 0
    offsets = end_offsets(stack.endpoints, stack.settings, [(topic, 0)])
    assert offsets[(topic, 0)].high == 0


def test_publish_async_from_an_event_loop(
    stack: Any, make_topic: Any, producer: EventProducer
) -> None:
    topic = make_topic("async", partitions=1)

    async def main() -> tuple[list[Delivery], float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        beat = asyncio.create_task(ticker())
        deliveries = await asyncio.gather(
            *(
                producer.publish_async("devconnect.user.online", {"userId": f"a{i}"}, topic=topic)
                for i in range(20)
            )
        )
        beat.cancel()
        return list(deliveries), ticks

    deliveries, ticks = asyncio.run(main())
    assert sorted(d.offset for d in deliveries) == list(range(20))
    assert ticks > 0  # the loop kept running while deliveries were pending


def test_full_queue_policies_and_purge_on_close(caplog: pytest.LogCaptureFixture) -> None:
    """No broker at all: three events fill the queue; the policy decides about the fourth."""
    endpoints = Endpoints(
        "local", "redis://127.0.0.1:1/0", f"127.0.0.1:{free_port()}", caps=LocalEngine.caps
    )
    settings = stack_settings(Path("/nonexistent"), Path.cwd(), **{"events.producer_queue_size": 3})
    failures: list[Delivery] = []
    producer = EventProducer(endpoints, settings, on_delivery=failures.append)
    futures = [producer.publish("devconnect.user.login", {"userId": f"q{i}"}) for i in range(3)]
    started = time.perf_counter()
    with pytest.raises(ProducerQueueFull, match="3 events waiting"):
        producer.publish("devconnect.user.login", {"userId": "q3"})
    assert time.perf_counter() - started < 0.2  # "error": at once
    assert producer.stats.rejected == 1 and producer.stats.queued == 3

    producer.queue_full, producer.block_timeout = "block", 0.3
    started = time.perf_counter()
    with pytest.raises(ProducerQueueFull, match=r"after waiting 0\.3s"):
        producer.publish("devconnect.user.login", {"userId": "q4"})
    assert 0.3 <= time.perf_counter() - started < 1.5
    assert producer.stats.rejected == 2

    with caplog.at_level(logging.ERROR, logger="devctl.events.producer"):
        assert producer.close(timeout=0.2) == 3
    # Nothing silently dropped: every queued event failed visibly.
    for future in futures:
        with pytest.raises(DeliveryFailed):
            future.result(timeout=1)
    assert producer.stats.failed == 3 and len(failures) == 3 and not any(f.ok for f in failures)
    assert sum("delivery of devconnect.user.login" in r.getMessage() for r in caplog.records) == 3


@pytest.mark.slow
def test_broker_down_surfaces_failures_then_delivers_what_was_queued(
    own_stack: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An engine of this test's own on a fixed port, stopped and started again."""
    stack = own_stack("outage", delivery_timeout_ms=3000)
    topic, login = stack.topic, "devconnect.user.login"
    errors: list[str] = []
    outcomes: list[Delivery] = []
    producer = stack.producer(on_delivery=outcomes.append, on_error=errors.append)
    assert producer.publish(login, {"userId": "before"}, topic=topic).result(10).ok

    stack.engine.down()
    with caplog.at_level(logging.ERROR, logger="devctl.events.producer"):
        lost = [producer.publish(login, {"userId": f"lost{i}"}, topic=topic) for i in range(5)]
        for future in lost:
            with pytest.raises(DeliveryFailed, match="timed out"):
                future.result(timeout=15)
    assert producer.stats.failed == 5
    assert [o.ok for o in outcomes].count(False) == 5
    assert sum("delivery of" in r.getMessage() for r in caplog.records) == 5
    assert errors, "the client-level error (broker down) reached on_error"

    kept = [producer.publish(login, {"userId": f"kept{i}"}, topic=topic) for i in range(5)]
    stack.engine.up()  # same ports: the producer reconnects by itself
    stack.create_topic()
    deliveries = [f.result(timeout=20) for f in kept]
    assert all(d.ok for d in deliveries)
    assert producer.stats.delivered == 6 and producer.stats.failed == 5
    # The restarted broker forgot the idempotent producer: the client was replaced and
    # the refused events sent again (surfaced through on_error, not lost).
    assert producer.stats.rebuilds <= 1 and producer.stats.resent <= 5
    if producer.stats.rebuilds:
        assert any("failed fatally" in e for e in errors)
    users = [
        decode_event(m.value()).data["userId"]
        for m in read_all_at(stack.endpoints, stack.settings, topic)
    ]
    assert users == [f"kept{i}" for i in range(5)]  # in order, once each


@pytest.mark.slow
def test_producer_recovers_when_the_broker_restarts_with_nothing_in_flight(
    own_stack: Any,
) -> None:
    """kill -9 of an idle broker: librdkafka loops on UNKNOWN_PRODUCER_ID without a fatal
    error; the producer notices, replaces its client and delivers what is queued."""
    stack = own_stack("restart", delivery_timeout_ms=30000)
    topic, producer, login = stack.topic, stack.producer(), "devconnect.user.login"
    assert producer.publish(login, {"userId": "before"}, topic=topic).result(10).ok

    stack.kill_broker()  # nothing in flight
    stack.start_again()
    stack.create_topic()

    started = time.monotonic()
    queued = [producer.publish(login, {"userId": f"after{i}"}, topic=topic) for i in range(3)]
    deliveries = [f.result(timeout=25) for f in queued]
    assert all(d.ok for d in deliveries)
    assert time.monotonic() - started < 20  # well before delivery_timeout
    assert producer.stats.rebuilds == 1 and producer.stats.failed == 0
    records = read_all_at(stack.endpoints, stack.settings, topic)
    users = [decode_event(m.value()).data["userId"] for m in records]
    assert users == [f"after{i}" for i in range(3)]
    # Sent again through the new client, with their headers (delivery reports do not
    # carry headers: the producer rebuilt them).
    for msg, future in zip(records, queued, strict=True):
        headers = dict(msg.headers() or [])
        assert headers.get("event-id") == (future.event_id or "").encode()
        assert headers.get("event-type") == login.encode()


def read_all_at(endpoints: Endpoints, settings: Any, topic: str) -> list[Any]:
    consumer = Consumer(consumer_conf(endpoints, settings, group_id="restart-reader"))
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        out, deadline = [], time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None and out:
                break
            if msg is not None and msg.error() is None:
                out.append(msg)
        return out
    finally:
        consumer.close()


def test_close_fails_events_still_waiting_to_be_sent_again(stack: Any) -> None:
    """After a fatal error, events wait in the re-send list; close() must resolve them."""
    producer = EventProducer(stack.endpoints, stack.settings)
    producer._send_again = lambda: None  # type: ignore[method-assign]  # never re-sent
    future = DeliveryFuture(producer._reports, "ev-1", "devconnect.user.login")
    future.generation = -1  # queued on a client since replaced: its purge is taken back
    refused = KafkaError(KafkaError._PURGE_QUEUE)
    message = SimpleNamespace(topic=lambda: "some-topic", value=lambda: b"{}", key=lambda: b"k")
    assert producer._clients.take_back(future, refused, message)  # type: ignore[arg-type]
    producer.close(0.5)
    with pytest.raises(DeliveryFailed, match="closed before it was sent again"):
        future.result(timeout=2)
    assert producer.stats.failed == 1


def test_a_dead_broker_does_not_flood_the_log(caplog: pytest.LogCaptureFixture) -> None:
    # Found in review: 4-160 lines a second from an API instance while Kafka was down.
    endpoints = Endpoints(
        "local", "redis://127.0.0.1:1/0", f"127.0.0.1:{free_port()}", caps=LocalEngine.caps
    )
    settings = stack_settings(Path("/nonexistent"), Path.cwd())
    caplog.set_level(logging.INFO, logger="devctl.events")
    with EventProducer(endpoints, settings) as producer:
        producer.publish_raw("user-events", b"x")
        time.sleep(3)
        producer.close(0)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    kinds = {(r.name, r.levelno, r.getMessage().split(":")[0]) for r in lines}
    assert lines, "the outage is still reported"
    assert len(lines) <= 2 * len(kinds) + 2, [r.getMessage() for r in lines]
