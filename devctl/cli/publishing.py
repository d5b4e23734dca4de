"""Publishing from the command line: inputs, validation of every event up front, pacing, report.

It parses command-line input (``--data``, JSON lines, ``--rate``), so it lives in
the CLI layer and names flags; the domain it calls is the producer and the registry.

Inputs are ``--data`` (one event, repeated ``count`` times with fresh ids) or JSON
lines (a file or standard input). A line is the event's data when a type is
given, otherwise an object ``{"type": ..., "data": ..., "key"?: ..., "subject"?: ...}``
(a whole CloudEvent fits: its id and time are assigned anew). Every event is
validated (and its size checked against the producer's record limit) before the
first is sent, so a bad line sends nothing. ``raw`` sends the bytes as they are,
without envelope or validation (the size is still checked).

A send that is cut short (Ctrl-C, a full queue, a refused record) still waits
briefly for the reports of what was queued: the report says what was delivered,
and ``aborted`` holds the exception for the caller to raise after showing it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from devctl.errors import UsageError
from devctl.events.envelope import EncodedEvent
from devctl.events.errors import InvalidEvent, UnknownEventType
from devctl.events.producer import Delivery, EventProducer
from devctl.events.registry import REGISTRY


@dataclass(frozen=True)
class Outgoing:
    """One validated event (encoded again when sent: fresh id and time), or raw bytes."""

    encoded: EncodedEvent | None = None
    payload: Any = None  # the validated, typed data
    key: str | None = None
    subject: str | None = None
    raw: bytes | None = None
    raw_key: bytes | None = None


def parse_rate(text: str | None) -> float | None:
    """'100', '100/s', '6000/m' -> events per second."""
    if text is None:
        return None
    value, _, unit = text.strip().partition("/")
    per = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit.strip())
    try:
        rate = float(value) / per if per else -1.0
    except ValueError:
        rate = -1.0
    if rate <= 0:
        raise UsageError(f"--rate expects N/s (or N/m, N/h) with N > 0, got '{text}'")
    return rate


def _loads(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where}: not valid JSON: {exc}") from None


def prepare(
    producer: EventProducer,
    topic: str,
    *,
    event_type: str | None,
    data: str | None = None,
    lines: Iterable[str | bytes] | None = None,
    key: str | None = None,
    count: int | None = None,
    raw: bool = False,
) -> list[Outgoing]:
    """Build (and validate) every record before anything is sent."""
    if data is not None:
        if raw:
            # surrogateescape: the bytes of the argument as they were given.
            one = Outgoing(raw=data.encode("utf-8", "surrogateescape"), raw_key=_bytes(key))
        else:
            if event_type is None:
                raise UsageError("--data needs --type (or --raw)")
            payload = _loads(data, "--data")
            one = _encode(producer, topic, event_type, payload, key, None, "--data")
        _check_size(producer, one, "--data")
        return [one] * (count or 1)
    out: list[Outgoing] = []
    for number, line in enumerate(lines or (), start=1):
        if count is not None and len(out) >= count:
            break
        where = f"line {number}"
        if raw:
            value = line if isinstance(line, bytes) else line.encode("utf-8", "surrogateescape")
            value = value.rstrip(b"\r\n")
            if value.strip():
                out.append(_check_size(producer, Outgoing(raw=value, raw_key=_bytes(key)), where))
            continue
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError(
                    f"{where}: not UTF-8 text (byte {exc.start + 1}: {exc.reason})",
                    hint="JSON lines must be UTF-8; --raw sends bytes as they are",
                ) from None
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        obj = _loads(text, where)
        if event_type is not None:
            out.append(
                _check_size(
                    producer, _encode(producer, topic, event_type, obj, key, None, where), where
                )
            )
            continue
        if not isinstance(obj, dict) or "type" not in obj or "data" not in obj:
            raise UsageError(
                f"{where}: expected an object with 'type' and 'data' (or pass --type)",
            )
        line_key = _text(obj.get("key", obj.get("partitionkey", key)), "key", where)
        subject = _text(obj.get("subject"), "subject", where)
        encoded = _encode(producer, topic, str(obj["type"]), obj["data"], line_key, subject, where)
        out.append(_check_size(producer, encoded, where))
    if not out:
        raise UsageError("no events to publish (the input is empty)")
    return out


# Room left under the record limit for headers, framing and a re-encoded id and time.
_RECORD_OVERHEAD = 1024


def _check_size(producer: EventProducer, record: Outgoing, where: str) -> Outgoing:
    if record.encoded is not None:
        size = len(record.encoded.value) + len(record.encoded.key)
    else:
        size = len(record.raw or b"") + len(record.raw_key or b"")
    limit = producer.max_record_bytes - _RECORD_OVERHEAD
    if size > limit:
        raise UsageError(
            f"{where}: the record is {size:,} bytes; the limit is {limit:,}",
            hint="nothing was sent; large payloads belong in storage, with a reference in the event",
        )
    return record


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", "surrogateescape")


# Keys and subjects are ids (user ids, conversation ids): short by nature.
MAX_KEY_LENGTH = 256


def _text(value: Any, name: str, where: str) -> str | None:
    """A key or subject from an input line: a short string of valid Unicode, or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f"{where}: '{name}' must be a string, got {type(value).__name__}")
    if len(value) > MAX_KEY_LENGTH:
        raise UsageError(f"{where}: '{name}' is longer than {MAX_KEY_LENGTH} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"{where}: '{name}' is not valid Unicode text (a lone surrogate such as \\ud800)"
        ) from None
    return value


