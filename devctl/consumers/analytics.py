"""The analytics consumer: counts every DevConnect event into Redis, exactly once.

It reads all five DevConnect topics (the registry's) in the consumer group
``<kafka.group_id>.analytics`` (``devconnect-group.analytics`` by default: one group per
consumer, so the notifications consumer and this one each see every event, and several
analytics processes share the partitions). Every valid event counts, legacy records of
today's backend too (the runtime upcasts them); records that are not valid events are
dead-lettered by the runtime and never counted.

One batch handler for every type: the runtime hands it runs of consecutive events of
one type, whose effects (``devctl.state.analytics``) are merged and queued on
``ctx.tx``, the MULTI that also sets the events' idempotency markers. A redelivered
event (a crash before the commit, a rebalance) finds its marker and changes nothing;
two consumers racing on one event lose one transaction, not a count.

An event without a readable ``time`` (a legacy record without ``timestamp``) is
counted at the moment it is processed: the only time there is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from devctl.state.analytics import Activity, AnalyticsOps, event_time, queue_effects

if TYPE_CHECKING:
    from devctl.clients.endpoints import Endpoints
    from devctl.config.loader import Settings
    from devctl.events.consumer import ConsumerRuntime
    from devctl.events.envelope import Event
    from devctl.events.handling import HandlerContext
    from devctl.streams.offsets import Partition

log = logging.getLogger("devctl.consumers.analytics")

NAME = "analytics"


def group_name(settings: Settings) -> str:
    """The consumer group: ``<kafka.group_id>.analytics``."""
    from devctl.consumers import consumer_group

    return consumer_group(settings, NAME)


def activity_of(event: Event, now: float) -> Activity:
    """What the analytics count of an event; ``now`` stands in for a missing time."""
    at = event_time(event.time)
    data = event.data if isinstance(event.data, dict) else {}
    return Activity(event.type, now if at is None else at, event.subject, data)


def build(
    settings: Settings,
    endpoints: Endpoints,
    *,
    topics: Sequence[str] | None = None,
    partitions: Sequence[Partition] | None = None,
    group: str | None = None,
    **options: Any,
) -> ConsumerRuntime:
    """The analytics consumer on the runtime, ready to ``run()``.

    ``topics`` default to every registered topic and ``group`` to ``group_name``;
    ``partitions`` pin partitions instead of joining the group (benchmarks);
    ``options`` go to ConsumerRuntime (``batch_size=``, ``stall_limit=``, ...).
    """
    from devctl.events.consumer import ANY_TYPE, ConsumerRuntime
    from devctl.events.registry import REGISTRY

    runtime = ConsumerRuntime(
        endpoints,
        settings,
        group=group or group_name(settings),
        topics=list(topics) if topics is not None else REGISTRY.topics(),
        partitions=partitions,
        **options,
    )
    ops = AnalyticsOps(runtime.keys)

    def count(events: list[Event], ctx: HandlerContext) -> None:
        now = time.time()
        queue_effects(ctx.tx, ops.effects([activity_of(e, now) for e in events], now))

    runtime.on(ANY_TYPE, count, batch=True)
    return runtime


def main(settings: Settings) -> int | None:
    """Run the analytics consumer until SIGTERM/SIGINT (then finish the batch, commit, leave)."""
    from devctl.engines import select_engine

    endpoints = select_engine(settings).endpoints(("redis", "kafka"))
    runtime = build(settings, endpoints)
    log.info("%s: counting %s", runtime.group, ", ".join(runtime.topics))
    runtime.run()
    return 0
