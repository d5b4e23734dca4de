"""DevConnect events: one CloudEvents envelope, one registry, a producer, a consumer runtime.

Everything that publishes or consumes DevConnect events goes through this package
(see docs/events.md). Heavy modules (the producer, the runtime) are imported by
their callers, so importing ``devctl.events`` stays cheap.
"""

from devctl.events._batches import Headers  # Kafka headers as librdkafka takes them
from devctl.events.envelope import Event, decode_event, encode_event
from devctl.events.errors import (
    DeliveryFailed,
    InvalidEvent,
    InvalidEventData,
    PermanentError,
    ProducerQueueFull,
    UnknownEventType,
)
from devctl.events.registry import REGISTRY, EventType, get_type

__all__ = [
    "REGISTRY",
    "DeliveryFailed",
    "Event",
    "EventType",
    "Headers",
    "InvalidEvent",
    "InvalidEventData",
    "PermanentError",
    "ProducerQueueFull",
    "UnknownEventType",
    "decode_event",
    "encode_event",
    "get_type",
]
