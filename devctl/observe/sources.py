"""The sources of a snapshot: each reads one server and returns raw numbers, or raises.

A source keeps its client between reads; after a failure it drops it, so the next
read resolves the endpoints again (a stack restarted on other ports, a service
that came back) and starts from a fresh connection. Every call has a timeout of
its own (``timeout``), besides the deadline the caller waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devctl.clients.endpoints import Endpoints
from devctl.config.loader import Settings
from devctl.errors import DevctlError
from devctl.observe.prom import Scrape, parse_metrics
from devctl.streams.offsets import Partition, PartitionOffsets

if TYPE_CHECKING:
    import redis
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

    from devctl.streams.groups import GroupAdmin, GroupSummary, PartitionLag

EndpointsOf = Callable[[], Endpoints]


class SourceDown(Exception):
    """A source could not be read; the message says why, in a few words."""


def reason(exc: BaseException) -> str:
    """One line saying why a read failed, for the panel of its source."""
    from devctl.clients.kafka_client import kafka_reason

    if isinstance(exc, DevctlError | SourceDown):
        text = str(exc)
    elif isinstance(exc, TimeoutError):
        text = "no answer (timed out)"
    elif isinstance(exc, ConnectionRefusedError):
        text = "connection refused"
    else:
        text = kafka_reason(exc) or type(exc).__name__
    line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return line[:300]


# --- Kafka: topics -----------------------------------------------------------------


@dataclass(frozen=True)
class TopicsReading:
    at: float  # time.monotonic() of the read
    partitions: dict[str, int]  # topic -> partition count
    ends: dict[Partition, PartitionOffsets]


class TopicsSource:
    """Every topic (but Kafka's internal ``__`` ones) and the true end of each partition."""

    name = "kafka"

    def __init__(self, endpoints_of: EndpointsOf, settings: Settings, timeout: float):
        self._endpoints_of = endpoints_of
        self._settings = settings
        self._timeout = timeout
        self._clients: tuple[Endpoints, AdminClient, Consumer] | None = None

    def read(self) -> TopicsReading:
        from devctl.clients.kafka_client import fetch_metadata, make_admin
        from devctl.errors import KafkaUnavailable
        from devctl.streams.offsets import end_offsets_within, offsets_consumer

        try:
            if self._clients is None:
                endpoints = self._endpoints_of()
                _require(endpoints, "kafka")
                self._clients = (
                    endpoints,
                    make_admin(endpoints, self._settings),
                    offsets_consumer(endpoints, self._settings),
                )
            endpoints, admin, consumer = self._clients
            metadata, _ = fetch_metadata(admin, endpoints, self._timeout)
            counts = {
                name: len(topic.partitions)
                for name, topic in metadata.topics.items()
                if not name.startswith("__")
            }
            wanted = [(t, p) for t, n in sorted(counts.items()) for p in range(n)]
            ends = end_offsets_within(
                endpoints, self._settings, wanted, timeout=self._timeout, consumer=consumer
            )
            if ends is None:
                raise KafkaUnavailable(
                    f"Kafka at {endpoints.kafka_brokers} did not return the end offsets "
                    f"within {self._timeout:g}s"
                )
            return TopicsReading(time.monotonic(), counts, ends)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        clients, self._clients = self._clients, None
        if clients is not None:
            with contextlib.suppress(Exception):
                clients[2].close()


# --- Kafka: consumer groups ----------------------------------------------------------


@dataclass(frozen=True)
class GroupReading:
    group: str
    state: str
    members: int | None  # None: the broker did not report members
    # Every partition of the topics the group committed on (uncommitted ones too,
    # as `devctl groups lag` counts them).
    partitions: list[PartitionLag]


@dataclass(frozen=True)
class GroupsReading:
    at: float
    groups: list[GroupReading]


class GroupsSource:
    """Consumer groups with their committed offsets and the true end offsets (for lag)."""

    name = "groups"

    def __init__(self, endpoints_of: EndpointsOf, settings: Settings, timeout: float):
        self._endpoints_of = endpoints_of
        self._settings = settings
        self._timeout = timeout
        self._clients: tuple[Endpoints, GroupAdmin, Consumer] | None = None

    def read(self) -> GroupsReading:
        from devctl.clients.kafka_client import fetch_metadata
        from devctl.streams.groups import GroupAdmin, PartitionLag
        from devctl.streams.offsets import end_offsets_within, offsets_consumer

        try:
            if self._clients is None:
                endpoints = self._endpoints_of()
                _require(endpoints, "kafka")
                admin = GroupAdmin(endpoints, self._settings)
                # The admin's own timeout is the configured request timeout: too long
                # for a dashboard that refreshes every second.
                admin.timeout = self._timeout / 2
                self._clients = (endpoints, admin, offsets_consumer(endpoints, self._settings))
            endpoints, admin, consumer = self._clients
            summaries: list[GroupSummary] = admin.summaries()
            committed = {s.group: admin.committed(s.group) for s in summaries}
            metadata, _ = fetch_metadata(admin.admin, endpoints, self._timeout)
            counts = {name: len(t.partitions) for name, t in metadata.topics.items()}
            per_group: dict[str, list[Partition]] = {}
            for group, offsets in committed.items():
                # A topic deleted since it was committed on has no end offset: left out.
                topics = sorted({t for t, _ in offsets if t in counts})
                per_group[group] = [(t, p) for t in topics for p in range(counts[t])]
            wanted = sorted({key for keys in per_group.values() for key in keys})
            ends: dict[Partition, PartitionOffsets] = {}
            if wanted:
                found = end_offsets_within(
                    endpoints, self._settings, wanted, timeout=self._timeout, consumer=consumer
                )
                if found is None:
                    raise SourceDown("Kafka did not return the end offsets in time")
                ends = found
            groups = [
                GroupReading(
                    s.group,
                    s.state,
                    s.members,
                    [
                        PartitionLag(
                            topic=key[0],
                            partition=key[1],
                            committed=committed[s.group].get(key),
                            low=ends[key].low,
                            end=ends[key].high,
                        )
                        for key in per_group[s.group]
                    ],
                )
                for s in summaries
            ]
            return GroupsReading(time.monotonic(), groups)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        clients, self._clients = self._clients, None
        if clients is not None:
            with contextlib.suppress(Exception):
                clients[2].close()


# --- Redis: presence and INFO ----------------------------------------------------------


@dataclass(frozen=True)
class InstanceReading:
    instance: str
    alive: bool  # holds a live lease
    last_heartbeat: float | None  # epoch seconds
    connections: int  # entries of its connection index
    users: frozenset[str]


@dataclass(frozen=True)
class PresenceReading:
    instances: list[InstanceReading]

    @property
    def online_users(self) -> int:
        """Users with a connection on a live instance (the presence domain's rule)."""
        return len(set().union(*(i.users for i in self.instances if i.alive)))


@dataclass(frozen=True)
class RedisReading:
    at: float
    info: dict[str, Any]


class RedisClientHolder:
    """One redis-py client (a thread-safe pool) shared by the Redis sources."""

    def __init__(self, endpoints_of: EndpointsOf, settings: Settings):
        self._endpoints_of = endpoints_of
        self._settings = settings
        self._client: redis.Redis | None = None

    def get(self) -> redis.Redis:
        if self._client is None:
            from devctl.clients.redis_client import make_redis

            self._client = make_redis(self._endpoints_of(), self._settings, decode=True)
        return self._client

    def reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


class PresenceSource:
    """The presence domain's instances, with each one's connection index."""

    name = "presence"

    def __init__(self, redis_of: RedisClientHolder, settings: Settings):
        self._redis = redis_of
        self._settings = settings

    def read(self) -> PresenceReading:
        from devctl.state.keys import KeySchema
        from devctl.state.presence import Presence

        try:
            client = self._redis.get()
            keys = KeySchema(self._settings.redis.key_prefix)
            presence = Presence(
                client, keys, instance_ttl=self._settings.state.presence_instance_ttl
            )
            known = presence.instances()
            pipe = client.pipeline(transaction=False)
            for info in known:
                pipe.hvals(keys.instance_connections(info.instance_id))
            held = pipe.execute() if known else []
            return PresenceReading(
                [
                    InstanceReading(
                        info.instance_id,
                        info.alive,
                        info.last_heartbeat,
                        len(users),
                        frozenset(users),
                    )
                    for info, users in zip(known, held, strict=True)
                ]
            )
        except BaseException:
            self._redis.reset()
            raise


class RedisInfoSource:
    name = "redis"

    def __init__(self, redis_of: RedisClientHolder):
        self._redis = redis_of

    def read(self) -> RedisReading:
        try:
            info = self._redis.get().info()
        except BaseException:
            self._redis.reset()
            raise
        return RedisReading(time.monotonic(), dict(info))


# --- API instances --------------------------------------------------------------------


@dataclass(frozen=True)
class ApiTarget:
    """An API instance to scrape: from the running serve, or given by URL."""

    name: str
    url: str  # base URL, no trailing slash
    state: str = "up"  # the supervisor's state of the child ("up", "backoff", ...)


@dataclass(frozen=True)
class ApiReading:
    at: float
    scrape: Scrape


def scrape_api(target: ApiTarget, timeout: float) -> ApiReading:
    """GET ``/metrics`` of one instance; SourceDown when it does not answer 200 in time.

    http.client, not urllib: a proxy in the environment must never stand between
    devctl and a process on this machine (as devctl.supervisor.health).
    """
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(target.url)
    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname or "127.0.0.1", parts.port or 443, timeout=timeout
        )
    else:
        connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout
        )
    path = (parts.path.rstrip("/") or "") + "/metrics"
    try:
        connection.request("GET", path, headers={"Accept": "text/plain"})
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise SourceDown(f"unreachable: {reason(exc)}") from exc
    finally:
        connection.close()
    if response.status != 200:
        raise SourceDown(f"/metrics answered {response.status}")
    try:
        scrape = parse_metrics(body.decode("utf-8", "replace"))
    except ValueError as exc:
        raise SourceDown(f"/metrics is not Prometheus text: {exc}") from exc
    return ApiReading(time.monotonic(), scrape)


