"""Dead letters: the copy of a record the consumer runtime gives up on, and why.

The copy keeps key, value and headers unchanged and adds ``dlq-*`` headers (all
values UTF-8 text). It is written to the topic's dead-letter topic and waited for:
the runtime never moves past a record whose copy is not stored.
"""

from __future__ import annotations

import time

from devctl.clients.endpoints import Endpoints
from devctl.config.loader import Settings
from devctl.events._batches import headers_of
from devctl.events.envelope import iso_millis
from devctl.events.handling import Record, Stall
from devctl.events.producer import Delivery, EventProducer

DLQ_REASON = "dlq-reason"
DLQ_ERROR = "dlq-error"
DLQ_ERROR_TYPE = "dlq-error-type"
DLQ_TOPIC = "dlq-topic"
DLQ_PARTITION = "dlq-partition"
DLQ_OFFSET = "dlq-offset"
DLQ_GROUP = "dlq-group"
DLQ_ATTEMPTS = "dlq-attempts"
DLQ_TIME = "dlq-time"
DLQ_REASONS = (
    "invalid-envelope",  # not JSON, or not a CloudEvents 1.0 event (or undecodable at all)
    "unknown-type",  # a type the registry does not know (or an unknown legacy name)
    "invalid-data",  # data fails the type's schema (or names another schema version)
    "wrong-topic",  # a registered type on another registered type's topic
    "handler-rejected",  # the handler raised PermanentError
    "retries-exhausted",  # the handler kept failing
)

# The dlq-error-type header of records the reader could not take (as before: error class names).
READER_ERROR_TYPES = {
    "invalid-envelope": "InvalidEvent",
    "unknown-type": "UnknownEventType",
    "invalid-data": "InvalidEventData",
    "wrong-topic": "WrongTopic",
}


def dead_letter_topic(settings: Settings, topic: str) -> str:
    """The configured dead-letter topic of ``topic`` (``<topic><suffix>`` by default)."""
    for spec in settings.topics:
        if spec.dead_letter_of == topic:
            return spec.name
    return topic + settings.topic_defaults.dead_letter_suffix


class DeadLetters:
    """Writes dead letters of one consumer group, through ``producer`` or one of its own
    (made on first use, closed by ``close``)."""

    def __init__(
        self,
        endpoints: Endpoints,
        settings: Settings,
        group: str,
        producer: EventProducer | None = None,
    ):
        self._endpoints = endpoints
        self._settings = settings
        self._group = group
        self._producer = producer
        self._own_producer = producer is None

    def write(self, record: Record, attempts: int) -> tuple[str, Delivery]:
        """Copy ``record`` to its dead-letter topic and wait for it; Stall("kafka") if not stored."""
        target = dead_letter_topic(self._settings, record.topic)
        headers = headers_of(record.msg)
        headers += [
            (DLQ_REASON, record.reason.encode()),
            (DLQ_ERROR, record.error[:1000].encode("utf-8", "replace")),
            (DLQ_ERROR_TYPE, record.error_type.encode()),
            (DLQ_TOPIC, record.topic.encode()),
            (DLQ_PARTITION, str(record.partition).encode()),
            (DLQ_OFFSET, str(record.offset).encode()),
            (DLQ_GROUP, self._group.encode()),
            (DLQ_ATTEMPTS, str(attempts).encode()),
            (DLQ_TIME, iso_millis(int(time.time() * 1000)).encode()),
        ]
        if self._producer is None:
            self._producer = EventProducer(self._endpoints, self._settings, queue_full="block")
        future = self._producer.publish_raw(
            target, record.msg.value(), key=record.msg.key(), headers=headers
        )
        timeout = self._settings.events.delivery_timeout_ms / 1000 + 5
        try:
            return target, future.result(timeout=timeout)
        except Exception as exc:  # not moving on without the copy: that would lose the event
            raise Stall(f"dead-letter write to {target} failed: {exc}", "kafka") from exc

    def close(self) -> None:
        if self._producer is not None and self._own_producer:
            self._producer.close(5.0)
            self._producer = None
