"""Gathering one snapshot of every source within a deadline, in threads.

Each source is read in a daemon thread of its own; the gather waits for them all
up to ``deadline`` seconds. A source that has not answered by then is shown as
down ("no answer within ...") and is not asked again while its read is still
running, so a hung server never holds more than one thread nor the other panels.
Daemon threads: a read stuck in a client call cannot keep the process alive when
the caller leaves (every client call has a timeout of its own too).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from devctl.clients.endpoints import Endpoints
from devctl.config.loader import Settings
from devctl.observe import rates
from devctl.observe.feed import EventFeed
from devctl.observe.model import (
    ApiInstanceStat,
    ApiPanel,
    EventsPanel,
    GroupsPanel,
    OutboxPanel,
    PresencePanel,
    RedisPanel,
    Snapshot,
    TopicsPanel,
)
from devctl.observe.sources import (
    ApiReading,
    ApiTarget,
    GroupsReading,
    GroupsSource,
    OutboxReading,
    OutboxSource,
    PresenceReading,
    PresenceSource,
    RedisClientHolder,
    RedisInfoSource,
    RedisReading,
    TopicsReading,
    TopicsSource,
    reason,
    scrape_api,
    serve_targets,
)

T = TypeVar("T")

# The API instances that are scraped: up under the serve, or given by URL. Those
# starting, backing off or given up on are shown with the supervisor's word for it.
SCRAPED = ("up", "given")


@dataclass
class Answer(Generic[T]):
    """One source's part of a gather: its reading, or why there is none."""

    value: T | None = None
    error: str | None = None
    latency_ms: float | None = None


