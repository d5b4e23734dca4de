"""Report dispatch: every event's outcome is counted, logged, set on its future and passed on.

No failure is silent: a failed delivery is logged, counted in ``stats.failed``,
passed to the callbacks and set on the future. A report the client replacement
takes back (``take_back``: the broker never stored the event) is not an outcome yet.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import KafkaError, Message

from devctl.events.errors import DeliveryFailed
from devctl.events.producer.futures import (
    Delivery,
    DeliveryCallback,
    DeliveryFuture,
    ErrorCallback,
    ProducerStats,
    delivery_of,
)

log = logging.getLogger("devctl.events.producer")

TakeBack = Callable[[DeliveryFuture, KafkaError, Message], bool]


def _keep(_pending: DeliveryFuture, _err: KafkaError, _msg: Message) -> bool:
    return False


class Reports:
    """One producer's counters, lock and callbacks, and what settles its futures."""

    def __init__(self, on_delivery: DeliveryCallback | None, on_error: ErrorCallback | None):
        self.stats = ProducerStats()
        # One lock per producer guards the stats and every future's state: a delivery
        # report takes it once.
        self.lock = threading.Lock()
        self.on_delivery = on_delivery
        self.on_error = on_error
        # Set by the producer to its client replacement's: a refused event it takes back
        # to send again through a new client (see clients.Clients.take_back).
        self.take_back: TakeBack = _keep

    def report(self, pending: DeliveryFuture, err: KafkaError | None, msg: Message) -> None:
        """A delivery report with an error, or one a callback wants as a Delivery."""
        if err is not None and self.take_back(pending, err, msg):
            return
        if err is None:
            with self.lock:
                self.stats.delivered += 1
            delivery = delivery_of(msg, pending.event_id, pending.type, None)
            pending.settle(delivery, None)
        else:
            with self.lock:
                self.stats.failed += 1
            delivery = delivery_of(msg, pending.event_id, pending.type, err)
            log.error(
                "delivery of %s %s to %s failed: %s",
                pending.type or "record",
                pending.event_id or f"(key {delivery.key})",
                delivery.topic,
                delivery.error,
            )
            pending.settle(
                None,
                DeliveryFailed(
                    f"{pending.type or 'record'} {pending.event_id or ''} to {delivery.topic} "
                    f"not delivered: {delivery.error}",
                    code=delivery.error_code,
                    retriable=bool(err.retriable()),
                ),
            )
        self._call_back(pending, delivery)

    def fail(
        self,
        pending: DeliveryFuture,
        topic: str,
        key: bytes | None,
        reason: str,
        *,
        rejected: bool = False,
    ) -> None:
        """An event that failed without a delivery report; ``rejected``: it never reached
        the local queue (counted in stats.rejected, not stats.failed)."""
        with self.lock:
            if rejected:
                self.stats.rejected += 1
            else:
                self.stats.failed += 1
        delivery = Delivery(
            topic, -1, -1, key.decode("utf-8", "replace") if key else None,
            pending.event_id, pending.type, reason, None,
        )  # fmt: skip
        log.error("delivery of %s %s to %s failed: %s", pending.type or "record",
                  pending.event_id or "", topic, reason)  # fmt: skip
        pending.settle(None, DeliveryFailed(f"{pending.type or 'record'} to {topic}: {reason}"))
        self._call_back(pending, delivery)

    def _call_back(self, pending: DeliveryFuture, delivery: Delivery) -> None:
        # The producer's callback first: a batch's own (last) settles the batch, which
        # must not resolve before every callback has seen its events.
        for callback in (self.on_delivery, pending.on_delivery):
            if callback is not None:
                try:
                    callback(delivery)
                except Exception:  # a caller's bug must not stop delivery reports
                    log.exception("delivery callback raised")

    def tell(self, text: str) -> None:
        """Pass a client-level problem to the caller's error callback."""
        if self.on_error is not None:
            try:
                self.on_error(text)
            except Exception:
                log.exception("error callback raised")
