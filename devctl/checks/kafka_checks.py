"""Kafka checks: metadata, configured topics, leftovers of interrupted runs, produce/consume
round trips, group resume."""

from __future__ import annotations

import json
import time

from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from devctl.checks import CheckContext, CheckFailed, check, expect, is_leftover
from devctl.clients.kafka_client import consumer_conf, fetch_metadata, kafka_reason, producer_conf
from devctl.events.envelope import (
    CONTENT_TYPE,
    HEADER_CONTENT_TYPE,
    HEADER_ID,
    HEADER_TYPE,
    envelope_problem,
)
from devctl.events.ids import uuid7
from devctl.events.markers import CHECK_EVENT_TYPE, CHECK_HEADER, check_event

# Re-exported: event_checks imports CHECK_HEADER from this module.
__all__ = ["CHECK_HEADER"]


@check("kafka", "metadata", gate=True)
def metadata(ctx: CheckContext) -> str:
    meta, latency = fetch_metadata(ctx.admin, ctx.endpoints, ctx.timeout)
    return f"{len(meta.brokers)} broker(s), {len(meta.topics)} topics, {latency:.1f} ms"


@check("kafka", "configured topics exist")
def topics_exist(ctx: CheckContext) -> str:
    meta, _ = fetch_metadata(ctx.admin, ctx.endpoints, ctx.timeout)
    missing = [t.name for t in ctx.settings.topics if t.name not in meta.topics]
    expect(not missing, f"missing: {', '.join(missing)} (run `devctl topics apply`)")
    fewer = [
        f"{t.name} has {len(meta.topics[t.name].partitions)} partitions, config says {t.partitions}"
        for t in ctx.settings.topics
        if len(meta.topics[t.name].partitions) != t.partitions
    ]
    expect(not fewer, "; ".join(fewer))
    return f"{len(ctx.settings.topics)} topics"


@check("kafka", "leftovers of interrupted runs removed")
def leftovers(ctx: CheckContext) -> str:
    """Delete the topics and groups of runs that could not clean up (killed, crashed)."""
    topics, groups = remove_leftovers(ctx)
    if not topics and not groups:
        return "none"
    return f"removed {len(topics)} topic(s), {len(groups)} group(s)"


def remove_leftovers(ctx: CheckContext, now: float | None = None) -> tuple[list[str], list[str]]:
    """The test topics and consumer groups of runs older than LEFTOVER_AGE, deleted.

    A run still going is younger than that, so its resources are never touched.
    """
    listed = ctx.admin.list_topics(timeout=ctx.timeout).topics
    topics = sorted(name for name in listed if is_leftover(name, now))
    found = ctx.admin.list_consumer_groups(request_timeout=ctx.timeout).result(timeout=ctx.timeout)
    groups = sorted(g.group_id for g in found.valid if is_leftover(g.group_id, now))
    problems: list[str] = []
    if groups:
        futures = ctx.admin.delete_consumer_groups(groups, request_timeout=ctx.timeout)
        problems += _failures(futures, ctx.timeout)
    if topics:
        futures = ctx.admin.delete_topics(topics, request_timeout=ctx.timeout)
        problems += _failures(futures, ctx.timeout)
    expect(not problems, "could not delete: " + "; ".join(problems))
    return topics, groups


def _failures(futures: dict[str, object], timeout: float) -> list[str]:
    out = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)  # type: ignore[attr-defined]
        except Exception as exc:
            out.append(f"{name}: {kafka_reason(exc)}")
    return out


@check("kafka", "produce -> consume on every topic")
def round_trip(ctx: CheckContext) -> str:
    """Produce one check event per configured topic, then read each back at its offset.

    Each record is a CloudEvent of the check type (devctl.events.markers), so any
    CloudEvents reader of these topics parses it, and devctl's readers skip it.
    """
    producer = Producer(producer_conf(ctx.endpoints, ctx.settings, **{"linger.ms": 0}))
    delivered: dict[str, tuple[int, int]] = {}
    errors: list[str] = []

    def report(err: KafkaError | None, msg: object) -> None:
        topic = msg.topic()  # type: ignore[attr-defined]
        if err is not None:
            errors.append(f"{topic}: {err.str()}")
        else:
            delivered[topic] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]

    topics = [t.name for t in ctx.settings.topics]
    ids = {topic: uuid7() for topic in topics}
    for topic in topics:
        producer.produce(
            topic,
            key=ctx.run_id.encode(),
            value=check_event(ctx.run_id, topic, ids[topic]),
            headers=_check_headers(ids[topic]),
            on_delivery=report,
        )
    remaining = producer.flush(ctx.timeout * 2)
    expect(not errors, "delivery failed: " + "; ".join(errors))
    expect(remaining == 0, f"{remaining} records not delivered within {ctx.timeout * 2:g}s")

    consumer = Consumer(consumer_conf(ctx.endpoints, ctx.settings, group_id=f"{ctx.run_id}-reader"))
    try:
        consumer.assign([TopicPartition(t, p, o) for t, (p, o) in delivered.items()])
        pending = set(delivered)
        deadline = time.monotonic() + ctx.timeout * 2
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            topic = str(msg.topic())
            if topic not in pending or msg.offset() != delivered[topic][1]:
                continue
            if msg.key() != ctx.run_id.encode():
                raise CheckFailed(f"{topic}: key {msg.key()!r}, expected {ctx.run_id!r}")
            _expect_check_event(
                topic, msg.value(), dict(msg.headers() or []), ctx.run_id, ids[topic]
            )
            pending.discard(topic)
        expect(
            not pending, f"not read back within {ctx.timeout * 2:g}s: {', '.join(sorted(pending))}"
        )
    finally:
        consumer.close()
    return f"{len(topics)} topics"


