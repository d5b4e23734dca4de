"""The one registry of DevConnect event types: topic, schema (with version), key, subject.

Names are ``devconnect.<area>.<what>``; the legacy names used by today's backend
(USER_SIGNUP, ...) are kept beside them for reference and for ``get_type``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from devctl.events import schemas as s
from devctl.events.errors import InvalidEventData, UnknownEventType

PREFIX = "devconnect."


@dataclass(frozen=True)
class EventType:
    name: str
    topic: str
    model: type[BaseModel]
    version: int
    key: Callable[[Any], str]
    key_doc: str
    subject: Callable[[Any], str]
    subject_doc: str
    summary: str
    legacy: tuple[str, ...] = ()
    # The CloudEvents ``dataschema`` naming this type's schema and version.
    dataschema: str = field(init=False, compare=False)
    _serialize: Callable[[Any], bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataschema", f"urn:devconnect:schema:{self.name}:{self.version}")
        object.__setattr__(self, "_serialize", self.model.__pydantic_serializer__.to_json)

    def validate(self, data: Any) -> BaseModel:
        """The typed payload, or InvalidEventData saying which fields are wrong."""
        if isinstance(data, self.model):
            return data
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            problems = [_describe_error(error) for error in exc.errors()]
            raise InvalidEventData(
                f"invalid data for {self.name} (schema v{self.version}): " + "; ".join(problems),
                errors=problems,
                hint=f"`devctl events types {self.name}` lists its fields",
            ) from None

    def to_json(self, payload: BaseModel) -> bytes:
        return self._serialize(payload)

    def fields(self) -> list[tuple[str, str, bool]]:
        """(name, readable type, required) of each field of the payload."""
        schema = self.model.model_json_schema()
        required = set(schema.get("required", []))
        defs = schema.get("$defs", {})
        return [
            (name, _type_text(prop, defs), name in required)
            for name, prop in schema.get("properties", {}).items()
        ]


def _describe_error(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ())) or "data"
    return f"{where}: {error.get('msg', 'invalid')}"


def _type_text(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    if "$ref" in prop:
        return _type_text(defs.get(prop["$ref"].rsplit("/", 1)[-1], {}), defs)
    if "anyOf" in prop:
        options = [o for o in prop["anyOf"] if o.get("type") != "null"]
        text = "|".join(_type_text(o, defs) for o in options)
        nullable = len(options) < len(prop["anyOf"])
        return f"{text}?" if nullable else text
    if "enum" in prop:
        return "|".join(str(v) for v in prop["enum"])
    if "const" in prop:
        return str(prop["const"])
    kind = prop.get("type", "any")
    if kind == "string" and prop.get("format") == "date-time":
        return "datetime"
    if kind == "array":
        return f"list[{_type_text(prop.get('items', {}), defs)}]"
    if kind == "object":
        return "object"
    return {"integer": "int", "number": "float", "boolean": "bool", "string": "str"}.get(
        str(kind), str(kind)
    )


def _user(payload: Any) -> str:
    return str(payload.userId)


def _sender(payload: Any) -> str:
    return str(payload.fromUserId)


def _recipient(payload: Any) -> str:
    return str(payload.toUserId)


def _conversation(payload: Any) -> str:
    return s.conversation_id(payload.fromUserId, payload.toUserId)


_USER_KEY = "userId"
_CONVERSATION_KEY = "conversation id (fromUserId:toUserId sorted)"


def _t(
    name: str,
    topic: str,
    model: type[BaseModel],
    summary: str,
    *,
    key: tuple[Callable[[Any], str], str] = (_user, _USER_KEY),
    subject: tuple[Callable[[Any], str], str] = (_user, "userId"),
    legacy: tuple[str, ...] = (),
) -> EventType:
    return EventType(
        name=PREFIX + name,
        topic=topic,
        model=model,
        version=1,
        key=key[0],
        key_doc=key[1],
        subject=subject[0],
        subject_doc=subject[1],
        summary=summary,
        legacy=legacy,
    )


_TYPES = (
    _t("user.signup", "user-events", s.UserSignup, "a user signed up", legacy=("USER_SIGNUP",)),
    _t("user.login", "user-events", s.UserLogin, "a user logged in", legacy=("USER_LOGIN",)),
    _t("user.logout", "user-events", s.UserLogout, "a user logged out", legacy=("USER_LOGOUT",)),
    _t(
        "user.online",
        "user-events",
        s.UserOnline,
        "a user's first connection opened",
        legacy=("USER_ONLINE",),
    ),
    _t(
        "user.offline",
        "user-events",
        s.UserOffline,
        "a user's last connection closed",
        legacy=("USER_OFFLINE",),
    ),
    _t(
        "user.profile_updated",
        "user-events",
        s.ProfileUpdated,
        "a user edited their profile (names of changed fields)",
        legacy=("PROFILE_UPDATED",),
    ),
    _t(
        "message.sent",
        "message-events",
        s.MessageSent,
        "a chat message was sent",
        key=(_conversation, _CONVERSATION_KEY),
        subject=(_sender, "fromUserId"),
        legacy=("MESSAGE_SENT",),
    ),
    _t(
        "message.delivered",
        "message-events",
        s.MessageDelivered,
        "a chat message reached the recipient's client",
        key=(_conversation, _CONVERSATION_KEY),
        subject=(_recipient, "toUserId"),
    ),
    _t(
        "message.read",
        "message-events",
        s.MessageRead,
        "the recipient read a chat message",
        key=(_conversation, _CONVERSATION_KEY),
        subject=(_recipient, "toUserId"),
        legacy=("MESSAGE_READ",),
    ),
    _t(
        "connection.requested",
        "connection-events",
        s.ConnectionRequested,
        "a connection request was sent (status interested or ignored)",
        key=(_sender, "fromUserId (the requester)"),
        subject=(_sender, "fromUserId"),
        legacy=("CONNECTION_REQUEST",),
    ),
    _t(
        "connection.accepted",
        "connection-events",
        s.ConnectionReviewed,
        "the recipient accepted a connection request",
        key=(_sender, "fromUserId (the requester)"),
        subject=(_recipient, "toUserId (the reviewer)"),
        legacy=("CONNECTION_REVIEW",),
    ),
    _t(
        "connection.rejected",
        "connection-events",
        s.ConnectionReviewed,
        "the recipient rejected a connection request",
        key=(_sender, "fromUserId (the requester)"),
        subject=(_recipient, "toUserId (the reviewer)"),
        legacy=("CONNECTION_REVIEW",),
    ),
    _t(
        "notification.created",
        "notification-events",
        s.NotificationCreated,
        "a notification for a user was created",
        key=(_user, "userId (the recipient)"),
        legacy=("CONNECTION_REQUEST_NOTIFICATION",),
    ),
    _t(
        "analytics.activity",
        "analytics-events",
        s.UserActivity,
        "a user did something worth counting (action + properties)",
        legacy=("MESSAGE_ANALYTICS",),
    ),
)


class Registry(Mapping[str, EventType]):
    """Event types by name; lookups of unknown names raise UnknownEventType."""

    def __init__(self, types: tuple[EventType, ...]):
        self._types = {t.name: t for t in types}
        self.get_fast = self._types.get  # the hot path of encoding: no exception machinery

    def __getitem__(self, name: str) -> EventType:
        try:
            return self._types[name]
        except KeyError:
            raise self._unknown(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def topics(self) -> list[str]:
        return sorted({t.topic for t in self._types.values()})

    def for_topic(self, topic: str) -> list[EventType]:
        return [t for t in self._types.values() if t.topic == topic]

    def _unknown(self, name: str) -> UnknownEventType:
        legacy = [t.name for t in self._types.values() if name.upper() in t.legacy]
        if legacy:
            hint = f"today's {name.upper()} is {' or '.join(legacy)}"
        else:
            close = difflib.get_close_matches(name, list(self._types), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "see `devctl events types`"
        return UnknownEventType(f"unknown event type '{name}'", hint=hint)


REGISTRY = Registry(_TYPES)


def get_type(name: str) -> EventType:
    return REGISTRY[name]
