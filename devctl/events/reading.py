"""What a Kafka record on DevConnect's topics holds: one decoding path for every reader.

``read_record`` never raises: whatever the bytes, headers, key or size, it returns
a ``Reading`` that either carries the event or says why there is none (``problem``,
and the dead-letter ``reason`` a consumer gives it). tail shows such records with a
warning; the consumer runtime dead-letters them; `devctl test` checks both.

Three shapes are read, as the CloudEvents Kafka protocol binding asks receivers to:

- **structured** mode: ``content-type: application/cloudevents...`` (or no such
  header and a JSON object with ``specversion``): the value is the whole event.
- **binary** mode: a ``ce_specversion`` header; attributes are ``ce_*`` headers,
  ``content-type`` is ``datacontenttype`` and the value is the data.
- **legacy**: the JSON records today's Node backend writes
  (``{"eventType": "USER_LOGIN", "userId", "timestamp", "data"}``), upcast to the
  registered type by ``devctl.events.legacy``.

An event of a registered type on another registered type's topic is reported
(``wrong-topic``): ``publish`` refuses to write one, so a reader must not take it
silently either. Topics the registry does not name (dead-letter topics, test
topics) accept any type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from devctl.events._batches import Headers
from devctl.events.envelope import SPECVERSION, envelope_problem
from devctl.events.errors import InvalidEvent, UnknownEventType
from devctl.events.markers import CHECK_EVENT_TYPE, CHECK_HEADER
from devctl.events.registry import REGISTRY

STRUCTURED = "structured"
BINARY = "binary"
LEGACY = "legacy"

# Dead-letter reasons (the consumer's ``dlq-reason`` header) of records without a usable event.
INVALID_ENVELOPE = "invalid-envelope"
UNKNOWN_TYPE = "unknown-type"
INVALID_DATA = "invalid-data"
WRONG_TOPIC = "wrong-topic"

_CE_PREFIX = "ce_"


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# json.loads takes NaN and Infinity, which no other JSON reader does (and our NDJSON
# output would carry them on): they make a value invalid here.
_loads = json.JSONDecoder(parse_constant=_not_json).decode
# The binding's name is content-type; a set, not .lower() on every header of every record.
_CONTENT_TYPE_NAMES = frozenset({"content-type", "Content-Type", "CONTENT-TYPE"})
_STRUCTURED_MEDIA = "application/cloudevents"
_REGISTERED_TOPICS = frozenset(REGISTRY.topics())


@dataclass(slots=True)
class Reading:
    """One record as read: the CloudEvent (JSON form) if there is one, and what is wrong."""

    event: dict[str, Any] | None = None  # attributes + data, as structured mode would hold it
    mode: str | None = None  # structured | binary | legacy; None: no event found
    legacy: str | None = None  # today's name of a legacy record (USER_LOGIN, ...)
    payload: Any = None  # the typed data, when validated against the registry
    problem: str | None = None  # why this is not a valid event for its topic
    reason: str | None = None  # the dead-letter reason that goes with ``problem``
    check: bool = False  # written by `devctl test` (CHECK_HEADER with the value 1)

    @property
    def type(self) -> str | None:
        return self.event.get("type") if self.event is not None else None


def header_value(headers: Headers, name: str) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value.encode() if isinstance(value, str) else value
    return None


def read_record(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    *,
    partition: int = 0,
    offset: int = 0,
    validate: bool = True,
) -> Reading:
    """Decode one record; never raises (a bug here would stop every reader on one record)."""
    try:
        return _read(topic, key, value, headers, partition, offset, validate)
    except RecursionError:
        return _bad("value nested too deeply to decode")
    except MemoryError:
        return _bad("value too large to decode in memory")
    except Exception as exc:  # any decoding failure is the record's problem, not the reader's
        return _bad(f"could not decode ({type(exc).__name__}: {exc})")


def _bad(problem: str, reason: str = INVALID_ENVELOPE) -> Reading:
    return Reading(problem=problem, reason=reason)


def _read(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    partition: int,
    offset: int,
    validate: bool,
) -> Reading:
    content_type: bytes | None = None
    binary = check = False
    for name, header in headers:
        if name in _CONTENT_TYPE_NAMES:
            content_type = header.encode() if isinstance(header, str) else header
        elif name == "ce_specversion":
            binary = True
        elif name == CHECK_HEADER:
            # Only the value checks write: any other value is a record like any other.
            check = header == b"1" or header == "1"
    if (content_type is None or not content_type.startswith(b"application/cloudevents")) and binary:
        reading = _read_binary(key, value, headers, content_type)
    else:
        reading = _read_json(value, topic, partition, offset, key)
    reading.check = check
    if reading.event is None or reading.problem is not None:
        return reading
    event = reading.event
    event_type = event["type"]
    if check and event_type == CHECK_EVENT_TYPE:
        return reading  # a probe of `devctl test`: a valid event of devctl's own
    spec = REGISTRY.get_fast(event_type)
    if spec is None:
        try:
            REGISTRY[event_type]
        except UnknownEventType as exc:
            reading.problem = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        reading.reason = UNKNOWN_TYPE
        return reading
    if spec.topic != topic and topic in _REGISTERED_TOPICS:
        reading.problem = f"{event_type} belongs on {spec.topic}, not {topic}"
        reading.reason = WRONG_TOPIC
        return reading
    if validate:
        dataschema = event.get("dataschema")
        if dataschema is not None and dataschema != spec.dataschema:
            reading.problem = (
                f"{event_type}: dataschema {dataschema} is not the registered {spec.dataschema}"
            )
            reading.reason = INVALID_DATA
            return reading
        try:
            reading.payload = spec.validate(event.get("data"))
        except InvalidEvent as exc:
            reading.problem = exc.message
            reading.reason = INVALID_DATA
    return reading


def _read_json(
    value: bytes | None, topic: str, partition: int, offset: int, key: bytes | None
) -> Reading:
    if value is None:
        return _bad("empty value (a tombstone)")
    try:
        # Decoded here, not by json.loads: it would guess UTF-16/32 from the first bytes.
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _bad(f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    try:
        obj = _loads(text)
    except ValueError as exc:
        return _bad(f"not JSON ({exc})")
    if isinstance(obj, dict) and "specversion" not in obj and "eventType" in obj:
        from devctl.events.legacy import upcast

        return upcast(obj, value, topic, partition, offset, key)
    problem = envelope_problem(obj)
    if problem is not None:
        return _bad(f"not a CloudEvent: {problem}")
    return Reading(event=obj, mode=STRUCTURED)


def _read_binary(
    key: bytes | None, value: bytes | None, headers: Headers, content_type: bytes | None
) -> Reading:
    """A binary-mode event: ``ce_*`` headers are the attributes, the value is the data."""
    event: dict[str, Any] = {}
    for name, header in headers:
        if not name.startswith(_CE_PREFIX) or header is None:
            continue
        raw = header.encode() if isinstance(header, str) else header
        attribute = name[len(_CE_PREFIX) :]
        if attribute in event:
            # Readers would disagree on which one counts: the record is ambiguous.
            return _bad(f"binary mode: header {name} appears more than once")
        try:
            event[attribute] = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _bad(f"binary mode: header {name} is not UTF-8 text")
    if event.get("specversion") != SPECVERSION:
        return _bad(
            f"not a CloudEvent: binary mode specversion is {event.get('specversion')!r}, "
            "expected '1.0'"
        )
    if content_type is not None:
        try:
            event["datacontenttype"] = content_type.decode("utf-8")
        except UnicodeDecodeError:
            return _bad("binary mode: content-type header is not UTF-8 text")
    if "partitionkey" not in event and key is not None:
        # The binding maps the partitioning extension to the record key.
        event["partitionkey"] = key.decode("utf-8", "replace")
    media = str(event.get("datacontenttype", "application/json")).split(";")[0].strip().lower()
    if value is None:
        event["data"] = None
    elif media == "application/json" or media.endswith("+json") or media.startswith("text/json"):
        try:
            event["data"] = _loads(value.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return _bad(f"binary mode: data is not UTF-8 text ({exc.reason} at byte {exc.start})")
        except ValueError as exc:
            return _bad(f"binary mode: data is not JSON ({exc})")
    else:
        event["data"] = value.decode("utf-8", "backslashreplace")
    problem = envelope_problem(event)
    if problem is not None:
        return _bad(f"not a CloudEvent (binary mode): {problem}")
    return Reading(event=event, mode=BINARY)
