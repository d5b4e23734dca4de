"""Errors of the events domain, all under the one DevctlError hierarchy."""

from __future__ import annotations

from devctl.errors import DevctlError, OperationFailed, UsageError


class UnknownEventType(UsageError):
    """A type the registry does not know; nothing was sent."""


class InvalidEvent(UsageError):
    """A value that is not a valid DevConnect CloudEvent (bad JSON, missing attributes)."""

    reason = "invalid-envelope"


class InvalidEventData(InvalidEvent):
    """The event's data fails its type's schema; nothing was sent."""

    reason = "invalid-data"

    def __init__(self, message: str, *, errors: list[str] | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.errors = errors or []


class ProducerQueueFull(OperationFailed):
    """The producer's bounded local queue is full; the event was not queued."""


class DeliveryFailed(OperationFailed):
    """The broker did not accept an event (reported through futures and callbacks)."""

    def __init__(self, message: str, *, code: int | None = None, retriable: bool = False):
        super().__init__(message)
        self.code = code
        self.retriable = retriable


class PermanentError(DevctlError):
    """Raised by a handler when retrying cannot help: the event goes to the DLQ at once."""
