"""Event checks: envelope round trip, dead-lettering, restart from committed offsets.

Records written here carry the ``devctl-check`` header, so DevConnect's consumers
skip them. The dead-letter and restart checks use topics of their own (deleted
afterwards) and a runtime told to process check records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import weakref
from collections.abc import Iterator

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic

from devctl.checks import CheckContext, CheckFailed, check, expect
from devctl.checks.kafka_checks import CHECK_HEADER
from devctl.clients.kafka_client import consumer_conf, fetch_metadata, kafka_reason
from devctl.events import Headers
from devctl.events.consumer import (
    DLQ_OFFSET,
    DLQ_REASON,
    DLQ_TOPIC,
    ConsumerRuntime,
    HandlerContext,
    dead_letter_topic,
)
from devctl.events.envelope import HEADER_ID, HEADER_TYPE, Event, decode_event, iso_millis
from devctl.events.producer import EventProducer
from devctl.events.registry import REGISTRY

MARK: Headers = [(CHECK_HEADER, b"1")]
ACTIVITY = "devconnect.analytics.activity"

# One producer per `devctl test` run: an idempotent producer's start costs ~0.5 s.
_producers: weakref.WeakKeyDictionary[CheckContext, EventProducer] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def _quiet_runtime() -> Iterator[None]:
    """The runtime logs each dead letter as a warning; in a check that is the expected outcome."""
    logger = logging.getLogger("devctl.events.consumer")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _producer(ctx: CheckContext) -> EventProducer:
    producer = _producers.get(ctx)
    if producer is None:
        producer = _producers[ctx] = EventProducer(ctx.endpoints, ctx.settings)
        ctx.defer(producer.close, what="the checks' event producer")
    return producer


def _read_at(ctx: CheckContext, topic: str, partition: int, offset: int) -> object:
    """The record at (topic, partition, offset), read by assignment (no group join)."""
    consumer = Consumer(consumer_conf(ctx.endpoints, ctx.settings, group_id=f"{ctx.run_id}-read"))
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + ctx.timeout * 2
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None and msg.offset() == offset:
                return msg
        raise CheckFailed(
            f"{topic}[{partition}]@{offset} not read back within {ctx.timeout * 2:g}s"
        )
    finally:
        consumer.close()


def _private_topics(ctx: CheckContext, name: str) -> tuple[str, str]:
    """A one-partition topic and its dead-letter topic, deleted when the checks end."""
    topic = f"{ctx.run_id}-{name}"
    dlq = dead_letter_topic(ctx.settings, topic)
    futures = ctx.admin.create_topics([NewTopic(topic, 1, 1), NewTopic(dlq, 1, 1)])
    for created in (topic, dlq):
        futures[created].result(timeout=ctx.timeout)
    ctx.defer(
        lambda: [
            f.result(timeout=ctx.timeout) for f in ctx.admin.delete_topics([topic, dlq]).values()
        ],
        what=f"topics {topic} and {dlq}",
    )
    return topic, dlq


def _forget_group(ctx: CheckContext, group: str) -> None:
    def delete() -> None:
        try:
            ctx.admin.delete_consumer_groups([group], request_timeout=ctx.timeout)[group].result(
                timeout=ctx.timeout
            )
        except Exception as exc:
            raise RuntimeError(
                f"could not delete consumer group {group}: {kafka_reason(exc)}"
            ) from exc

    ctx.defer(delete, what=f"consumer group {group}")


def _one_off_runtime(
    ctx: CheckContext, topic: str, group: str, producer: EventProducer
) -> ConsumerRuntime:
    """A runtime pinned to a private topic's partition 0 that takes the check's own
    records (they carry the check header), with no idempotency guard."""
    return ConsumerRuntime(
        ctx.endpoints,
        ctx.settings,
        group=group,
        partitions=[(topic, 0)],
        redis_client=ctx.redis,
        idempotency=False,
        skip_check_records=False,
        lag_interval=0,
        stall_limit=ctx.timeout * 2,  # a server that hangs mid-check ends it
        producer=producer,
    )


def _committed(ctx: CheckContext, group: str, topic: str) -> int:
    consumer = Consumer(consumer_conf(ctx.endpoints, ctx.settings, group_id=group))
    try:
        return int(consumer.committed([TopicPartition(topic, 0)], timeout=ctx.timeout)[0].offset)
    finally:
        consumer.close()


@check("events", "envelope round trip through Kafka", gate=True)
def envelope_round_trip(ctx: CheckContext) -> str:
    """Publish a registry event to its real topic; read it back; the envelope must be intact."""
    spec = REGISTRY[ACTIVITY]
    metadata, _ = fetch_metadata(ctx.admin, ctx.endpoints, ctx.timeout)
    # Checked first: the embedded broker would create a missing topic on produce.
    expect(spec.topic in metadata.topics, f"{spec.topic} is missing (run `devctl topics apply`)")
    data = {"userId": ctx.run_id, "action": "devctl.check", "properties": {"text": "é✓"}}
    future = _producer(ctx).publish(ACTIVITY, data, headers=MARK)
    try:
        delivery = future.result(timeout=ctx.timeout * 2)
    except TimeoutError:
        raise CheckFailed(
            f"no delivery report from {spec.topic} within {ctx.timeout * 2:g}s"
        ) from None
    msg = _read_at(ctx, spec.topic, delivery.partition, delivery.offset)
    event = decode_event(msg.value())  # type: ignore[attr-defined]
    headers = dict(msg.headers() or [])  # type: ignore[attr-defined]
    expect(event.id == delivery.event_id, f"id {event.id}, published {delivery.event_id}")
    expect(
        event.type == ACTIVITY and event.subject == ctx.run_id,
        f"type/subject {event.type}/{event.subject}",
    )
    expect(event.data == data, f"data came back as {event.data}")
    expect(event.dataschema == spec.dataschema, f"dataschema {event.dataschema}")
    expect(
        headers.get(HEADER_TYPE) == ACTIVITY.encode(),
        f"{HEADER_TYPE} header {headers.get(HEADER_TYPE)!r}",
    )
    expect(
        headers.get(HEADER_ID) == event.id.encode(),
        f"{HEADER_ID} header {headers.get(HEADER_ID)!r}",
    )
    expect(msg.key() == ctx.run_id.encode(), f"key {msg.key()!r}, expected the user id")  # type: ignore[attr-defined]
    return f"{spec.topic}[{delivery.partition}]@{delivery.offset}"


@check("events", "invalid event routed to the dead-letter topic")
def invalid_to_dlq(ctx: CheckContext) -> str:
    topic, dlq = _private_topics(ctx, "dlq")
    group = f"{ctx.run_id}-dlq"
    _forget_group(ctx, group)
    garbage = b'{"not": "a CloudEvent"}'
    producer = _producer(ctx)
    producer.publish_raw(topic, garbage, key=b"k", headers=MARK)
    producer.publish(
        ACTIVITY, {"userId": ctx.run_id, "action": "sentinel"}, topic=topic, headers=MARK
    )
    expect(producer.flush(ctx.timeout * 2) == 0, "records not delivered")
    runtime = _one_off_runtime(ctx, topic, group, producer)
    runtime.on(ACTIVITY, lambda _event: runtime.stop())
    with _quiet_runtime():
        counters = runtime.run(install_signals=False, until_idle=ctx.timeout * 2)
    expect(
        counters.dead_lettered == 1, f"{counters.dead_lettered} records dead-lettered, expected 1"
    )
    msg = _read_at(ctx, dlq, 0, 0)
    headers = dict(msg.headers() or [])  # type: ignore[attr-defined]
    expect(msg.value() == garbage, f"dead letter holds {msg.value()!r}")  # type: ignore[attr-defined]
    expect(
        headers.get(DLQ_REASON) == b"invalid-envelope", f"dlq-reason {headers.get(DLQ_REASON)!r}"
    )
    expect(
        headers.get(DLQ_TOPIC) == topic.encode() and headers.get(DLQ_OFFSET) == b"0",
        "dlq-topic/offset wrong",
    )
    committed = _committed(ctx, group, topic)
    expect(committed == 2, f"committed offset {committed}: the consumer did not move on")
    return f"{dlq}: reason invalid-envelope; consumer moved on"


@check("events", "consumer restart: no loss, no duplicate effect")
def restart_exactly_once(ctx: CheckContext) -> str:
    """Handle 4 of 6 events; rewind the commit by 2 (a crash before commit); restart.

    Every event's effect (a Redis RPUSH through ctx.tx) must be there exactly once.
    """
    topic, _dlq = _private_topics(ctx, "restart")
    group = f"{ctx.run_id}-restart"
    _forget_group(ctx, group)
    effects = ctx.key("effects")
    ids: list[str] = []
    producer = _producer(ctx)
    for index in range(6):
        future = producer.publish(
            ACTIVITY,
            {"userId": ctx.run_id, "action": f"step{index}"},
            topic=topic,
            headers=MARK,
        )
        ids.append(future.result(timeout=ctx.timeout * 2).event_id or "")
    from devctl.state.keys import KeySchema

    keys = KeySchema(ctx.settings.redis.key_prefix)
    ctx.defer(
        lambda: ctx.redis.delete(*[keys.idempotency(group, i) for i in ids]),
        what=f"the idempotency markers of group {group}",
    )

    def runtime(stop_after: int) -> ConsumerRuntime:
        handled: list[str] = []
        rt = ConsumerRuntime(
            ctx.endpoints,
            ctx.settings,
            group=group,
            partitions=[(topic, 0)],
            redis_client=ctx.redis,
            keys=keys,
            skip_check_records=False,
            batch_size=1,
            lag_interval=0,
            stall_limit=ctx.timeout * 2,  # a server that hangs mid-check ends it
        )

        def effect(event: Event, hctx: HandlerContext) -> None:
            hctx.tx.rpush(effects, event.id)
            handled.append(event.id)
            if len(handled) >= stop_after or event.id == ids[-1]:
                rt.stop()

        rt.on(ACTIVITY, effect)
        return rt

    first = runtime(4).run(install_signals=False, until_idle=ctx.timeout * 2)
    expect(first.processed == 4, f"first run handled {first.processed} events, expected 4")
    expect(_committed(ctx, group, topic) == 4, "first run did not commit offset 4")
    # A crash after the effects of events 2 and 3 but before their commit:
    rewind = Consumer(consumer_conf(ctx.endpoints, ctx.settings, group_id=group))
    try:
        rewind.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    finally:
        rewind.close()
    second = runtime(10).run(install_signals=False, until_idle=ctx.timeout * 2)
    seen = ctx.redis.lrange(effects, 0, -1)
    expect(
        second.duplicates == 2,
        f"restart skipped {second.duplicates} redelivered events, expected 2",
    )
    expect(seen == ids, f"effects {len(seen)} (expected each of the 6 once, in order): {seen}")
    expect(_committed(ctx, group, topic) == 6, "restart did not commit to the end")
    return "6 events, 2 redelivered and skipped, each effect once"


@check("events", "binary-mode and legacy records are read as typed events")
def other_writers(ctx: CheckContext) -> str:
    """A binary-mode CloudEvent (how the SDKs' ``to_binary`` writes one) and a record of
    today's Node backend reach the handler as typed events, the legacy one with its
    derived id; neither is dead-lettered."""
    from devctl.events.legacy import legacy_event_id

    topic, _dlq = _private_topics(ctx, "modes")
    group = f"{ctx.run_id}-modes"
    _forget_group(ctx, group)
    binary_id = f"{ctx.run_id}-binary"
    binary: Headers = [
        *MARK,
        ("ce_specversion", b"1.0"),
        ("ce_id", binary_id.encode()),
        ("ce_source", b"/devctl/test"),
        ("ce_type", ACTIVITY.encode()),
        ("content-type", b"application/json"),
    ]
    data = json.dumps({"userId": ctx.run_id, "action": "binary"}).encode()
    legacy = json.dumps(
        {
            "eventType": "MESSAGE_ANALYTICS",
            "timestamp": iso_millis(int(time.time() * 1000)),
            "data": {"userId": ctx.run_id, "messageCount": 2},
        }
    ).encode()
    producer = _producer(ctx)
    producer.publish_raw(topic, data, key=ctx.run_id.encode(), headers=binary)
    producer.publish_raw(topic, legacy, key=ctx.run_id.encode(), headers=MARK)
    expect(producer.flush(ctx.timeout * 2) == 0, "records not delivered")
    seen: list[Event] = []
    runtime = _one_off_runtime(ctx, topic, group, producer)

    def handle(event: Event) -> None:
        seen.append(event)
        if len(seen) == 2:
            runtime.stop()

    runtime.on(ACTIVITY, handle)
    with _quiet_runtime():
        counters = runtime.run(install_signals=False, until_idle=ctx.timeout * 2)
    expect(counters.dead_lettered == 0, f"{counters.dead_lettered} records dead-lettered")
    expect(len(seen) == 2, f"{len(seen)} of 2 events reached the handler")
    first, second = seen
    expect(first.id == binary_id, f"binary-mode event came with id {first.id}")
    expect(first.data.get("action") == "binary", f"binary-mode data {first.data}")
    expected_id = legacy_event_id(topic, 0, 1, legacy)
    expect(
        second.legacy == "MESSAGE_ANALYTICS" and second.id == expected_id,
        f"legacy record read as {second.type} {second.id} ({second.legacy})",
    )
    return "binary mode and MESSAGE_ANALYTICS read as devconnect.analytics.activity"