def _encode(
    producer: EventProducer,
    topic: str,
    event_type: str,
    data: Any,
    key: str | None,
    subject: str | None,
    where: str,
) -> Outgoing:
    try:
        spec = REGISTRY[event_type]
        payload = spec.validate(data)
        encoded = producer.encode(spec, payload, key=key, subject=subject)
    except (UnknownEventType, InvalidEvent) as exc:
        prefix = "" if where == "--data" else f"{where}: "
        raise type(exc)(prefix + exc.message, hint=exc.hint) from None
    except UnicodeEncodeError:
        raise UsageError(
            f"{where}: the event is not valid Unicode text (a lone surrogate such as \\ud800)"
        ) from None
    if encoded.topic != topic and topic in REGISTRY.topics():
        raise UsageError(
            f"{where}: {event_type} belongs on {encoded.topic}, not {topic}",
            hint=f"publish it with `devctl publish {encoded.topic} ...`",
        )
    return Outgoing(encoded=encoded, payload=payload, key=key, subject=subject)


@dataclass
class PublishReport:
    deliveries: list[Delivery] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    partitions: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0
    not_reported: int = 0
    not_sent: int = 0  # records never handed to the producer (the send was cut short)
    aborted: BaseException | None = None  # what cut it short (for the caller to raise)

    @property
    def delivered(self) -> int:
        return sum(self.partitions.values())

    @property
    def failed(self) -> int:
        return len(self.failures) + self.not_reported + self.not_sent


def send(
    producer: EventProducer,
    topic: str,
    records: list[Outgoing],
    *,
    rate: float | None = None,
    timeout: float = 30.0,
    keep: int = 100,
    on_progress: Callable[[int], None] | None = None,
) -> PublishReport:
    """Send, paced to ``rate`` per second; wait for every delivery report (up to ``timeout``)."""
    report = PublishReport()
    started = time.perf_counter()

    def collect(delivery: Delivery) -> None:
        if delivery.ok:
            report.partitions[delivery.partition] += 1
            if len(report.deliveries) < keep:
                report.deliveries.append(delivery)
        else:
            report.failures.append(
                f"{delivery.type or 'record'} {delivery.event_id or ''}: {delivery.error}"
            )

    try:
        for index, record in enumerate(records):
            if rate is not None:
                ahead = started + index / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            # Outcomes arrive through `collect` (a failure is never only logged).
            if record.encoded is not None:
                producer.publish(
                    record.encoded.type,
                    record.payload,
                    key=record.key,
                    subject=record.subject,
                    topic=topic,
                    on_delivery=collect,
                )
            else:
                producer.publish_raw(topic, record.raw, key=record.raw_key, on_delivery=collect)
            if on_progress is not None and index % 1000 == 999:
                on_progress(index + 1)
    except (Exception, KeyboardInterrupt) as exc:
        report.aborted = exc
        timeout = min(timeout, 5.0)  # what was queued is reported, without a long wait
    # flush() returns once every delivery report has been served (callbacks included).
    report.not_reported = producer.flush(timeout)
    if report.aborted is not None:
        # Counted from the outcomes, not from `queued`: an interrupt can land between a
        # publish that queued its event and the count that follows it.
        accounted = report.delivered + len(report.failures) + report.not_reported
        report.not_sent = max(len(records) - accounted, 0)
    report.deliveries.sort(key=lambda d: (d.partition, d.offset))
    report.seconds = time.perf_counter() - started
    return report
