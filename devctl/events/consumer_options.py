"""The consumer runtime's settings, its counters, and what it does with each record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from devctl.config.loader import Settings


class RecordAction(StrEnum):
    """What the runtime does with a record it read (a str: compares equal to its value)."""

    HANDLE = "handle"  # a valid event with a handler
    IGNORE = "ignore"  # a valid event of a type with no handler
    SKIP = "skip"  # a check record (devctl-check header)
    DEAD = "dead"  # not an event the registry accepts: dead-lettered
    DUPLICATE = "duplicate"  # handled before (idempotency guard) or repeated in the batch


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    """The runtime's tuning knobs. ``from_settings`` takes the configured ones
    (``events.consumer_*``, ``events.idempotency_ttl``) unless given."""

    batch_size: int
    max_retries: int
    backoff_ms: int
    backoff_max_ms: int
    idempotency_ttl: int
    idempotency: bool = True  # the Redis guard (markers per group and event id)
    skip_check_records: bool = True
    poll_timeout: float = 0.5
    lag_interval: float = 5.0  # seconds between lag refreshes; 0: never
    # None: stall (and retry) until the failure clears or the runtime is stopped.
    stall_limit: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **given: Any) -> ConsumerOptions:
        """Options from the config, with ``given`` ones instead (None: the configured one;
        a batch size or TTL of 0 too, as the keyword arguments always allowed)."""
        unknown = set(given) - set(cls.names())
        if unknown:
            raise TypeError(f"unknown consumer options: {', '.join(sorted(unknown))}")
        events = settings.events
        configured: dict[str, Any] = {
            "batch_size": given.pop("batch_size", None) or events.consumer_batch_size,
            "idempotency_ttl": given.pop("idempotency_ttl", None) or events.idempotency_ttl,
            "max_retries": events.consumer_max_retries,
            "backoff_ms": events.consumer_backoff_ms,
            "backoff_max_ms": events.consumer_backoff_max_ms,
        }
        for name in ("max_retries", "backoff_ms", "backoff_max_ms"):
            if given.get(name) is not None:
                configured[name] = given[name]
            given.pop(name, None)
        return cls(**configured, **given)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def delay(self, attempt: int) -> float:
        """Seconds before retry ``attempt`` (1, 2, ...): the backoff doubles up to its max."""
        delay_ms: int = self.backoff_ms * 2 ** max(attempt - 1, 0)
        return min(delay_ms, self.backoff_max_ms) / 1000


@dataclass
class Counters:
    processed: int = 0  # events whose handler succeeded
    retried: int = 0  # handler attempts that were retried
    dead_lettered: int = 0
    duplicates: int = 0  # redelivered events skipped by the idempotency guard
    ignored: int = 0  # valid events of a type with no handler
    skipped: int = 0  # check records (devctl-check header)
    stalls: int = 0  # infrastructure failures that paused the runtime
    failed_commits: int = 0
    batches: int = 0
    lag: int | None = None  # records behind the true end, over assigned partitions
    lag_by_partition: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
