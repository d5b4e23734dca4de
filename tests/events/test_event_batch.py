"""publish_batch and the fast field validation behind it.

The fast path validates into plain dicts through a typed-dict schema derived from each
payload model; these tests hold it to the model: same verdicts, same bytes. Then the
batch against the real broker: every event delivered once with its own id, nothing sent
when one item is bad, a batch too big for the queue refused whole, failures surfaced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME
from pydantic import ConfigDict

from devctl.clients.endpoints import Endpoints
from devctl.engines.local import LocalEngine
from devctl.engines.processes import free_port
from devctl.events.envelope import HEADER_ID, decode_event, encode_event
from devctl.events.errors import (
    DeliveryFailed,
    InvalidEventData,
    ProducerQueueFull,
    UnknownEventType,
)
from devctl.events.ids import block_ids, uuid7, uuid7_block
from devctl.events.producer import Delivery, EventProducer
from devctl.events.registry import REGISTRY
from devctl.events.schemas import Id, Payload, conversation_id
from devctl.streams.offsets import end_offsets
from tests.conftest import stack_settings
from tests.events.test_event_producer import read_all

TS = "2026-11-25T18:00:00.123456+01:00"

# A valid payload of every registered type (with optional fields left out and set).
VALID: dict[str, list[dict[str, Any]]] = {
    "devconnect.user.signup": [
        {"userId": "u1", "firstName": "  Ada ", "emailId": " ada@example.com "},
        {
            "userId": "u1",
            "firstName": "Ada",
            "lastName": "L",
            "emailId": "a@b.io",
            "membershipTier": "gold",
        },
    ],
    "devconnect.user.login": [{"userId": "u1"}, {"userId": "u1", "userAgent": 'curl "x"'}],
    "devconnect.user.logout": [{"userId": "u1"}, {"userId": "u1", "reason": "expired"}],
    "devconnect.user.online": [{"userId": "u1"}, {"userId": "u1", "connections": 3}],
    "devconnect.user.offline": [{"userId": "u1", "lastSeen": TS}],
    "devconnect.user.profile_updated": [{"userId": "u1", "changed": ["about", "skills"]}],
    "devconnect.message.sent": [
        {
            "messageId": "m1",
            "fromUserId": "b",
            "toUserId": "a",
            "text": " hi \u00e9\U0001f642 ",
            "ts": TS,
        },
    ],
    "devconnect.message.delivered": [
        {"messageId": "m1", "fromUserId": "a", "toUserId": "b", "deliveredAt": TS}
    ],
    "devconnect.message.read": [
        {"messageId": "m1", "fromUserId": "a", "toUserId": "b", "readAt": TS}
    ],
    "devconnect.connection.requested": [
        {"requestId": "r1", "fromUserId": "a", "toUserId": "b", "status": "ignored"}
    ],
    "devconnect.connection.accepted": [{"requestId": "r1", "fromUserId": "a", "toUserId": "b"}],
    "devconnect.connection.rejected": [{"requestId": "r1", "fromUserId": "a", "toUserId": "b"}],
    "devconnect.notification.created": [
        {"notificationId": "n1", "userId": "u1", "kind": "system", "title": " Hello "},
        {
            "notificationId": "n1",
            "userId": "u1",
            "kind": "message",
            "title": "t",
            "body": None,
            "actorId": "u2",
            "refId": "m1",
        },
    ],
    "devconnect.analytics.activity": [
        {"userId": "u1", "action": "profile.view"},
        {
            "userId": "u1",
            "action": "search",
            "properties": {"q": "rust", "n": 3, "x": 1.5, "ok": True, "none": None},
        },
    ],
}


def broken(name: str, sample: dict[str, Any]) -> list[Any]:
    """Invalid variants of a valid sample: each breaks one rule."""
    out: list[Any] = [
        {**sample, "unexpected": 1},  # extra fields are forbidden
        {k: v for k, v in list(sample.items())[1:]},  # the first (required) field missing
        [sample],  # not an object
    ]
    for id_field in ("userId", "fromUserId", "messageId"):
        if id_field in sample:
            out.append({**sample, id_field: "has:colon"})  # ids never hold ':'
    if "toUserId" in sample:
        out.append({**sample, "toUserId": sample["fromUserId"]})  # the cross-field check
    for time_field in ("ts", "lastSeen", "deliveredAt", "readAt"):
        if time_field in sample:
            out.append({**sample, time_field: "2026-11-25T18:00:00"})  # naive time
    return out


def test_every_registered_type_has_samples() -> None:
    assert set(VALID) == set(REGISTRY)


@pytest.mark.parametrize("name", sorted(VALID))
def test_fast_validation_gives_the_models_verdicts_and_bytes(name: str) -> None:
    spec = REGISTRY[name]
    for sample in VALID[name]:
        model_json = spec.to_json(spec.validate(sample))
        fields = spec.validate_fields(sample)
        assert spec.fields_json(fields) == model_json
        assert [spec.fields_json(f) for f in spec.validate_many([sample, sample])] == [
            model_json,
            model_json,
        ]
        assert spec.key_of(fields) == spec.key(spec.validate(sample))
        for bad in broken(name, sample):
            with pytest.raises(InvalidEventData):
                spec.validate(bad)
            with pytest.raises(InvalidEventData):
                spec.validate_fields(bad)
            with pytest.raises(InvalidEventData, match="event 2: "):
                spec.validate_many([sample, bad])


def test_encoded_events_are_json_and_keep_escaped_overrides() -> None:
    encoded = encode_event(
        "devconnect.user.login",
        {"userId": "u1", "userAgent": 'say "hi"\n'},
        source='/api "x"',
        key='k"1',
        subject="s\\1",
    )
    obj = json.loads(encoded.value)
    assert (obj["source"], obj["subject"], obj["partitionkey"]) == ('/api "x"', "s\\1", 'k"1')
    assert obj["data"] == {"userId": "u1", "userAgent": 'say "hi"\n'}
    assert encoded.key == b'k"1'


def test_validate_many_names_each_bad_item_and_accepts_typed_payloads() -> None:
    spec = REGISTRY["devconnect.message.sent"]
    good = VALID["devconnect.message.sent"][0]
    with pytest.raises(InvalidEventData) as caught:
        spec.validate_many([good, {**good, "text": ""}, good, {**good, "toUserId": "b"}])
    message = caught.value.message
    assert "event 2: text:" in message and "nothing was sent" in message
    # Rules across fields are checked once every item has valid fields.
    with pytest.raises(InvalidEventData, match="event 4: data: Value error, fromUserId and"):
        spec.validate_many([good, good, good, {**good, "toUserId": "b"}])
    many = [{**good, "messageId": f"m{i}", "text": ""} for i in range(15)]
    with pytest.raises(InvalidEventData, match=r"\.\.\. and 5 more") as caught:
        spec.validate_many(many)
    assert len(caught.value.errors) == 15
    typed = spec.validate(good)
    assert spec.validate_many([typed, good]) == [spec.validate_fields(good)] * 2


def test_uuid7_blocks_are_valid_unique_and_ordered_against_single_ids() -> None:
    before = uuid7()
    prefix, first, ms = uuid7_block(1000)
    ids = block_ids(prefix, first, 1000)
    after = uuid7()
    assert len(set(ids)) == 1000
    assert [before, *ids, after] == sorted([before, *ids, after])
    for text in (ids[0], ids[-1]):
        parsed = uuid.UUID(text)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert parsed.int >> 80 == ms
    assert uuid7_block(0)[0] != prefix
    with pytest.raises(ValueError):
        uuid7_block(-1)


def test_publish_batch_delivers_every_event_once_with_its_own_id(
    stack: Any, make_topic: Any, producer: EventProducer
) -> None:
    topic = make_topic("batch")
    count = 1300  # crosses chunk boundaries (512)
    items = [
        {"messageId": f"m{i}", "fromUserId": f"u{i % 7}", "toUserId": f"u{i % 7 + 1}",
         "text": f"hello {i}", "ts": TS}
        for i in range(count)
    ]  # fmt: skip
    batch = producer.publish_batch("devconnect.message.sent", items, topic=topic)
    result = batch.result(timeout=30)
    assert (result.total, result.delivered, result.failures, result.ok) == (count, count, [], True)
    assert producer.stats.queued == count and producer.stats.delivered == count

    records = read_all(stack, topic, 3)
    assert len(records) == count
    ids = batch.event_ids
    by_id = {}
    now_ms = time.time() * 1000
    key_partitions: dict[bytes, set[int]] = {}
    for msg in records:
        # The producer calls librdkafka positionally: the partitioner chose by key, the
        # record is stamped now (CreateTime), the headers are there (checked below).
        key_partitions.setdefault(msg.key(), set()).add(msg.partition())
        kind, stamp = msg.timestamp()
        assert kind == TIMESTAMP_CREATE_TIME and now_ms - 60_000 < stamp <= now_ms + 1000
        event = decode_event(msg.value())  # validates envelope and data against the registry
        headers = dict(msg.headers())
        assert headers[HEADER_ID].decode() == event.id
        assert headers["event-type"] == b"devconnect.message.sent"
        assert msg.key().decode() == event.partitionkey
        assert event.partitionkey == conversation_id(
            event.data["fromUserId"], event.data["toUserId"]
        )
        assert event.subject == event.data["fromUserId"]
        by_id[event.id] = (msg.partition(), msg.offset(), event)
    assert sorted(by_id) == sorted(ids) and len(by_id) == count
    assert all(len(p) == 1 for p in key_partitions.values())
    assert len({p for ps in key_partitions.values() for p in ps}) > 1  # spread by key
    # The batch's order survives per key (conversation): ids increase with offsets.
    for key in {e.partitionkey for _p, _o, e in by_id.values()}:
        same = sorted((o, i) for i, (_p, o, e) in by_id.items() if e.partitionkey == key)
        assert [i for _o, i in same] == sorted(i for _o, i in same)
    # Position i of the input is event_ids[i].
    assert by_id[ids[42]][2].data["messageId"] == "m42"


def test_publish_batch_with_one_bad_item_sends_nothing(
    stack: Any, make_topic: Any, producer: EventProducer
) -> None:
    topic = make_topic("batch-bad", partitions=1)
    items = [{"userId": f"u{i}"} for i in range(5)]
    items[3] = {"userId": "u3", "userAgent": 7}
    with pytest.raises(InvalidEventData, match="event 4: userAgent"):
        producer.publish_batch("devconnect.user.login", items, topic=topic)
    with pytest.raises(UnknownEventType):
        producer.publish_batch("devconnect.user.nope", items[:1], topic=topic)
    assert producer.stats.queued == 0
    assert producer.publish_batch("devconnect.user.login", [], topic=topic).result(1).total == 0
    producer.flush(5)
    ends = end_offsets(stack.endpoints, stack.settings, [(topic, 0)])
    assert ends[(topic, 0)].high == 0


def test_publish_batch_per_event_callbacks_and_asyncio(
    stack: Any, make_topic: Any, producer: EventProducer
) -> None:
    topic = make_topic("batch-cb", partitions=1)
    seen: list[Delivery] = []
    items = [{"userId": f"u{i}"} for i in range(10)]

    async def main() -> Any:
        batch = producer.publish_batch(
            "devconnect.user.login", items, topic=topic, on_delivery=seen.append
        )
        return batch, await asyncio.wait_for(batch.wait_async(), timeout=20)

    batch, result = asyncio.run(main())
    assert result.delivered == 10 and result.ok
    assert sorted(d.offset for d in seen) == list(range(10))
    assert [d.event_id for d in sorted(seen, key=lambda d: d.offset)] == batch.event_ids
    assert all(d.ok and d.type == "devconnect.user.login" for d in seen)
    assert producer.stats.delivered == 10


def test_a_batch_larger_than_the_free_queue_is_refused_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No broker: what is queued fails at close, visibly; what did not fit was never queued."""
    endpoints = Endpoints(
        "local", "redis://127.0.0.1:1/0", f"127.0.0.1:{free_port()}", caps=LocalEngine.caps
    )
    settings = stack_settings(Path("/nonexistent"), Path.cwd(), **{"events.producer_queue_size": 5})
    failures: list[Delivery] = []
    producer = EventProducer(endpoints, settings, on_delivery=failures.append)
    login = "devconnect.user.login"
    with pytest.raises(ProducerQueueFull, match=r"\(5 of 5 free") as caught:
        producer.publish_batch(login, [{"userId": f"u{i}"} for i in range(6)])
    assert "split the batch" in (caught.value.hint or "")
    queued = producer.publish_batch(login, [{"userId": f"q{i}"} for i in range(3)])
    with pytest.raises(ProducerQueueFull, match="a batch of 3 events does not fit"):
        producer.publish_batch(login, [{"userId": f"r{i}"} for i in range(3)])
    assert producer.stats.rejected == 9 and producer.stats.queued == 3

    # "block": the batch waits for room, then reports what found none as failed.
    producer.queue_full, producer.block_timeout = "block", 0.3
    started = time.perf_counter()
    partial = producer.publish_batch(login, [{"userId": f"b{i}"} for i in range(4)])
    assert 0.3 <= time.perf_counter() - started < 2
    assert producer.stats.queued == 5 and producer.stats.rejected == 11
    with caplog.at_level(logging.ERROR, logger="devctl.events.producer"):
        assert producer.close(timeout=0.2) == 5
    first, second = queued.result(timeout=2), partial.result(timeout=2)
    assert (first.delivered, len(first.failures)) == (0, 3)
    assert (second.delivered, len(second.failures)) == (0, 4)
    assert sorted(f.event_id or "" for f in second.failures) == partial.event_ids
    assert any("local queue is full" in (f.error or "") for f in second.failures)
    # Queued then purged: failed; never queued: rejected; the books balance.
    stats = producer.stats
    assert (stats.failed, stats.rejected, stats.in_flight, len(failures)) == (5, 11, 0, 7)
    assert sum("delivery of devconnect.user.login" in r.getMessage() for r in caplog.records) == 7


