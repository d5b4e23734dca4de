"""Rates and quantiles from two readings of a source; never negative.

A counter that went down (an API instance or Redis restarted, a topic's log reset)
counts from zero again, as Prometheus' ``increase`` does for counters; an end
offset that went down counts nothing for that interval.
"""

from __future__ import annotations

from devctl.observe.model import (
    GroupStat,
    InstanceStat,
    RouteStat,
    TopicLagStat,
    TopicStat,
)
from devctl.observe.prom import Route, RouteCounters, quantile
from devctl.observe.sources import (
    ApiReading,
    GroupsReading,
    PresenceReading,
    RedisReading,
    TopicsReading,
)


def increase(before: float, now: float) -> float:
    """How much a counter grew; a counter that went down was reset and counts from 0."""
    return now - before if now >= before else now


def per_second(amount: float, seconds: float) -> float | None:
    return max(amount, 0.0) / seconds if seconds > 0 else None


def topic_stats(before: TopicsReading | None, now: TopicsReading) -> list[TopicStat]:
    """Events per second per topic from the growth of its partitions' true end offsets."""
    seconds = now.at - before.at if before is not None else 0.0
    out = []
    for topic, count in sorted(now.partitions.items()):
        keys = [(topic, p) for p in range(count) if (topic, p) in now.ends]
        grown = 0
        known = before is not None
        for key in keys:
            previous = before.ends.get(key) if before is not None else None
            if previous is None:
                known = False  # a new topic or partition: no rate until the next read
                continue
            # A log that went back (the in-memory broker restarted, the topic was
            # deleted and made again) adds nothing: a rate is never negative.
            grown += max(now.ends[key].high - previous.high, 0)
        out.append(
            TopicStat(
                topic=topic,
                partitions=count,
                messages=sum(now.ends[k].messages for k in keys),
                end_offset=sum(now.ends[k].high for k in keys),
                events_per_s=per_second(grown, seconds) if known else None,
                exact=all(now.ends[k].exact for k in keys),
            )
        )
    return out


def group_stats(now: GroupsReading) -> list[GroupStat]:
    out = []
    for group in sorted(now.groups, key=lambda g: g.group):
        per_topic: dict[str, list[int]] = {}
        uncommitted: dict[str, int] = {}
        for row in group.partitions:
            per_topic.setdefault(row.topic, []).append(row.lag)
            uncommitted[row.topic] = uncommitted.get(row.topic, 0) + (row.committed is None)
        topics = [
            TopicLagStat(topic, sum(lags), uncommitted[topic])
            for topic, lags in sorted(per_topic.items())
        ]
        out.append(
            GroupStat(group.group, group.state, group.members, sum(t.lag for t in topics), topics)
        )
    return out


def instance_stats(now: PresenceReading) -> list[InstanceStat]:
    return [
        InstanceStat(i.instance, i.alive, i.connections, len(i.users), i.last_heartbeat)
        for i in sorted(now.instances, key=lambda i: (not i.alive, i.instance))
    ]


def instance_rate(before: ApiReading | None, now: ApiReading) -> float | None:
    """Requests per second one instance answered over the interval."""
    if before is None:
        return None
    total = sum(
        increase(
            before.scrape.routes[key].requests if key in before.scrape.routes else 0.0,
            counters.requests,
        )
        for key, counters in now.scrape.routes.items()
    )
    return per_second(total, now.at - before.at)


def route_stats(pairs: list[tuple[ApiReading | None, ApiReading]]) -> list[RouteStat]:
    """Per route over every instance: requests and 5xx per second, p50 and p99 latency.

    The quantiles come from the histogram buckets' growth over the interval, summed
    over the instances (all share the bounds of devctl.api.metrics), so they describe
    the requests of the interval, not of the instances' lifetimes.
    """
    totals: dict[Route, float] = {}
    rates: dict[Route, float] = {}
    errors: dict[Route, float] = {}
    buckets: dict[Route, dict[float, float]] = {}
    measured: set[Route] = set()
    for before, now in pairs:
        seconds = now.at - before.at if before is not None else 0.0
        for key, counters in now.scrape.routes.items():
            totals[key] = totals.get(key, 0.0) + counters.requests
            if before is None or seconds <= 0:
                continue
            measured.add(key)
            earlier = before.scrape.routes.get(key, RouteCounters())
            reset = counters.requests < earlier.requests
            base = RouteCounters() if reset else earlier
            rates[key] = rates.get(key, 0.0) + (counters.requests - base.requests) / seconds
            errors[key] = errors.get(key, 0.0) + max(counters.errors - base.errors, 0) / seconds
            old = dict(base.buckets)
            into = buckets.setdefault(key, {})
            for bound, count in counters.buckets:
                into[bound] = into.get(bound, 0.0) + max(count - old.get(bound, 0.0), 0.0)
    out = []
    for key in sorted(totals, key=lambda k: (k[1], k[0])):
        grown = sorted(buckets.get(key, {}).items())
        p50, p99 = quantile(0.5, grown), quantile(0.99, grown)
        out.append(
            RouteStat(
                method=key[0],
                route=key[1],
                requests=int(totals[key]),
                requests_per_s=rates.get(key) if key in measured else None,
                errors_per_s=errors.get(key) if key in measured else None,
                p50_ms=None if p50 is None else p50 * 1000,
                p99_ms=None if p99 is None else p99 * 1000,
            )
        )
    return out


def redis_ops(before: RedisReading | None, now: RedisReading) -> float | None:
    """Commands per second from INFO's total_commands_processed (ours included: 2 a read)."""
    if before is None:
        return None
    grown = increase(
        float(before.info.get("total_commands_processed", 0)),
        float(now.info.get("total_commands_processed", 0)),
    )
    return per_second(grown, now.at - before.at)
