"""The one registry of DevConnect event types: topic, schema (with version), key, subject.

Names are ``devconnect.<area>.<what>``; the legacy names used by today's backend
(USER_SIGNUP, ...) are kept beside them for reference and for ``get_type``.
"""

from __future__ import annotations

import collections
import difflib
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel, ValidationError
from pydantic_core import SchemaSerializer, SchemaValidator, core_schema

from devctl.events import schemas as s
from devctl.events.errors import InvalidEventData, UnknownEventType

PREFIX = "devconnect."


@dataclass(frozen=True)
class EventType:
    name: str
    topic: str
    model: type[BaseModel]
    version: int
    # The record key: one field's value, or the conversation id of two user fields.
    key_fields: tuple[str, ...]
    key_doc: str
    subject_field: str
    subject_doc: str
    summary: str
    legacy: tuple[str, ...] = ()
    # The CloudEvents ``dataschema`` naming this type's schema and version.
    dataschema: str = field(init=False, compare=False)
    key_of: Callable[[Mapping[str, Any]], str] = field(init=False, repr=False, compare=False)
    subject_of: Callable[[Mapping[str, Any]], str] = field(init=False, repr=False, compare=False)
    _serialize: Callable[[Any], bytes] = field(init=False, repr=False, compare=False)
    _fast: FieldsSchema = field(init=False, repr=False, compare=False)
    _checks: tuple[Callable[[Mapping[str, Any]], None], ...] = field(
        init=False, repr=False, compare=False
    )
    # JSON of validated field values (a dict from validate_fields / validate_many):
    # the same bytes as ``to_json`` of the model.
    fields_serializer: Callable[[Mapping[str, Any]], bytes] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        fix = object.__setattr__
        fix(self, "dataschema", f"urn:devconnect:schema:{self.name}:{self.version}")
        if len(self.key_fields) == 1:
            fix(self, "key_of", operator.itemgetter(self.key_fields[0]))
        elif len(self.key_fields) == 2:
            first, second = self.key_fields

            def conversation_key(fields: Mapping[str, Any]) -> str:
                # s.conversation_id, inlined: this runs once per event on the hot path.
                a, b = fields[first], fields[second]
                return f"{a}:{b}" if a <= b else f"{b}:{a}"

            fix(self, "key_of", conversation_key)
        else:
            raise ValueError(f"{self.name}: a key is one field or two (a conversation)")
        fix(self, "subject_of", operator.itemgetter(self.subject_field))
        if not _deferring:
            self._prepare()

    def _prepare(self) -> None:
        """Build the model's schema and the fast path, and check them (TypeError if unfit).

        The registry's own types do this on first use (see ``__getattr__``): building
        the 14 payload schemas and their fast paths takes ~100 ms, and a command uses
        one type or none. Any other EventType (a replaced model, a new version) is
        prepared, and so checked, when it is made.
        """
        fix = object.__setattr__
        if not self.model.__pydantic_complete__:
            self.model.model_rebuild()  # the payload models defer their build to here
        fast = FieldsSchema.of(self.model)
        if fast is None:
            raise TypeError(
                f"{self.name}: payload model {self.model.__name__} cannot be mirrored as a "
                "typed dict (aliases, computed fields or validators besides cross_field_checks)"
            )
        bare_times = [n for n, schema in fast.field_schemas.items() if _has_bare_time(schema)]
        if bare_times:
            # Events state every time in UTC ("...Z"); see schemas.UtcDatetime.
            raise TypeError(f"{self.name}: time fields must be schemas.UtcDatetime: {bare_times}")
        not_ids = [n for n in (*self.key_fields, self.subject_field) if not fast.is_id(n)]
        if not_ids:
            # The envelope writes keys and subjects unescaped (see envelope_text).
            raise TypeError(f"{self.name}: key and subject fields must be ids: {not_ids}")
        fix(self, "_checks", _checks_of(self.model))
        fix(self, "fields_serializer", fast.serializer.to_json)
        fix(self, "_serialize", self.model.__pydantic_serializer__.to_json)
        fix(self, "_fast", fast)  # last: its presence means prepared

    def __getattr__(self, name: str) -> Any:
        # Only called for an attribute not set yet: the prepared ones, on first use.
        # Once set, they are plain instance attributes (no cost on the hot path).
        if name in _PREPARED and "_fast" not in self.__dict__:
            self._prepare()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # --- the typed payload (consumers, decoding) -----------------------------

    def validate(self, data: Any) -> BaseModel:
        """The typed payload, or InvalidEventData saying which fields are wrong."""
        if type(data) is not dict and isinstance(data, self.model):  # type(): see below
            return data
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            raise self._invalid([_describe_error(error) for error in exc.errors()]) from None

    def to_json(self, payload: BaseModel) -> bytes:
        return self._serialize(payload)

    def key(self, payload: BaseModel) -> str:
        return self.key_of(payload.__dict__)

    def subject(self, payload: BaseModel) -> str:
        return self.subject_of(payload.__dict__)

    # --- validated field values (the producer: it needs bytes, not objects) --

    def validate_fields(self, data: Any) -> dict[str, Any]:
        """The validated (and normalised) field values as a dict: the same rules as
        ``validate``, at half the cost, because no model instance is built."""
        # type() first: isinstance on a pydantic model class runs Python code (its
        # metaclass), a third of this method's cost for the usual dict.
        if type(data) is not dict and isinstance(data, self.model):
            return dict(data.__dict__)
        try:
            fields: dict[str, Any] = self._fast.validator.validate_python(data)
        except ValidationError as exc:
            raise self._invalid([_describe_error(error) for error in exc.errors()]) from None
        self._check_across(fields, "data")
        return fields

    def validate_many(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        """``validate_fields`` of every item in one call; InvalidEventData names each bad item."""
        if not isinstance(items, list):
            items = list(items)
        try:
            rows: list[dict[str, Any]] = self._fast.list_validator.validate_python(items)
        except ValidationError as exc:
            if any(isinstance(item, self.model) for item in items):
                # Typed payloads are welcome too: their field values, validated again.
                return self.validate_many(
                    [item.__dict__ if isinstance(item, self.model) else item for item in items]
                )
            raise self._invalid(
                [_describe_error(error, numbered=True) for error in exc.errors()], len(items)
            ) from None
        checks = self._checks
        try:
            for check in checks:
                collections.deque(map(check, rows), maxlen=0)  # a C loop: no problems, fast
        except ValueError:
            problems = []
            for index, fields in enumerate(rows):
                try:
                    for check in checks:
                        check(fields)
                except ValueError as exc:
                    problems.append(f"event {index + 1}: data: Value error, {exc}")
            raise self._invalid(problems, len(items)) from None
        return rows

    def fields_json(self, fields: Mapping[str, Any]) -> bytes:
        """JSON of validated field values: the same bytes as ``to_json`` of the model."""
        return self.fields_serializer(fields)

    def _check_across(self, fields: dict[str, Any], where: str) -> None:
        try:
            for check in self._checks:
                check(fields)
        except ValueError as exc:
            raise self._invalid([f"{where}: Value error, {exc}"]) from None

    def _invalid(self, problems: list[str], count: int | None = None) -> InvalidEventData:
        shown = problems[:_MAX_PROBLEMS] + (
            [f"... and {len(problems) - _MAX_PROBLEMS} more"]
            if len(problems) > _MAX_PROBLEMS
            else []
        )
        scope = f" (a batch of {count}: nothing was sent)" if count is not None else ""
        return InvalidEventData(
            f"invalid data for {self.name} (schema v{self.version}){scope}: " + "; ".join(shown),
            errors=problems,
            hint=f"`devctl events types {self.name}` lists its fields",
        )

    def fields(self) -> list[tuple[str, str, bool]]:
        """(name, readable type, required) of each field of the payload."""
        schema = self.model.model_json_schema()
        required = set(schema.get("required", []))
        defs = schema.get("$defs", {})
        return [
            (name, _type_text(prop, defs), name in required)
            for name, prop in schema.get("properties", {}).items()
        ]


_MAX_PROBLEMS = 10
# The attributes EventType._prepare sets; see EventType.__getattr__.
_PREPARED = frozenset({"_serialize", "_fast", "_checks", "fields_serializer"})
# True while the registry's own types are made: they are prepared on first use.
_deferring = False


def _checks_of(model: type[BaseModel]) -> tuple[Callable[[Mapping[str, Any]], None], ...]:
    return model.cross_field_checks if issubclass(model, s.Payload) else ()


@dataclass(frozen=True)
class FieldsSchema:
    """A payload model's fields as a typed-dict schema: pydantic-core validates into plain
    dicts (no model instance: half the cost) with the model's own field rules, and
    serializes those dicts to the bytes the model would give.

    Derived from the model's core schema, so the model stays the one definition: field
    schemas are copied whole, with any validator or serializer of their own (such as the
    UTC normalisation of times). A model this cannot mirror exactly (aliases, model
    validators other than the cross-field check, nested definitions) gets None, and the
    registry refuses it.
    """

    validator: SchemaValidator
    list_validator: SchemaValidator
    serializer: SchemaSerializer
    field_schemas: Mapping[str, Mapping[str, Any]]
    config: core_schema.CoreConfig

    @classmethod
    def of(cls, model: type[BaseModel]) -> FieldsSchema | None:
        schema: Any = model.__pydantic_core_schema__
        if schema.get("type") == "function-after":
            # The only after-validator a payload may have runs its cross-field checks.
            if not _checks_of(model):
                return None
            schema = schema["schema"]
        if schema.get("type") != "model" or schema["schema"].get("type") != "model-fields":
            return None
        inner = schema["schema"]
        if inner.get("computed_fields") or inner.get("extras_schema"):
            return None
        fields: dict[str, Any] = {}
        for name, spec in inner["fields"].items():
            if set(spec) - {"type", "schema", "metadata"} or spec["type"] != "model-field":
                return None  # aliases, exclusions, frozen fields: not mirrored
            field_schema = spec["schema"]
            fields[name] = core_schema.typed_dict_field(
                field_schema, required=field_schema.get("type") != "default"
            )
        config = schema.get("config") or {}
        typed = core_schema.typed_dict_schema(
            fields,
            extra_behavior=config.get("extra_fields_behavior", "ignore"),
            config=cast(core_schema.CoreConfig, config),
        )
        return cls(
            validator=SchemaValidator(typed),
            list_validator=SchemaValidator(core_schema.list_schema(typed)),
            serializer=SchemaSerializer(typed),
            field_schemas={name: f["schema"] for name, f in fields.items()},
            config=cast(core_schema.CoreConfig, config),
        )

    def is_id(self, name: str) -> bool:
        """Whether a field is an id: a string whose rules admit nothing JSON escapes.

        The pattern text is not enough (another regex engine reads ``$`` differently),
        so the field's own validator must also refuse what would need escaping.
        """
        schema = self.field_schemas.get(name, {})
        if schema.get("type") != "str" or schema.get("pattern") != s.ID_PATTERN:
            return False
        validator = SchemaValidator(schema, self.config)
        for probe in _NEEDS_ESCAPING:
            try:
                validator.validate_python(probe)
            except ValidationError:
                continue
            return False
        return True


def _has_bare_time(schema: Any) -> bool:
    """Whether a core schema holds a datetime that is not normalised by schemas.TO_UTC."""
    if isinstance(schema, Mapping):
        if schema.get("type") == "datetime":
            return True
        if (
            schema.get("type") == "function-after"
            and schema["function"].get("function") is s.TO_UTC
        ):
            return False  # a datetime inside is normalised on both paths
        return any(_has_bare_time(value) for value in schema.values())
    if isinstance(schema, list | tuple):
        return any(_has_bare_time(value) for value in schema)
    return False


# Ids with what JSON escapes (quote, backslash, control characters, a trailing newline).
_NEEDS_ESCAPING = ('a"', "a\\", "a\n", "a\x00", "a\x1f", "\ta", "a\u2028")


def _describe_error(error: Mapping[str, Any], *, numbered: bool = False) -> str:
    """'field: problem'; with ``numbered``, the location starts with a list index."""
    loc = list(error.get("loc", ()))
    prefix = ""
    if numbered and loc and isinstance(loc[0], int):
        prefix = f"event {loc.pop(0) + 1}: "
    where = ".".join(str(part) for part in loc) or "data"
    return f"{prefix}{where}: {error.get('msg', 'invalid')}"


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


_user = ("userId",)
_sender = ("fromUserId",)
_recipient = ("toUserId",)
_conversation = ("fromUserId", "toUserId")

_USER_KEY = "userId"
_CONVERSATION_KEY = "conversation id (fromUserId:toUserId sorted)"


def _t(
    name: str,
    topic: str,
    model: type[BaseModel],
    summary: str,
    *,
    key: tuple[tuple[str, ...], str] = (_user, _USER_KEY),
    subject: tuple[tuple[str], str] = (_user, "userId"),
    legacy: tuple[str, ...] = (),
) -> EventType:
    return EventType(
        name=PREFIX + name,
        topic=topic,
        model=model,
        version=1,
        key_fields=key[0],
        key_doc=key[1],
        subject_field=subject[0][0],
        subject_doc=subject[1],
        summary=summary,
        legacy=legacy,
    )


_deferring = True
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
_deferring = False


def get_type(name: str) -> EventType:
    return REGISTRY[name]
