"""Typed payloads (the CloudEvents ``data``) of every DevConnect event, version 1.

Field names follow the DevConnect web client and backend (camelCase). Models forbid unknown
fields, so a typo is an error at publish time rather than a silent loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC
from operator import methodcaller
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

# Ids never contain ':' so that a conversation id (two user ids) is unambiguous.
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
]
# Times arrive with any offset and leave in UTC ("...Z"), so that every event states
# time alike and times compare as text. A C callable (no Python frame per event) inside
# the field's own core schema: the registry's fast path (FieldsSchema) copies field
# schemas as they are, so it normalises exactly as the model does. Every time field of a
# payload must be a UtcDatetime: the registry refuses a bare aware datetime.
TO_UTC = methodcaller("astimezone", UTC)
UtcDatetime = Annotated[AwareDatetime, AfterValidator(TO_UTC)]
Tier = Literal["free", "silver", "gold"]
ProfileField = Literal["firstName", "lastName", "photoUrl", "gender", "age", "about", "skills"]


def conversation_id(user_a: str, user_b: str) -> str:
    """The direction-free id of a chat between two users: both ids, sorted, joined by ':'."""
    return f"{user_a}:{user_b}" if user_a <= user_b else f"{user_b}:{user_a}"


class Payload(BaseModel):
    # defer_build: the schema is built on first use, not at import (~25 ms for all
    # payloads, and a command uses one or none); the registry builds it when it
    # prepares the type.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    # Rules across fields, as plain functions of the field values (raising ValueError):
    # the model runs them after validating (see _TwoUsers), and the producer's fast
    # path, which validates into plain dicts, runs the very same functions.
    cross_field_checks: ClassVar[tuple[Callable[[Mapping[str, Any]], None], ...]] = ()


def different_users(fields: Mapping[str, Any]) -> None:
    if fields["fromUserId"] == fields["toUserId"]:
        raise ValueError("fromUserId and toUserId must differ")


class _TwoUsers(Payload):
    fromUserId: Id
    toUserId: Id

    cross_field_checks = (different_users,)

    @model_validator(mode="after")
    def _cross_field_checks(self) -> _TwoUsers:
        for check in self.cross_field_checks:
            check(self.__dict__)
        return self


# --- user-events -------------------------------------------------------------


class UserSignup(Payload):
    userId: Id
    firstName: Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=50)]
    lastName: Annotated[str, StringConstraints(strip_whitespace=True, max_length=50)] | None = None
    emailId: Email
    membershipTier: Tier = "free"


class UserLogin(Payload):
    userId: Id
    userAgent: Annotated[str, StringConstraints(max_length=256)] | None = None


class UserLogout(Payload):
    userId: Id
    reason: Literal["user", "expired", "revoked"] = "user"


class UserOnline(Payload):
    userId: Id
    connections: Annotated[int, Field(ge=1)] = 1


class UserOffline(Payload):
    userId: Id
    lastSeen: UtcDatetime


class ProfileUpdated(Payload):
    userId: Id
    changed: Annotated[list[ProfileField], Field(min_length=1)]


# --- message-events ----------------------------------------------------------


class MessageSent(_TwoUsers):
    messageId: Id
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]
    ts: UtcDatetime


class MessageDelivered(_TwoUsers):
    messageId: Id
    deliveredAt: UtcDatetime


class MessageRead(_TwoUsers):
    messageId: Id
    readAt: UtcDatetime


# --- connection-events -------------------------------------------------------


class ConnectionRequested(_TwoUsers):
    requestId: Id
    status: Literal["interested", "ignored"]


class ConnectionReviewed(_TwoUsers):
    """Accepted or rejected by toUserId (the recipient of the request)."""

    requestId: Id


# --- notification-events -----------------------------------------------------


class NotificationCreated(Payload):
    notificationId: Id
    userId: Id  # the recipient
    kind: Literal["connection_request", "connection_accepted", "message", "system"]
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    body: Annotated[str, StringConstraints(max_length=1000)] | None = None
    actorId: Id | None = None
    refId: Id | None = None


# --- analytics-events --------------------------------------------------------


class UserActivity(Payload):
    userId: Id
    action: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.]{0,63}$")]
    properties: Annotated[
        dict[
            Annotated[str, StringConstraints(max_length=64)],
            Annotated[str, StringConstraints(max_length=1000)] | int | float | bool | None,
        ],
        Field(max_length=50),
    ] = {}