@pytest.mark.slow
def test_batch_failures_surface_with_the_broker_down_and_deliver_when_it_is_back(
    own_stack: Any,
) -> None:
    stack = own_stack("batch-outage", delivery_timeout_ms=3000)
    topic, producer, login = stack.topic, stack.producer(), "devconnect.user.login"
    assert producer.publish_batch(login, [{"userId": "before"}], topic=topic).result(10).ok

    stack.engine.down()
    lost = producer.publish_batch(login, [{"userId": f"lost{i}"} for i in range(5)], topic=topic)
    result = lost.result(timeout=20)
    assert result.delivered == 0 and len(result.failures) == 5
    assert all("timed out" in (f.error or "") for f in result.failures)
    assert sorted(f.event_id or "" for f in result.failures) == lost.event_ids
    assert producer.stats.failed == 5

    kept = producer.publish_batch(login, [{"userId": f"kept{i}"} for i in range(5)], topic=topic)
    stack.engine.up()
    stack.create_topic()
    result = kept.result(timeout=30)
    assert result.ok and result.delivered == 5
    assert producer.stats.delivered == 6 and producer.stats.failed == 5


def test_close_while_a_batch_is_queueing_settles_every_event() -> None:
    """No broker: close() stops the batch at its next chunk; nothing is left unreported."""
    endpoints = Endpoints(
        "local", "redis://127.0.0.1:1/0", f"127.0.0.1:{free_port()}", caps=LocalEngine.caps
    )
    settings = stack_settings(
        Path("/nonexistent"), Path.cwd(), **{"events.producer_queue_size": 500_000}
    )
    producer = EventProducer(endpoints, settings)
    items = [{"userId": f"u{i}"} for i in range(200_000)]
    batches: list[Any] = []
    publisher = threading.Thread(
        target=lambda: batches.append(producer.publish_batch("devconnect.user.login", items))
    )
    publisher.start()
    while producer.batches_under_way == 0 and publisher.is_alive():
        time.sleep(0.001)
    producer.close(timeout=0.1)
    publisher.join(timeout=30)
    result = batches[0].result(timeout=10)
    assert result.delivered == 0 and len(result.failures) == result.total == 200_000
    stats = producer.stats
    assert stats.queued + stats.rejected == 200_000 and stats.in_flight == 0
    assert stats.failed == stats.queued  # queued then purged at close
    with pytest.raises(DeliveryFailed, match="closed"):
        producer.publish_batch("devconnect.user.login", items[:1])


