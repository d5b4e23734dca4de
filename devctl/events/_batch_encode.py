"""The records of one ``publish_batch``: many events of one type, encoded as they are queued.

The envelope is envelope.py's (``EnvelopeText``, ``envelope_value``): its constant text
is built once per batch, and the hot loop below inlines ``envelope_value`` because a
function call per event would cost a tenth of the event's whole cost.
tests/events/test_batch_encode.py compares the two byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from devctl.events._batches import Headers
from devctl.events.envelope import (
    CONTENT_TYPE_HEADER,
    DATA_MEMBER,
    HEADER_ID,
    HEADER_TYPE,
    envelope_text,
    envelope_value,
    iso_millis,
)
from devctl.events.registry import EventType

# Producer.produce called with positional arguments: (topic, value, key, partition,
# callback, on_delivery, timestamp, headers), the order of confluent-kafka's C
# signature since headers came in. Parsing keywords costs ~0.25 µs a call, a tenth of
# a batched event's whole cost; tests/events/test_event_batch.py checks the mapping
# (partitioner, callback, timestamp and headers on the records) against the broker.
ANY_PARTITION = -1  # RD_KAFKA_PARTITION_UA: the partitioner picks, by key
STAMP_ON_SEND = 0  # timestamp 0: librdkafka stamps the record when it is produced

Produce = Callable[..., None]
Report = Callable[[Any, Any], None]


class BatchRecords:
    """The records of a batch: ``rows`` (validated fields) of ``spec``, ids from one block.

    Every event of it shares one publish time and one block of UUIDv7 ids
    (``prefix`` + the 12 hex digits of ``first + index``).
    """

    __slots__ = (
        "_dump",
        "_extra",
        "_first",
        "_key_of",
        "_prefix",
        "_rows",
        "_subject_of",
        "_text",
        "_type_header",
        "position",
    )

    def __init__(
        self,
        spec: EventType,
        source: str,
        ms: int,
        ids: tuple[str, int],
        rows: Sequence[dict[str, Any]],
        extra_headers: Headers,
    ):
        self._text = envelope_text(spec, source, iso_millis(ms))
        self._prefix, self._first = ids
        self._rows = rows
        self._extra = extra_headers
        self._type_header: tuple[str, bytes] = (HEADER_TYPE, spec.name.encode())
        self._key_of, self._subject_of, self._dump = (
            spec.key_of,
            spec.subject_of,
            spec.fields_serializer,
        )
        # After produce() raised: the index of the record that raised it.
        self.position = 0

    def event_id(self, index: int) -> str:
        return f"{self._prefix}{self._first + index:012x}"

    def key(self, index: int) -> str:
        return self._key_of(self._rows[index])

    def record(self, index: int) -> tuple[bytes, str, Headers]:
        """(value, key, headers) of one record, as ``produce`` builds it (to queue it again)."""
        fields = self._rows[index]
        event_id, key = self.event_id(index), self._key_of(fields)
        value = envelope_value(
            self._text, event_id, self._subject_of(fields), key, self._dump(fields)
        )
        headers: Headers = [self._type_header, (HEADER_ID, event_id), CONTENT_TYPE_HEADER]
        if self._extra:
            headers += self._extra
        return value, key, headers

    def produce(self, produce: Produce, topic: str, report: Report, start: int, stop: int) -> None:
        """Hand records ``start..stop`` to ``produce`` (a client's); if it raises, ``position``
        names the record it raised for (the ones before it are queued)."""
        head, middle, tail = self._text
        prefix, first, rows, extra = self._prefix, self._first, self._rows, self._extra
        key_of, subject_of, dump = self._key_of, self._subject_of, self._dump
        # Locals, not globals, in the hot loop.
        type_header, content, id_name = self._type_header, CONTENT_TYPE_HEADER, HEADER_ID
        data, anywhere, now = DATA_MEMBER, ANY_PARTITION, STAMP_ON_SEND
        index = start
        try:
            # One f-string and one pydantic-core call per event. Keys and subjects are
            # id fields (the registry checks): no escaping.
            for index in range(start, stop):
                fields = rows[index]
                event_id = f"{prefix}{first + index:012x}"
                key = key_of(fields)
                text = f"{head}{event_id}{middle}{subject_of(fields)}{tail}{key}{data}"
                value = text.encode() + dump(fields) + b"}"
                record_headers: Headers = [type_header, (id_name, event_id), content]
                if extra:
                    record_headers += extra
                produce(topic, value, key, anywhere, report, None, now, record_headers)
        except BaseException:
            self.position = index
            raise
