"""The CloudEvents 1.0 envelope in structured JSON mode, and the Kafka record around it.

A record's value is the whole event as JSON::

    {"specversion": "1.0", "id": "<uuidv7>", "source": "/devconnect/api",
     "type": "devconnect.user.login", "time": "2026-11-25T18:06:09.123Z",
     "subject": "<user id>", "datacontenttype": "application/json",
     "dataschema": "urn:devconnect:schema:devconnect.user.login:1",
     "partitionkey": "<record key>", "data": {...}}

``partitionkey`` is the CloudEvents partitioning extension: the record key, kept
inside the event so a dead-lettered or replayed copy still says where it belongs.
Headers repeat the type and id as ``event-type`` and ``event-id`` (filters need not parse
the value) and
set ``content-type`` to the structured-mode media type.
"""

from __future__ import annotations

import json
import re
import time as _time
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from pydantic import BaseModel

from devctl.events._batches import Headers
from devctl.events.errors import InvalidEvent
from devctl.events.ids import uuid7_parts
from devctl.events.registry import REGISTRY, EventType

SPECVERSION = "1.0"
DATA_CONTENT_TYPE = "application/json"
CONTENT_TYPE = "application/cloudevents+json; charset=UTF-8"
# Not ``ce_type``/``ce_id``: the CloudEvents Kafka binding reads any record with a
# ``ce_`` header as binary mode (the Python SDK's ``from_kafka`` does), which would
# break every SDK reader of our structured-mode records.
HEADER_TYPE = "event-type"
HEADER_ID = "event-id"
HEADER_CONTENT_TYPE = "content-type"
REQUIRED = ("id", "source", "type")

# The content-type header of every event, shared (librdkafka only reads headers).
CONTENT_TYPE_HEADER: tuple[str, bytes] = (HEADER_CONTENT_TYPE, CONTENT_TYPE.encode())
_quote = encode_basestring


@dataclass(slots=True)
class Event:
    """A decoded event. ``payload`` is the typed data once validated against the registry."""

    id: str
    source: str
    type: str
    time: str | None
    subject: str | None
    data: Any
    dataschema: str | None = None
    partitionkey: str | None = None
    datacontenttype: str = DATA_CONTENT_TYPE
    specversion: str = SPECVERSION
    payload: BaseModel | None = None
    legacy: str | None = None  # today's name, for a record of today's backend (upcast)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        for name in ("time", "subject", "datacontenttype", "dataschema", "partitionkey"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["data"] = self.data
        return out


class EncodedEvent(NamedTuple):
    """Everything the producer hands to Kafka for one event."""

    topic: str
    key: bytes
    value: bytes
    headers: Headers
    id: str
    type: str
    subject: str


# (second, its formatted prefix): one tuple, replaced whole, so threads never see
# one second's prefix paired with another second.
_last: tuple[int, str] = (-1, "")


def iso_millis(ms: int) -> str:
    """UTC RFC 3339 time with milliseconds: 2026-11-25T18:06:09.123Z."""
    global _last
    second, millis = divmod(ms, 1000)
    cached_second, prefix = _last
    if second != cached_second:
        prefix = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(second))
        _last = (second, prefix)
    return f"{prefix}.{millis:03d}Z"


class EnvelopeText(NamedTuple):
    """The constant text of one type's envelope at one time, around what changes per event.

    An event's value is ``head + id + middle + subject + tail + key + DATA_MEMBER``, then
    the data's JSON and ``}`` (``envelope_value``). Subject and key go in escaped
    (``_escaped``; id fields, the registry's keys and subjects, need nothing). Assembled
    by hand: a third of the cost of json.dumps on a dict. The type, the time and the
    schema URN never need escaping; the source is quoted.
    """

    head: str
    middle: str
    tail: str


def envelope_text(spec: EventType, source: str, time_text: str) -> EnvelopeText:
    """The envelope text of ``spec``'s events from ``source`` published at ``time_text``."""
    before_time, tail = _constant_text(spec, source)
    return EnvelopeText(_HEAD, f"{before_time}{time_text}{_SUBJECT_MEMBER}", tail)


def envelope_value(
    text: EnvelopeText, event_id: str, subject_text: str, key_text: str, data_json: bytes
) -> bytes:
    """One event's record value. The batch encoder (``_batch_encode``) inlines this very
    expression in its hot loop; its tests compare the two byte for byte."""
    return (
        (
            f"{text.head}{event_id}{text.middle}{subject_text}{text.tail}{key_text}{DATA_MEMBER}"
        ).encode()
        + data_json
        + b"}"
    )


def _constant_text(spec: EventType, source: str) -> tuple[str, str]:
    found = _TEXT_CACHE.get((spec.dataschema, source))  # the schema URN names type and version
    if found is None:
        before_time = f'","source":{_quote(source)},"type":"{spec.name}","time":"'
        tail = (
            f'","datacontenttype":"application/json","dataschema":"{spec.dataschema}",'
            '"partitionkey":"'
        )
        found = (before_time, tail)
        if len(_TEXT_CACHE) < 1024:  # sources are few; never grow without bound
            _TEXT_CACHE[(spec.dataschema, source)] = found
    return found


_TEXT_CACHE: dict[tuple[str, str], tuple[str, str]] = {}
_SUBJECT_MEMBER = '","subject":"'
DATA_MEMBER = '","data":'
_HEAD = '{"specversion":"1.0","id":"'
_HEAD_BYTES = _HEAD.encode()
_ID_LENGTH = 36  # a UUID's canonical text


