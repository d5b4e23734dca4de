"""The consumer runtime's lag: records behind the true end offset, per assigned partition."""

from __future__ import annotations

import contextlib

from confluent_kafka import Consumer, KafkaException

from devctl.clients.endpoints import Endpoints
from devctl.config.loader import Settings
from devctl.streams.offsets import Partition, end_offsets, offsets_consumer


class LagMeter:
    """Measures a consumer's lag with a consumer of its own for the end offsets (made on
    first use, closed by ``close``)."""

    def __init__(self, endpoints: Endpoints, settings: Settings):
        self._endpoints = endpoints
        self._settings = settings
        self._offsets: Consumer | None = None

    def measure(self, consumer: Consumer) -> dict[str, int] | None:
        """Lag by ``topic[partition]``; None with nothing assigned. Raises what the
        client raises (the caller decides: lag is informative)."""
        assigned = consumer.assignment()
        if not assigned:
            return None
        positions = consumer.position(assigned)
        if self._offsets is None:
            self._offsets = offsets_consumer(self._endpoints, self._settings)
        ends = end_offsets(
            self._endpoints,
            self._settings,
            [(tp.topic, tp.partition) for tp in assigned],
            timeout=self._settings.kafka.request_timeout_ms / 1000,
            consumer=self._offsets,
        )
        committed: dict[Partition, int] | None = None
        by_partition: dict[str, int] = {}
        for tp in positions:
            key = (tp.topic, tp.partition)
            position = tp.offset
            if position < 0:
                if committed is None:
                    committed = {
                        (c.topic, c.partition): c.offset
                        for c in consumer.committed(assigned, timeout=5)
                    }
                position = committed.get(key, -1)
                if position < 0:
                    position = ends[key].low
            by_partition[f"{tp.topic}[{tp.partition}]"] = max(ends[key].high - position, 0)
        return by_partition

    def close(self) -> None:
        if self._offsets is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self._offsets.close()
            self._offsets = None