def serve_targets(data_dir: Path) -> list[ApiTarget]:
    """The API instances of the serve running in ``data_dir`` (none when none runs)."""
    from devctl.supervisor.runstate import running_serve

    state = running_serve(data_dir)
    if state is None:
        return []
    out = []
    for child in state.children:
        if child.role != "api":
            continue
        if child.ready_url:
            base = child.ready_url.rsplit("/", 1)[0]
        elif child.port is not None:
            base = f"http://127.0.0.1:{child.port}"
        else:
            continue
        out.append(ApiTarget(child.name, base, child.state))
    return out


# --- the outbox -------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxReading:
    database: str  # the URL, password redacted
    backlog: int
    oldest_age_s: float | None


class OutboxSource:
    """Unsent outbox rows and the age of the oldest, from the API's database."""

    name = "outbox"

    def __init__(self, settings: Settings, timeout: float):
        self._settings = settings
        self._timeout = timeout

    def read(self) -> OutboxReading:
        from devctl.db.engine import database_url, redacted_url, sqlite_path

        url = database_url(self._settings)
        shown = redacted_url(url)
        path = sqlite_path(url)
        # Opening a SQLite file that is not there would create it: only the API does.
        if path is not None and not path.exists():
            raise SourceDown(f"no database at {path} (the API creates it when it starts)")
        backlog, age = asyncio.run(self._backlog(url))
        return OutboxReading(shown, backlog, age)

    async def _backlog(self, url: str) -> tuple[int, float | None]:
        from sqlalchemy.pool import NullPool

        from devctl.db.engine import make_engine
        from devctl.db.outbox import backlog

        engine = make_engine(
            url,
            poolclass=NullPool,
            connect_timeout=self._timeout,
            statement_timeout=self._timeout,
            busy_timeout=self._timeout,
        )
        try:
            return await asyncio.wait_for(backlog(engine), self._timeout)
        finally:
            await engine.dispose()


# --- helpers ----------------------------------------------------------------------------


def _require(endpoints: Endpoints, service: str) -> None:
    if service in endpoints.not_running:
        raise SourceDown(f"{service} of the {endpoints.engine} stack is not running")


@dataclass
class Outcome:
    """What one source gave in one gather: a value, or why not."""

    value: Any = None
    error: str | None = None
    latency_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None