def _check_headers(event_id: str) -> list[tuple[str, str | bytes | None]]:
    return [
        (CHECK_HEADER, b"1"),
        (HEADER_CONTENT_TYPE, CONTENT_TYPE.encode()),
        (HEADER_TYPE, CHECK_EVENT_TYPE.encode()),
        (HEADER_ID, event_id.encode()),
    ]


def _expect_check_event(
    topic: str,
    value: bytes | None,
    headers: dict[str, str | bytes | None],
    run_id: str,
    event_id: str,
) -> None:
    """The record read back is the check event written: envelope, data and headers."""
    try:
        event = json.loads(value or b"")
    except ValueError:
        raise CheckFailed(f"{topic}: value {value!r} is not JSON") from None
    problem = envelope_problem(event)
    expect(problem is None, f"{topic}: not a CloudEvent: {problem}")
    expect(
        event["type"] == CHECK_EVENT_TYPE and event["id"] == event_id,
        f"{topic}: type/id {event['type']}/{event['id']}, expected {CHECK_EVENT_TYPE}/{event_id}",
    )
    expect(event["data"] == {"run": run_id, "topic": topic}, f"{topic}: data {event['data']!r}")
    wanted = dict(_check_headers(event_id))
    got = {name: headers.get(name) for name in wanted}
    expect(got == wanted, f"{topic}: headers {headers}, expected {wanted}")


@check("kafka", "consumer group commit and resume")
def group_resume(ctx: CheckContext) -> str:
    """Commit after two of four records; a new consumer of the group resumes at the third."""
    topic = f"{ctx.run_id}-group"
    group = f"{ctx.run_id}-group"
    futures = ctx.admin.create_topics([NewTopic(topic, 1, 1)], request_timeout=ctx.timeout)
    futures[topic].result(timeout=ctx.timeout)
    ctx.defer(
        lambda: ctx.admin.delete_topics([topic])[topic].result(timeout=ctx.timeout),
        what=f"topic {topic}",
    )

    producer = Producer(producer_conf(ctx.endpoints, ctx.settings))
    for index in range(4):
        producer.produce(topic, key=b"k", value=f"record-{index}".encode(), partition=0)
    expect(producer.flush(ctx.timeout) == 0, "records not delivered")

    def read(consumer: Consumer, count: int) -> list[bytes]:
        values: list[bytes] = []
        deadline = time.monotonic() + ctx.timeout * 2
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                values.append(msg.value() or b"")
        return values

    # Partitions are assigned (not subscribed) so the check does not wait for a
    # group join; the committed offsets still live in the group.
    first = Consumer(consumer_conf(ctx.endpoints, ctx.settings, group_id=group))
    ctx.defer(lambda: _delete_group(ctx, group), what=f"consumer group {group}")
    try:
        first.assign([TopicPartition(topic, 0, 0)])
        got = read(first, 2)
        expect(got == [b"record-0", b"record-1"], f"first consumer read {got}")
        first.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    finally:
        first.close()

    second = Consumer(consumer_conf(ctx.endpoints, ctx.settings, group_id=group))
    try:
        committed = second.committed([TopicPartition(topic, 0)], timeout=ctx.timeout)[0].offset
        expect(committed == 2, f"committed offset is {committed}, expected 2")
        second.assign([TopicPartition(topic, 0, OFFSET_STORED)])
        got = read(second, 2)
        expect(
            got == [b"record-2", b"record-3"],
            f"resumed consumer read {got}, expected records 2 and 3",
        )
    finally:
        second.close()
    return "resumed at offset 2"


def _delete_group(ctx: CheckContext, group: str) -> None:
    try:
        ctx.admin.delete_consumer_groups([group], request_timeout=ctx.timeout)[group].result(
            timeout=ctx.timeout
        )
    except Exception as exc:
        raise RuntimeError(f"could not delete consumer group {group}: {kafka_reason(exc)}") from exc