class Probe(Generic[T]):
    """Reads one source in a daemon thread; at most one read in flight at a time."""

    def __init__(self, name: str, read: Callable[[], T]):
        self.name = name
        self._read = read
        self._future: Future[tuple[T, float]] | None = None
        self._started = 0.0

    def start(self) -> Future[tuple[T, float]]:
        if self._future is None:
            future: Future[tuple[T, float]] = Future()
            self._started = time.monotonic()
            threading.Thread(
                target=self._run, args=(future,), name=f"top-{self.name}", daemon=True
            ).start()
            self._future = future
        return self._future

    def _run(self, future: Future[tuple[T, float]]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        started = time.perf_counter()
        try:
            value = self._read()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result((value, (time.perf_counter() - started) * 1000))

    @property
    def busy(self) -> bool:
        return self._future is not None and not self._future.done()

    def take(self) -> Answer[T]:
        """The finished read (then the next ``start`` reads again), or "no answer"."""
        future = self._future
        if future is None:
            return Answer(error="not read")
        if not future.done():
            waited = time.monotonic() - self._started
            return Answer(error=f"no answer for {waited:.1f}s (still waiting)")
        self._future = None
        exc = future.exception()
        if exc is not None:
            return Answer(error=reason(exc))
        value, latency = future.result()
        return Answer(value, None, latency)


class Observer:
    """Snapshots of the running system: ``snapshot()`` reads every source once.

    ``endpoints_of`` is called whenever a source (re)connects, so a stack that was
    restarted is found again. API instances: those of the serve running in the data
    dir (read on each snapshot) and ``api_urls``. ``events``: how many of the newest
    events to keep (0: no event reader). Close it (or use it as a context manager).
    """

    def __init__(
        self,
        settings: Settings,
        endpoints_of: Callable[[], Endpoints],
        *,
        api_urls: Sequence[str] = (),
        deadline: float = 0.8,
        events: int = 10,
    ):
        self.settings = settings
        self.deadline = deadline
        # The clients' own timeouts: a little longer than the deadline, so a slow but
        # working source can still answer the next time, and a dead one frees its thread.
        timeout = max(deadline * 2, 1.0)
        self._api_urls = [url.rstrip("/") for url in api_urls]
        self._api_timeout = timeout
        topics = TopicsSource(endpoints_of, settings, timeout)
        groups = GroupsSource(endpoints_of, settings, timeout)
        self._topics = Probe("kafka", topics.read)
        self._groups = Probe("groups", groups.read)
        self._presence = Probe(
            "presence", PresenceSource(RedisClientHolder(endpoints_of, settings), settings).read
        )
        self._redis = Probe(
            "redis", RedisInfoSource(RedisClientHolder(endpoints_of, settings)).read
        )
        self._outbox = Probe("outbox", OutboxSource(settings, timeout).read)
        self._apis: dict[str, Probe[ApiReading]] = {}
        self._closers: list[tuple[Probe[Any], Callable[[], None]]] = [
            (self._topics, topics.close),
            (self._groups, groups.close),
        ]
        self._feed = EventFeed(endpoints_of, settings, size=events) if events > 0 else None
        if self._feed is not None:
            self._feed.start()
        # The last reading of each source that answered: rates span from there.
        self._last: dict[str, Any] = {}
        self._last_at: float | None = None

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
        for probe, close in self._closers:
            # A read still running keeps its client: closing a Kafka client under a
            # call in another thread is not safe; the process ends it anyway.
            if not probe.busy:
                close()

    def api_targets(self) -> list[ApiTarget]:
        """The serve's API instances, then the given URLs not among them."""
        try:
            found = serve_targets(self.settings.data_dir)
        except Exception:  # a state file being rewritten: the next snapshot reads it
            found = []
        known = {t.url for t in found}
        found += [ApiTarget(url, url, "given") for url in self._api_urls if url not in known]
        return found

    def snapshot(self) -> Snapshot:
        """Read every source once (at most ``deadline`` seconds) and compute the rates."""
        targets = self.api_targets()
        apis = {t.url: self._api_probe(t) for t in targets if t.state in SCRAPED}
        for url in list(self._apis):
            if url not in apis:
                del self._apis[url]
                self._last.pop(f"api:{url}", None)
        probes: list[Probe[Any]] = [
            self._topics,
            self._groups,
            self._presence,
            self._redis,
            self._outbox,
            *apis.values(),
        ]
        futures = [p.start() for p in probes]
        wait(futures, timeout=self.deadline)
        now = time.time()
        interval = None if self._last_at is None else now - self._last_at
        self._last_at = now
        snapshot = Snapshot(
            taken_at=now,
            interval_s=interval,
            kafka=self._topics_panel(self._topics.take()),
            groups=self._groups_panel(self._groups.take()),
            presence=self._presence_panel(self._presence.take()),
            api=self._api_panel(targets, {url: p.take() for url, p in apis.items()}),
            outbox=self._outbox_panel(self._outbox.take()),
            redis=self._redis_panel(self._redis.take()),
            events=self._events_panel(),
        )
        return snapshot

    def _api_probe(self, target: ApiTarget) -> Probe[ApiReading]:
        probe = self._apis.get(target.url)
        if probe is None:
            timeout = self._api_timeout
            probe = Probe(f"api-{target.name}", lambda: scrape_api(target, timeout))
            self._apis[target.url] = probe
        return probe

    # --- panels ------------------------------------------------------------------

    def _remember(self, key: str, value: T) -> T | None:
        before: T | None = self._last.get(key)
        self._last[key] = value
        return before

    def _topics_panel(self, answer: Answer[TopicsReading]) -> TopicsPanel:
        panel = TopicsPanel(answer.error, answer.latency_ms)
        if answer.value is not None:
            before = self._remember("kafka", answer.value)
            panel.topics = rates.topic_stats(before, answer.value)
        return panel

    @staticmethod
    def _groups_panel(answer: Answer[GroupsReading]) -> GroupsPanel:
        panel = GroupsPanel(answer.error, answer.latency_ms)
        if answer.value is not None:
            panel.groups = rates.group_stats(answer.value)
        return panel

    @staticmethod
    def _presence_panel(answer: Answer[PresenceReading]) -> PresencePanel:
        panel = PresencePanel(answer.error, answer.latency_ms)
        if answer.value is not None:
            panel.instances = rates.instance_stats(answer.value)
            panel.online_users = answer.value.online_users
            panel.connections = sum(i.connections for i in panel.instances if i.alive)
        return panel

    def _api_panel(
        self, targets: Iterable[ApiTarget], answers: dict[str, Answer[ApiReading]]
    ) -> ApiPanel:
        panel = ApiPanel()
        pairs: list[tuple[ApiReading | None, ApiReading]] = []
        for target in targets:
            answer = answers.get(target.url)
            if answer is None or target.state not in SCRAPED:  # the supervisor says why
                panel.instances.append(
                    ApiInstanceStat(target.name, target.url, target.state, None, target.state)
                )
                continue
            rate = None
            if answer.value is not None:
                before = self._remember(f"api:{target.url}", answer.value)
                pairs.append((before, answer.value))
                rate = rates.instance_rate(before, answer.value)
            panel.instances.append(
                ApiInstanceStat(
                    target.name, target.url, target.state, rate, answer.error, answer.latency_ms
                )
            )
        panel.routes = rates.route_stats(pairs)
        if not panel.instances:
            panel.error = (
                f"no API instance: no serve runs in {self.settings.data_dir} "
                "and no --api-url was given"
            )
        elif all(i.error is not None for i in panel.instances):
            panel.error = "no API instance answered"
        return panel

    @staticmethod
    def _outbox_panel(answer: Answer[OutboxReading]) -> OutboxPanel:
        panel = OutboxPanel(answer.error, answer.latency_ms)
        if answer.value is not None:
            panel.database = answer.value.database
            panel.backlog = answer.value.backlog
            panel.oldest_age_s = answer.value.oldest_age_s
        return panel

    def _redis_panel(self, answer: Answer[RedisReading]) -> RedisPanel:
        panel = RedisPanel(answer.error, answer.latency_ms)
        if answer.value is None:
            return panel
        info = answer.value.info
        before = self._remember("redis", answer.value)
        panel.version = str(info.get("valkey_version") or info.get("redis_version") or "") or None
        panel.used_memory = _int(info.get("used_memory"))
        panel.used_memory_human = info.get("used_memory_human")
        panel.maxmemory = _int(info.get("maxmemory"))
        panel.connected_clients = _int(info.get("connected_clients"))
        panel.keys = sum(
            int(v.get("keys", 0))
            for k, v in info.items()
            if k.startswith("db") and k[2:].isdigit() and isinstance(v, dict)
        )
        panel.ops_per_s = rates.redis_ops(before, answer.value)
        return panel

    def _events_panel(self) -> EventsPanel:
        if self._feed is None:
            return EventsPanel(error="not read (events off)")
        return EventsPanel(
            error=self._feed.error,
            lines=[line.to_json() for line in self._feed.lines()],
            seen=self._feed.seen,
        )


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return None
