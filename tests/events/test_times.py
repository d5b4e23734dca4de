"""Times in event payloads: any offset in, UTC with ``Z`` out, on every path.

docs/events.md promises that times come back normalised (``...Z``). The model path
(``validate``/``to_json``, decoding) and the fast path (``validate_fields``/
``validate_many``, what ``publish`` and ``publish_batch`` use) must agree byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from devctl.events.envelope import decode_event, encode_event
from devctl.events.producer import EventProducer
from devctl.events.registry import REGISTRY
from devctl.events.schemas import Id, Payload
from tests.events.test_event_producer import read_all

# (given, expected): the same instants written with three offsets.
TIMES = [
    ("2026-11-25T18:00:00+02:00", "2026-11-25T16:00:00Z"),
    ("2026-11-25T18:00:00.250-05:30", "2026-11-25T23:30:00.250000Z"),
    ("2026-11-25T18:00:00Z", "2026-11-25T18:00:00Z"),
]

# Every registered type with a time field, that field, and a valid payload around it.
TIMED: dict[str, tuple[str, dict[str, Any]]] = {
    "devconnect.user.offline": ("lastSeen", {"userId": "u1"}),
    "devconnect.message.sent": (
        "ts",
        {"messageId": "m1", "fromUserId": "a", "toUserId": "b", "text": "hi"},
    ),
    "devconnect.message.delivered": (
        "deliveredAt",
        {"messageId": "m1", "fromUserId": "a", "toUserId": "b"},
    ),
    "devconnect.message.read": ("readAt", {"messageId": "m1", "fromUserId": "a", "toUserId": "b"}),
}


def test_every_time_field_of_the_registry_is_covered_here() -> None:
    timed = {
        name: field
        for name, spec in REGISTRY.items()
        for field, prop in spec.model.model_json_schema()["properties"].items()
        if prop.get("format") == "date-time"
    }
    assert timed == {name: field for name, (field, _) in TIMED.items()}


@pytest.mark.parametrize("name", sorted(TIMED))
@pytest.mark.parametrize(("given", "expected"), TIMES)
def test_model_and_fast_path_normalise_to_utc(name: str, given: str, expected: str) -> None:
    spec = REGISTRY[name]
    field, rest = TIMED[name]
    data = {**rest, field: given}
    model_json = spec.to_json(spec.validate(data))
    assert json.loads(model_json)[field] == expected
    assert spec.fields_json(spec.validate_fields(data)) == model_json
    assert [spec.fields_json(f) for f in spec.validate_many([data, data])] == [model_json] * 2
    payload = spec.validate(data)
    assert getattr(payload, field).utcoffset() == timedelta(0)
    # Decoding (what consumers do) types the payload with the normalised time too.
    event = decode_event(encode_event(name, data, source="/test").value)
    assert event.data[field] == expected
    assert getattr(event.payload, field) == datetime.fromisoformat(expected)


def test_aware_datetime_objects_are_normalised_and_naive_ones_refused() -> None:
    spec = REGISTRY["devconnect.user.offline"]
    given = datetime(2026, 11, 25, 18, 0, tzinfo=timezone(timedelta(hours=2)))
    fields = spec.validate_fields({"userId": "u1", "lastSeen": given})
    assert fields["lastSeen"] == given and fields["lastSeen"].tzinfo is UTC
    assert json.loads(spec.fields_json(fields))["lastSeen"] == "2026-11-25T16:00:00Z"
    with pytest.raises(Exception, match="timezone"):
        spec.validate_fields({"userId": "u1", "lastSeen": datetime(2026, 11, 25, 18, 0)})


def test_the_registry_refuses_a_time_field_that_is_not_normalised() -> None:
    from pydantic import AwareDatetime

    class Loose(Payload):
        userId: Id
        lastSeen: AwareDatetime

    with pytest.raises(TypeError, match=r"UtcDatetime: \['lastSeen'\]"):
        dataclasses.replace(REGISTRY["devconnect.user.offline"], model=Loose)


def test_publish_and_publish_batch_send_utc_times(stack: Any, make_topic: Any) -> None:
    topic = make_topic("times", partitions=1)
    name = "devconnect.message.sent"
    field, rest = TIMED[name]
    items = [{**rest, "messageId": f"m{i}", field: given} for i, (given, _) in enumerate(TIMES)]
    producer = EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 5})
    try:
        for item in items:
            producer.publish(name, item, topic=topic).result(timeout=10)
        producer.publish_batch(name, items, topic=topic).result(timeout=10)
    finally:
        producer.close(5)
    sent = [decode_event(msg.value()) for msg in read_all(stack, topic, 1)]
    expected = [want for _, want in TIMES]
    assert [e.data[field] for e in sent] == expected * 2  # publish, then publish_batch
    assert all(getattr(e.payload, field).tzinfo is UTC for e in sent)
