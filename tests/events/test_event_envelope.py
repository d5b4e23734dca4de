"""The envelope, UUIDv7 ids and the registry (no broker needed)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from devctl.config.loader import load_settings
from devctl.errors import EXIT_USAGE
from devctl.events.envelope import CONTENT_TYPE, decode_event, encode_event
from devctl.events.errors import InvalidEvent, InvalidEventData, UnknownEventType
from devctl.events.ids import uuid7, uuid7_time_ms
from devctl.events.registry import REGISTRY
from devctl.events.schemas import conversation_id

MESSAGE = {
    "messageId": "m1",
    "fromUserId": "zoe",
    "toUserId": "adam",
    "text": "  hello  ",
    "ts": "2026-11-25T10:00:00Z",
}


def test_uuid7_layout_time_and_order() -> None:
    before = int(time.time() * 1000)
    ids = [uuid7() for _ in range(5000)]
    after = int(time.time() * 1000)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(p.version == 7 and p.variant == uuid.RFC_4122 for p in parsed)
    assert ids == sorted(ids), "ids of one process must be strictly increasing"
    assert len(set(ids)) == len(ids)
    assert before <= uuid7_time_ms(ids[0]) <= uuid7_time_ms(ids[-1]) <= after + 1


def test_uuid7_unique_across_threads() -> None:
    out: list[str] = []

    def make() -> None:
        out.extend(uuid7() for _ in range(2000))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(out)) == 8000


def test_encode_is_a_structured_cloudevent_with_headers_and_key() -> None:
    encoded = encode_event("devconnect.message.sent", MESSAGE, source="/devconnect/api")
    body = json.loads(encoded.value)
    assert body["specversion"] == "1.0"
    assert body["type"] == "devconnect.message.sent"
    assert body["source"] == "/devconnect/api"
    assert body["subject"] == "zoe"  # the sender
    assert body["datacontenttype"] == "application/json"
    assert body["dataschema"] == "urn:devconnect:schema:devconnect.message.sent:1"
    assert body["id"] == encoded.id and uuid.UUID(body["id"]).version == 7
    assert body["time"].endswith("Z") and body["time"][:4] >= "2026"
    assert body["data"]["text"] == "hello"  # validated and normalised (trimmed)
    # Chat is keyed by the direction-free conversation id: both directions share a partition.
    assert encoded.key == b"adam:zoe" == conversation_id("adam", "zoe").encode()
    assert body["partitionkey"] == "adam:zoe"
    headers = dict(encoded.headers)
    assert headers["event-type"] == b"devconnect.message.sent"
    assert headers["event-id"] == encoded.id.encode()
    assert headers["content-type"] == CONTENT_TYPE.encode()
    assert encoded.topic == "message-events"


def test_round_trip_decode_validates_and_types_the_payload() -> None:
    encoded = encode_event(
        "devconnect.user.signup",
        {"userId": "u1", "firstName": "Ada", "emailId": "ada@example.com"},
        source='/a "quoted" é source',
    )
    event = decode_event(encoded.value)
    assert event.source == '/a "quoted" é source'
    assert event.payload is not None and event.payload.membershipTier == "free"  # type: ignore[attr-defined]
    assert event.to_dict()["data"]["emailId"] == "ada@example.com"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (
            b'{"specversion": "0.3", "id": "x", "source": "s", "type": "t", "data": {}}',
            "specversion",
        ),
        (b'{"specversion": "1.0", "source": "s", "type": "t", "data": {}}', "'id'"),
        (b'{"specversion": "1.0", "id": "x", "source": "s", "type": "t"}', "'data'"),
        (None, "tombstone"),
    ],
)
def test_invalid_envelopes_are_rejected_with_a_reason(value: bytes | None, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message) as caught:
        decode_event(value)
    assert caught.value.reason == "invalid-envelope"


def test_unknown_type_raises_with_a_hint_and_legacy_names_are_mapped() -> None:
    with pytest.raises(UnknownEventType) as caught:
        encode_event("devconnect.user.sigup", {}, source="/x")
    assert caught.value.exit_code == EXIT_USAGE
    assert caught.value.hint == "did you mean devconnect.user.signup?"
    with pytest.raises(UnknownEventType) as legacy:
        encode_event("CONNECTION_REVIEW", {}, source="/x")
    assert "devconnect.connection.accepted or devconnect.connection.rejected" in str(
        legacy.value.hint
    )


def test_invalid_payload_names_every_bad_field() -> None:
    with pytest.raises(InvalidEventData) as caught:
        encode_event(
            "devconnect.connection.requested",
            {"requestId": "r1", "fromUserId": "a", "toUserId": "a", "status": "maybe", "x": 1},
            source="/x",
        )
    errors = caught.value.errors
    assert any(e.startswith("status:") for e in errors)
    assert any(e.startswith("x:") and "Extra inputs" in e for e in errors)
    assert caught.value.reason == "invalid-data"
    with pytest.raises(InvalidEventData, match="must differ"):
        encode_event(
            "devconnect.connection.requested",
            {"requestId": "r1", "fromUserId": "a", "toUserId": "a", "status": "interested"},
            source="/x",
        )


def test_decode_rejects_data_of_another_schema_version() -> None:
    body = json.loads(encode_event("devconnect.user.login", {"userId": "u1"}, source="/x").value)
    body["dataschema"] = "urn:devconnect:schema:devconnect.user.login:2"
    with pytest.raises(InvalidEvent, match="not the registered"):
        decode_event(json.dumps(body).encode())


def test_registry_covers_devconnect_and_maps_to_configured_topics() -> None:
    expected = {
        "user-events": {"signup", "login", "logout", "online", "offline", "profile_updated"},
        "message-events": {"sent", "delivered", "read"},
        "connection-events": {"requested", "accepted", "rejected"},
        "notification-events": {"created"},
        "analytics-events": {"activity"},
    }
    got: dict[str, set[str]] = {}
    for spec in REGISTRY.values():
        assert spec.name.startswith("devconnect.")
        got.setdefault(spec.topic, set()).add(spec.name.rsplit(".", 1)[1])
        assert spec.fields(), spec.name
        assert spec.version == 1
    assert got == expected
    configured = {t.name for t in load_settings(environ={}).topics if t.dead_letter_of is None}
    assert set(REGISTRY.topics()) == configured
    legacy = {name for spec in REGISTRY.values() for name in spec.legacy}
    assert legacy == {
        "USER_SIGNUP", "USER_LOGIN", "USER_LOGOUT", "USER_ONLINE", "USER_OFFLINE",
        "PROFILE_UPDATED", "MESSAGE_SENT", "MESSAGE_READ", "CONNECTION_REQUEST",
        "CONNECTION_REVIEW", "CONNECTION_REQUEST_NOTIFICATION", "MESSAGE_ANALYTICS",
    }  # fmt: skip


def test_keys_follow_the_registry() -> None:
    review = {"requestId": "r1", "fromUserId": "asker", "toUserId": "reviewer"}
    accepted = encode_event("devconnect.connection.accepted", review, source="/x")
    assert accepted.key == b"asker"  # a request and its review share a partition
    assert accepted.subject == "reviewer"
    note = {"notificationId": "n1", "userId": "bob", "kind": "message", "title": "Hi"}
    assert encode_event("devconnect.notification.created", note, source="/x").key == b"bob"
    explicit = encode_event("devconnect.user.login", {"userId": "u1"}, source="/x", key="other")
    assert explicit.key == b"other"
