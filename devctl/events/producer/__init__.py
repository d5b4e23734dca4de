"""The event producer: idempotent, acks=all, never blocking the caller on the network.

``publish`` validates and encodes the event, hands it to librdkafka's local
queue and returns at once with a ``DeliveryFuture`` that resolves to a
``Delivery`` (or raises ``DeliveryFailed``) when the broker answers. A background
thread serves delivery reports, so futures resolve without the caller polling;
``publish_async`` (or ``await future.wait_async()``) awaits it from asyncio code.

``publish_batch`` queues many events of one type at about twice the rate: the
list is validated first in one pydantic-core call (a bad item: nothing queued),
the events share a block of ids and one publish time, successes are counted by
one shared callback and failures still come one by one; one BatchFuture.

The local queue is bounded (``events.producer_queue_size``). When it is full the
policy ``events.producer_queue_full`` applies: ``error`` (default) raises
``ProducerQueueFull`` at once and nothing is queued (a batch that does not fit is
refused whole); ``block`` waits up to ``events.producer_block_timeout`` seconds
for room, then raises. A batch that meets a full queue half-way waits that long
whatever the policy, then reports the rest as failed. That is the only wait:
publishing never waits for the network.

No failure is silent: a failed delivery is logged, counted in ``stats.failed``,
passed to the caller's callback and set on the future. Events still queued when
the producer closes are purged and reported as failed the same way. A client that
fails fatally (a broker restart) is replaced and what the broker never stored is
sent again (``clients``).

The modules: ``core`` (EventProducer), ``futures`` (what publishing returns),
``reports`` (report dispatch), ``clients`` (the librdkafka client and its
replacement), ``admission`` (queue room, batches under way, the stop at close);
the batch encoder is ``devctl.events._batch_encode``, beside the envelope code.
"""

from devctl.events.producer.clients import resend_headers
from devctl.events.producer.core import QUEUE_FULL_POLICIES, EventProducer
from devctl.events.producer.futures import (
    BatchFuture,
    BatchResult,
    Delivery,
    DeliveryCallback,
    DeliveryFuture,
    ErrorCallback,
    ProducerStats,
)

__all__ = [
    "QUEUE_FULL_POLICIES",
    "BatchFuture",
    "BatchResult",
    "Delivery",
    "DeliveryCallback",
    "DeliveryFuture",
    "ErrorCallback",
    "EventProducer",
    "ProducerStats",
    "resend_headers",
]
