"""One snapshot of the running system, panel by panel, and its JSON (docs/top.md).

Each panel carries ``error``: None when its source answered within the deadline,
else why not ("down" in the JSON's ``status``); its numbers are then empty. Rates
are None until a source has been read twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The JSON's format: bumped when a key changes meaning or goes away.
FORMAT = 1


def _status(error: str | None) -> str:
    return "ok" if error is None else "down"


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class TopicStat:
    topic: str
    partitions: int
    messages: int  # retained: end - low, summed over partitions
    end_offset: int  # the true ends, summed over partitions
    events_per_s: float | None
    exact: bool  # every partition's true end was confirmed (see docs/top.md, Tansu)

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partitions": self.partitions,
            "messages": self.messages,
            "end_offset": self.end_offset,
            "events_per_s": _round(self.events_per_s),
            "exact": self.exact,
        }


@dataclass(frozen=True)
class TopicLagStat:
    topic: str
    lag: int
    uncommitted: int  # partitions the group never committed (counted from their start)

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "lag": self.lag, "uncommitted": self.uncommitted}


@dataclass(frozen=True)
class GroupStat:
    group: str
    state: str
    members: int | None
    lag: int
    topics: list[TopicLagStat]

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "lag": self.lag,
            "topics": [t.to_json() for t in self.topics],
        }


@dataclass(frozen=True)
class InstanceStat:
    instance: str
    alive: bool
    connections: int
    users: int
    last_heartbeat: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "alive": self.alive,
            "connections": self.connections,
            "users": self.users,
            "last_heartbeat": self.last_heartbeat,
        }


@dataclass(frozen=True)
class RouteStat:
    method: str
    route: str
    requests: int  # since the instances started, summed
    requests_per_s: float | None
    errors_per_s: float | None  # 5xx answers
    p50_ms: float | None  # None: no request in the interval
    p99_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "route": self.route,
            "requests": self.requests,
            "requests_per_s": _round(self.requests_per_s),
            "errors_per_s": _round(self.errors_per_s),
            "p50_ms": _round(self.p50_ms),
            "p99_ms": _round(self.p99_ms),
        }


@dataclass(frozen=True)
class ApiInstanceStat:
    name: str
    url: str
    state: str  # the supervisor's state of it ("up", "backoff", ...); "given" for --api-url
    requests_per_s: float | None
    error: str | None = None
    latency_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "state": self.state,
            "status": _status(self.error),
            "error": self.error,
            "requests_per_s": _round(self.requests_per_s),
            "latency_ms": _round(self.latency_ms),
        }


@dataclass
class Panel:
    """What every panel has: why its source failed (None: it answered) and how fast."""

    error: str | None = None
    latency_ms: float | None = None

    def _head(self) -> dict[str, Any]:
        return {
            "status": _status(self.error),
            "error": self.error,
            "latency_ms": _round(self.latency_ms),
        }


@dataclass
class TopicsPanel(Panel):
    topics: list[TopicStat] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self._head(), "topics": [t.to_json() for t in self.topics]}


@dataclass
class GroupsPanel(Panel):
    groups: list[GroupStat] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self._head(), "groups": [g.to_json() for g in self.groups]}


@dataclass
class PresencePanel(Panel):
    online_users: int | None = None
    connections: int | None = None  # on live instances
    instances: list[InstanceStat] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **self._head(),
            "online_users": self.online_users,
            "connections": self.connections,
            "instances": [i.to_json() for i in self.instances],
        }


@dataclass
class ApiPanel(Panel):
    instances: list[ApiInstanceStat] = field(default_factory=list)
    routes: list[RouteStat] = field(default_factory=list)  # over every instance that answered

    def to_json(self) -> dict[str, Any]:
        return {
            **self._head(),
            "instances": [i.to_json() for i in self.instances],
            "routes": [r.to_json() for r in self.routes],
        }


@dataclass
class OutboxPanel(Panel):
    database: str | None = None  # password redacted
    backlog: int | None = None
    oldest_age_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **self._head(),
            "database": self.database,
            "backlog": self.backlog,
            "oldest_age_s": _round(self.oldest_age_s),
        }


@dataclass
class RedisPanel(Panel):
    version: str | None = None
    used_memory: int | None = None  # bytes
    used_memory_human: str | None = None
    maxmemory: int | None = None  # 0: no limit
    ops_per_s: float | None = None  # commands processed, over the interval
    connected_clients: int | None = None
    keys: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **self._head(),
            "version": self.version,
            "used_memory": self.used_memory,
            "used_memory_human": self.used_memory_human,
            "maxmemory": self.maxmemory,
            "ops_per_s": _round(self.ops_per_s),
            "connected_clients": self.connected_clients,
            "keys": self.keys,
        }


@dataclass
class EventsPanel(Panel):
    lines: list[dict[str, Any]] = field(default_factory=list)  # EventLine.to_json, newest last
    seen: int = 0  # events read since the dashboard started

    def to_json(self) -> dict[str, Any]:
        return {**self._head(), "seen": self.seen, "lines": list(self.lines)}


@dataclass
class Snapshot:
    taken_at: float  # epoch seconds
    interval_s: float | None  # seconds since the previous snapshot (what rates span)
    kafka: TopicsPanel
    groups: GroupsPanel
    presence: PresencePanel
    api: ApiPanel
    outbox: OutboxPanel
    redis: RedisPanel
    events: EventsPanel

    def panels(self) -> dict[str, Panel]:
        return {
            "kafka": self.kafka,
            "groups": self.groups,
            "presence": self.presence,
            "api": self.api,
            "outbox": self.outbox,
            "redis": self.redis,
            "events": self.events,
        }

    def to_json(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        return {
            "format": FORMAT,
            "time": datetime.fromtimestamp(self.taken_at, UTC).isoformat(timespec="milliseconds"),
            "interval_s": _round(self.interval_s, 3),
            "kafka": self.kafka.to_json(),
            "groups": self.groups.to_json(),
            "presence": self.presence.to_json(),
            "api": self.api.to_json(),
            "outbox": self.outbox.to_json(),
            "redis": self.redis.to_json(),
            "events": self.events.to_json(),
        }
