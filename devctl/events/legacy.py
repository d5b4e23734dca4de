"""Upcasting the records today's Node backend writes into typed DevConnect events.

During a migration both formats share the topics. Today's backend (kafkajs) writes a
JSON value with no headers and no event id (../shared/DEVCONNECT.md, "Redis and
Kafka semantics today")::

    {"eventType": "USER_LOGIN", "userId": "<ObjectId>", "timestamp": "<ISO>",
     "data": {"emailId": ..., "loginTime": ..., "ipAddress": ...}}

``upcast`` maps the name through the registry's "today's name" column, builds the
typed data from the legacy fields (fields the typed schema has no place for are
dropped: the raw value is still on the topic), and gives the event an id derived
from its topic, partition, offset and value (UUIDv5), so a redelivered legacy record
has the same id and the consumers' idempotency guard holds, while another record
that lands on a reused offset (the embedded broker forgets its log on restart; a
topic deleted and created again) does not. The event keeps its legacy name in the
``legacytype`` extension attribute.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from devctl.events.envelope import is_rfc3339
from devctl.events.reading import INVALID_ENVELOPE, LEGACY, UNKNOWN_TYPE, Reading
from devctl.events.registry import REGISTRY, EventType

LEGACY_SOURCE = "/devconnect/legacy"
LEGACY_ATTRIBUTE = "legacytype"
# The namespace of legacy event ids: uuid5(namespace, "topic/partition/offset").
_ID_NAMESPACE = uuid.UUID("8f0b7c52-3c1e-5d7a-9a41-6e2d1f0c9b3d")

# Today's name -> the registered types it may stand for (CONNECTION_REVIEW is two).
LEGACY_NAMES: dict[str, tuple[str, ...]] = {}
for _spec in REGISTRY.values():
    for _name in _spec.legacy:
        LEGACY_NAMES[_name] = (*LEGACY_NAMES.get(_name, ()), _spec.name)


def legacy_event_id(topic: str, partition: int, offset: int, value: bytes) -> str:
    digest = hashlib.sha256(value).hexdigest()
    return str(uuid.uuid5(_ID_NAMESPACE, f"{topic}/{partition}/{offset}/{digest}"))


def upcast(
    obj: Mapping[str, Any],
    value: bytes,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
) -> Reading:
    """The typed event of one legacy record (validated later by the reader, as any event)."""
    name = obj["eventType"]
    if not isinstance(name, str) or not name:
        return Reading(
            problem="legacy record: 'eventType' is not a non-empty string",
            reason=INVALID_ENVELOPE,
        )
    data = obj.get("data")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        return Reading(
            legacy=name,
            problem=f"legacy {name}: 'data' is not an object",
            reason=INVALID_ENVELOPE,
        )
    event_id = legacy_event_id(topic, partition, offset, value)
    when = _time_text(obj.get("timestamp"))
    candidates = LEGACY_NAMES.get(name)
    if candidates is not None and obj.get("timestamp") is not None and when is None:
        return Reading(
            legacy=name,
            problem=f"legacy {name}: 'timestamp' is not a time: {str(obj['timestamp'])[:40]!r}",
            reason=INVALID_ENVELOPE,
        )
    if candidates is None:
        # Shown (tail) or dead-lettered (consumers), never dropped: the raw fields as data.
        event = _envelope(event_id, name, when, obj.get("userId"), key, dict(data))
        event["type"] = name
        return Reading(
            event=event,
            mode=LEGACY,
            legacy=name,
            problem=f"unknown legacy event type {name}",
            reason=UNKNOWN_TYPE,
        )
    spec = _choose(candidates, data)
    fields = _FIELDS[spec.name](obj, data, when, event_id)
    fields = {k: v for k, v in fields.items() if v is not None}
    subject = fields.get(spec.subject_field)
    event = _envelope(event_id, name, when, subject, key, fields)
    event["type"] = spec.name
    event["dataschema"] = spec.dataschema
    # Topic, schema and data are checked by the reader, as for any event.
    return Reading(event=event, mode=LEGACY, legacy=name)


def _envelope(
    event_id: str, name: str, when: str | None, subject: Any, key: bytes | None, data: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {"specversion": "1.0", "id": event_id, "source": LEGACY_SOURCE}
    event["type"] = name
    if when is not None:
        event["time"] = when
    if isinstance(subject, str):
        event["subject"] = subject
    event["datacontenttype"] = "application/json"
    if key is not None:
        event["partitionkey"] = key.decode("utf-8", "replace")
    event[LEGACY_ATTRIBUTE] = name
    event["data"] = data
    return event


def _choose(candidates: tuple[str, ...], data: Mapping[str, Any]) -> EventType:
    if len(candidates) == 1:
        return REGISTRY[candidates[0]]
    # CONNECTION_REVIEW: the review's status says which.
    status = str(data.get("status", "")).lower()
    wanted = "devconnect.connection.rejected" if status == "rejected" else None
    for name in candidates:
        if name == wanted or (wanted is None and name.endswith(".accepted")):
            return REGISTRY[name]
    return REGISTRY[candidates[0]]


def _time_text(value: Any) -> str | None:
    """An RFC 3339 time as given, or epoch milliseconds as RFC 3339 UTC; None if neither."""
    if isinstance(value, str):
        return value if is_rfc3339(value) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            moment = datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return None
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return None


def _data_time(value: Any, when: str | None) -> Any:
    """A time field of the legacy data; absent: the record's timestamp. A value that is no
    time is passed on as it is, so the typed schema rejects it (never silently replaced)."""
    if value is None:
        return when
    return _time_text(value) or value


def _user(obj: Mapping[str, Any], data: Mapping[str, Any]) -> Any:
    return obj.get("userId", data.get("userId"))


def _two(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"fromUserId": data.get("fromUserId"), "toUserId": data.get("toUserId")}


Fields = Callable[[Mapping[str, Any], Mapping[str, Any], str | None, str], dict[str, Any]]

_PROFILE_FIELDS = ("firstName", "lastName", "photoUrl", "gender", "age", "about", "skills")


def _profile_changed(data: Mapping[str, Any]) -> Any:
    changed = data.get("changed")
    if changed is not None:
        return changed
    return [name for name in _PROFILE_FIELDS if name in data]


_FIELDS: dict[str, Fields] = {
    "devconnect.user.signup": lambda obj, data, when, _id: {
        "userId": _user(obj, data),
        "firstName": data.get("firstName"),
        "lastName": data.get("lastName"),
        "emailId": data.get("emailId"),
    },
    "devconnect.user.login": lambda obj, data, when, _id: {"userId": _user(obj, data)},
    "devconnect.user.logout": lambda obj, data, when, _id: {"userId": _user(obj, data)},
    "devconnect.user.online": lambda obj, data, when, _id: {"userId": _user(obj, data)},
    "devconnect.user.offline": lambda obj, data, when, _id: {
        "userId": _user(obj, data),
        "lastSeen": _data_time(data.get("lastSeen"), when),
    },
    "devconnect.user.profile_updated": lambda obj, data, when, _id: {
        "userId": _user(obj, data),
        "changed": _profile_changed(data),
    },
    "devconnect.message.sent": lambda obj, data, when, _id: {
        **_two(data),
        "messageId": data.get("messageId"),
        "text": data.get("text"),
        "ts": _data_time(data.get("ts"), when),
    },
    "devconnect.message.read": lambda obj, data, when, _id: {
        **_two(data),
        "messageId": data.get("messageId"),
        "readAt": _data_time(data.get("readAt"), when),
    },
    "devconnect.connection.requested": lambda obj, data, when, _id: {
        **_two(data),
        "requestId": data.get("requestId"),
        # Today's API accepts "ignore" for "ignored" (DEVCONNECT.md's routes).
        "status": "ignored" if data.get("status") == "ignore" else data.get("status"),
    },
    "devconnect.connection.accepted": lambda obj, data, when, _id: {
        **_two(data),
        "requestId": data.get("requestId"),
    },
    "devconnect.connection.rejected": lambda obj, data, when, _id: {
        **_two(data),
        "requestId": data.get("requestId"),
    },
    "devconnect.notification.created": lambda obj, data, when, event_id: {
        # No notification id today: the event's own (deterministic) id, without dashes.
        "notificationId": event_id.replace("-", ""),
        "userId": data.get("userId"),
        "kind": "connection_request",
        "title": _title(data.get("message")),
        "actorId": data.get("fromUserId"),
    },
    "devconnect.analytics.activity": lambda obj, data, when, _id: {
        "userId": data.get("userId", obj.get("userId")),
        "action": "message_analytics",
        "properties": {
            name: data[name]
            for name in ("messageCount",)
            if isinstance(data.get(name), int | float | str | bool)
        },
    },
}


def _title(message: Any) -> str:
    if isinstance(message, str) and message.strip():
        return message.strip()[:200]
    return "New connection request"