def event_id_of(value: bytes | None) -> str | None:
    """The id of an event this module encoded, read from its fixed place in the value.

    Delivery reports carry the value but not the headers: this is how a report of a
    batched event (which has no future of its own) names its event.
    """
    if value is None or not value.startswith(_HEAD_BYTES):
        return None
    return value[len(_HEAD_BYTES) : len(_HEAD_BYTES) + _ID_LENGTH].decode("ascii", "replace")


def _escaped(text: str) -> str:
    """A string's JSON form without its quotes."""
    return _quote(text)[1:-1]


def encode_event(
    event_type: str | EventType,
    data: Any,
    *,
    source: str,
    key: str | None = None,
    subject: str | None = None,
) -> EncodedEvent:
    """Validate ``data`` against the type's schema and build the record; raises before anything is sent."""
    if isinstance(event_type, EventType):
        spec = event_type
    else:
        spec = REGISTRY.get_fast(event_type) or REGISTRY[event_type]
    fields = spec.validate_fields(data)
    event_id, ms = uuid7_parts()
    # The registry's keys and subjects are id fields (nothing to escape); overrides may not be.
    if key is None:
        key = key_text = spec.key_of(fields)
    else:
        key_text = _escaped(key)
    if subject is None:
        subject = subject_text = spec.subject_of(fields)
    else:
        subject_text = _escaped(subject)
    text = envelope_text(spec, source, iso_millis(ms))
    value = envelope_value(text, event_id, subject_text, key_text, spec.fields_serializer(fields))
    return EncodedEvent(
        spec.topic,
        key.encode(),
        value,
        [(HEADER_TYPE, spec.name.encode()), (HEADER_ID, event_id.encode()), CONTENT_TYPE_HEADER],
        event_id,
        spec.name,
        subject,
    )


def event_headers(event_type: str, event_id: str) -> Headers:
    return [(HEADER_TYPE, event_type.encode()), (HEADER_ID, event_id.encode()), CONTENT_TYPE_HEADER]


def envelope_problem(obj: Any) -> str | None:
    """Why a parsed JSON value is not a CloudEvents 1.0 event, or None if it is one."""
    if not isinstance(obj, dict):
        return f"not a JSON object (got {type(obj).__name__})"
    if obj.get("specversion") != SPECVERSION:
        return f"specversion is {obj.get('specversion')!r}, expected '1.0'"
    for name in REQUIRED:
        value = obj.get(name)
        if not isinstance(value, str) or not value:
            return f"attribute '{name}' is missing or not a non-empty string"
    for name in ("time", "subject", "dataschema", "partitionkey", "datacontenttype"):
        if name in obj and not isinstance(obj[name], str):
            return f"attribute '{name}' is not a string"
    if "time" in obj and not is_rfc3339(obj["time"]):
        return f"attribute 'time' is not an RFC 3339 time: {obj['time'][:40]!r}"
    if "data" not in obj:
        return "attribute 'data' is missing"
    return None


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)


def is_rfc3339(text: str) -> bool:
    """A full date and time with a zone (CloudEvents' ``time``), and a real one."""
    if _RFC3339.fullmatch(text) is None:
        return False
    try:
        datetime.fromisoformat(text.upper())  # month 13 or 25:00 have the right shape too
    except ValueError:
        return False
    return True


def event_of(envelope: dict[str, Any], payload: Any = None, legacy: str | None = None) -> Event:
    """An Event from a CloudEvent's JSON form (one ``envelope_problem`` found nothing in)."""
    return Event(
        id=envelope["id"],
        source=envelope["source"],
        type=envelope["type"],
        time=envelope.get("time"),
        subject=envelope.get("subject"),
        data=envelope["data"],
        dataschema=envelope.get("dataschema"),
        partitionkey=envelope.get("partitionkey"),
        datacontenttype=envelope.get("datacontenttype", DATA_CONTENT_TYPE),
        payload=payload,
        legacy=legacy,
    )


def parse_json(value: bytes | None) -> Any:
    if value is None:
        raise InvalidEvent("empty value (a tombstone), not an event")
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"value is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent("value is not JSON that can be read: nested too deeply") from None


def decode_event(value: bytes | None, *, validate: bool = True) -> Event:
    """Parse a structured-mode value; with ``validate``, check type and data against the registry.

    Raises InvalidEvent (bad envelope), UnknownEventType or InvalidEventData. Readers of
    topics use ``devctl.events.reading.read_record`` instead: every mode, the record's
    topic and headers, and no exception for any record.
    """
    obj = parse_json(value)
    problem = envelope_problem(obj)
    if problem is not None:
        raise InvalidEvent(f"not a CloudEvent: {problem}")
    event = event_of(obj)
    if validate:
        event.payload = validate_registered(event.type, event.data, event.dataschema)
    return event


def validate_registered(event_type: str, data: Any, dataschema: str | None = None) -> Any:
    """The typed payload of a registered type's data; UnknownEventType or InvalidEvent(Data)."""
    spec = REGISTRY[event_type]
    if dataschema is not None and dataschema != spec.dataschema:
        raise InvalidEvent(
            f"{event_type}: dataschema {dataschema} is not the registered {spec.dataschema}"
        )
    return spec.validate(data)
