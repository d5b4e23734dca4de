"""Upcasting the records today's Node backend writes into typed DevConnect events.

During a migration both formats share the topics. Today's backend (kafkajs) writes a
JSON value with no headers and no event id (../shared/DEVCONNECT.md, "Redis and
Kafka semantics today")::

    {"eventType": "USER_LOGIN", "userId": "<ObjectId>", "timestamp": "<ISO>",
     "data": {"emailId": ..., "loginTime": ..., "ipAddress": ...}}

``upcast`` maps the name through the registry's "today's name" column, builds the
typed data from the legacy fields (fields the typed schema has no place for are
dropped: the raw value is still on the topic), and gives the event an id derived
from its topic, partition and offset (UUIDv5), so a redelivered legacy record has
the same id and the consumers' idempotency guard holds. The event keeps its
legacy name in the ``legacytype`` extension attribute.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

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


def legacy_event_id(topic: str, partition: int, offset: int) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{topic}/{partition}/{offset}"))


def upcast(
    obj: Mapping[str, Any], topic: str, partition: int, offset: int, key: bytes | None
) -> Reading:
    """The typed event of one legacy record (validated later by the reader, as any event)."""
    name = str(obj["eventType"])
    data = obj.get("data")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        return Reading(
            legacy=name,
            problem=f"legacy {name}: 'data' is not an object",
            reason=INVALID_ENVELOPE,
        )
    event_id = legacy_event_id(topic, partition, offset)
    when = _time_text(obj.get("timestamp"))
    candidates = LEGACY_NAMES.get(name)
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
    """An ISO time as given, or epoch milliseconds as RFC 3339 UTC."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            moment = datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            return None
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return None


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
        "lastSeen": _time_text(data.get("lastSeen")) or when,
    },
    "devconnect.user.profile_updated": lambda obj, data, when, _id: {
        "userId": _user(obj, data),
        "changed": _profile_changed(data),
    },
    "devconnect.message.sent": lambda obj, data, when, _id: {
        **_two(data),
        "messageId": data.get("messageId"),
        "text": data.get("text"),
        "ts": _time_text(data.get("ts")) or when,
    },
    "devconnect.message.read": lambda obj, data, when, _id: {
        **_two(data),
        "messageId": data.get("messageId"),
        "readAt": _time_text(data.get("readAt")) or when,
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