def test_envelope_text_follows_the_schema_version() -> None:
    v1 = REGISTRY["devconnect.user.login"]
    v2 = dataclasses.replace(v1, version=2)
    for spec, version in ((v1, 1), (v2, 2), (v1, 1)):
        obj = json.loads(encode_event(spec, {"userId": "u1"}, source="/x").value)
        assert obj["dataschema"] == f"urn:devconnect:schema:devconnect.user.login:{version}"


def test_the_registry_refuses_keys_that_could_need_escaping() -> None:
    class Loose(Payload):
        # Python's re lets "$" match before a trailing newline: "u1\n" would pass.
        model_config = ConfigDict(extra="forbid", regex_engine="python-re")
        userId: Id

    with pytest.raises(TypeError, match="must be ids"):
        dataclasses.replace(REGISTRY["devconnect.user.login"], model=Loose)


def test_in_flight_stays_exact_while_batches_are_queued_and_delivered(
    stack: Any, make_topic: Any
) -> None:
    """Stats are counted per chunk, before a report can count a delivery: never negative."""
    topic = make_topic("batch-stats", partitions=1)
    producer = EventProducer(stack.endpoints, stack.settings, queue_full="error")
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(producer.stats.in_flight)
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        items = [{"userId": f"u{i}"} for i in range(45_000)]
        batches = [producer.publish_batch("devconnect.user.login", items, topic=topic)]
        batches.append(producer.publish_batch("devconnect.user.login", items, topic=topic))
        results = [b.result(timeout=60) for b in batches]
    finally:
        stop.set()
        sampler.join()
        producer.close(5)
    assert all(r.ok and r.delivered == 45_000 for r in results)
    assert len(samples) > 10 and min(samples) >= 0
    stats = producer.stats
    assert (stats.queued, stats.delivered, stats.failed, stats.in_flight) == (90_000, 90_000, 0, 0)
