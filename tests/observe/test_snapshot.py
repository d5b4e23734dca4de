"""Observer snapshots against the real test stack and a real API instance.

Each test reads what it made itself (its own topic, group, presence instances,
API instance), since other tests share the stack.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import common_conf, producer_conf
from devctl.config.loader import Settings, load_settings
from devctl.config.schema import TopicSpec
from devctl.engines.processes import free_port
from devctl.observe.model import Snapshot
from devctl.observe.snapshot import Observer
from devctl.state import from_settings
from devctl.streams.topics import TopicAdmin
from devctl.supervisor.runstate import StateFile
from devctl.supervisor.spec import ChildState
from tests.api.conftest import ApiServer, start_api, stop_api
from tests.conftest import Stack

DEADLINE = 0.8


def _settings(stack: Stack, data_dir: Path, **extra: object) -> Settings:
    flags: dict[str, tuple[object, str]] = {
        "data_dir": (str(data_dir), "--data-dir"),
        "redis.port": (stack.settings.redis.port, "--redis-port"),
        "kafka.port": (stack.settings.kafka.port, "--kafka-port"),
    }
    flags.update({k: (v, k) for k, v in extra.items()})
    return load_settings(flags=flags, cwd=data_dir, environ={})


@pytest.fixture
def observe(stack: Stack, tmp_path: Path) -> Iterator[Callable[..., Observer]]:
    """Make observers of the test stack; all are closed afterwards."""
    made: list[Observer] = []

    def make(
        *,
        settings: Settings | None = None,
        endpoints: Endpoints | None = None,
        **options: object,
    ) -> Observer:
        options.setdefault("deadline", DEADLINE)
        observer = Observer(
            settings or _settings(stack, tmp_path),
            lambda: endpoints or stack.endpoints,
            **options,  # type: ignore[arg-type]
        )
        made.append(observer)
        return observer

    yield make
    for observer in made:
        observer.close()


@pytest.fixture
def api(stack: Stack, tmp_path: Path) -> Iterator[ApiServer]:
    server = start_api(stack, f"sqlite:///{tmp_path / 'api.db'}", tmp_path / "api.log")
    try:
        yield server
    finally:
        stop_api(server)


def _timed(observer: Observer) -> tuple[Snapshot, float]:
    started = time.monotonic()
    snapshot = observer.snapshot()
    return snapshot, time.monotonic() - started


def _wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


# --- Kafka -----------------------------------------------------------------------------


def test_topic_rate_and_group_lag(
    stack: Stack, observe: Callable[..., Observer], unique: str
) -> None:
    topic = f"top-{unique}"
    group = f"top-group-{unique}"
    TopicAdmin(stack.endpoints, stack.settings).create(TopicSpec(topic, 3))
    observer = observe()
    _wait_for(lambda: any(t.topic == topic for t in observer.snapshot().kafka.topics))
    before = observer.snapshot()
    gap_from = time.monotonic()
    assert before.kafka.error is None
    assert [t.end_offset for t in before.kafka.topics if t.topic == topic] == [0]

    # One flush: multi-record batches, whose high watermark Tansu reports too low.
    producer = Producer(producer_conf(stack.endpoints, stack.settings, **{"linger.ms": 50}))
    for n in range(30):
        producer.produce(topic, key=f"k{n % 3}", value=b"{}")
    assert producer.flush(10) == 0
    # The group committed 5 records of partition 0 and nothing of the others.
    consumer = Consumer(common_conf(stack.endpoints, stack.settings) | {"group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
    finally:
        consumer.close()
    time.sleep(0.3)

    gap = time.monotonic() - gap_from
    after = observer.snapshot()
    (stat,) = [t for t in after.kafka.topics if t.topic == topic]
    assert stat.end_offset == 30 and stat.messages == 30 and stat.exact
    assert stat.events_per_s is not None and stat.events_per_s > 0
    # 30 records over the time between the two reads, which spans at least the gap.
    assert stat.events_per_s <= 30 / gap
    (lag,) = [g for g in after.groups.groups if g.group == group]
    assert lag.lag == 30 - 5  # the uncommitted partitions count from their start
    assert [(t.topic, t.lag, t.uncommitted) for t in lag.topics] == [(topic, 25, 2)]

    quiet = observer.snapshot()
    (stat,) = [t for t in quiet.kafka.topics if t.topic == topic]
    assert stat.events_per_s == 0


def test_the_newest_events_arrive(
    stack: Stack, observe: Callable[..., Observer], unique: str
) -> None:
    from devctl.events.producer import EventProducer

    observer = observe(events=5)
    _wait_for(lambda: observer.snapshot().events.error is None)
    time.sleep(0.5)  # the reader starts from the end it finds: give it its assignment
    producer = EventProducer(stack.endpoints, stack.settings, source="tests")
    try:
        futures = [producer.publish("devconnect.user.login", {"userId": unique}) for _ in range(7)]
        for future in futures:
            future.result(10)
    finally:
        producer.close(10)

    def arrived() -> bool:
        lines = observer.snapshot().events.lines
        return sum(line["subject"] == unique for line in lines) == 5

    _wait_for(arrived)
    lines = observer.snapshot().events.lines
    assert len(lines) == 5  # the last 5 only
    assert {line["type"] for line in lines} == {"devconnect.user.login"}
    assert all(line["topic"] == "user-events" for line in lines)


# --- Redis ------------------------------------------------------------------------------


def test_presence_per_instance(stack: Stack, observe: Callable[..., Observer], unique: str) -> None:
    with from_settings(stack.settings, stack.endpoints) as state:
        presence = state.presence
        one, two = f"top-a-{unique}", f"top-b-{unique}"
        presence.heartbeat_many([one, two], ttl=60)
        presence.connect_many(
            [
                (f"u1-{unique}", f"c1-{unique}", one),
                (f"u1-{unique}", f"c2-{unique}", one),  # a second tab
                (f"u2-{unique}", f"c3-{unique}", one),
                (f"u3-{unique}", f"c4-{unique}", two),
            ]
        )
        try:
            snapshot = observe().snapshot()
        finally:
            presence.retire(one)
            presence.retire(two)
    panel = snapshot.presence
    assert panel.error is None
    mine = {i.instance: i for i in panel.instances if i.instance in (one, two)}
    assert (mine[one].alive, mine[one].connections, mine[one].users) == (True, 3, 2)
    assert (mine[two].alive, mine[two].connections, mine[two].users) == (True, 1, 1)
    assert panel.online_users is not None and panel.online_users >= 3
    assert panel.connections is not None and panel.connections >= 4
    redis = snapshot.redis
    assert redis.error is None and redis.version
    assert redis.used_memory and redis.used_memory > 0


# --- API instances ----------------------------------------------------------------------


def test_api_routes_rates_and_quantiles(
    stack: Stack, api: ApiServer, observe: Callable[..., Observer], tmp_path: Path
) -> None:
    observer = observe(api_urls=[api.url + "/"])
    first = observer.snapshot()
    assert first.api.error is None, first.api
    client = api.client()
    for _ in range(40):
        assert client.get("/healthz").status_code == 200
    for _ in range(5):
        assert client.get("/profile/view").status_code == 401
    second = observer.snapshot()
    (instance,) = second.api.instances
    assert (instance.url, instance.state, instance.error) == (api.url, "given", None)
    assert instance.requests_per_s is not None and instance.requests_per_s > 0
    routes = {(r.method, r.route): r for r in second.api.routes}
    health = routes[("GET", "/healthz")]
    assert health.requests >= 40
    assert health.requests_per_s is not None and health.requests_per_s > 0
    assert health.errors_per_s == 0
    assert health.p50_ms is not None and health.p99_ms is not None
    assert 0 < health.p50_ms <= health.p99_ms <= 10_000
    assert routes[("GET", "/profile/view")].requests >= 5

    # Nothing since: rates 0, no quantiles (they describe the interval only).
    third = observer.snapshot()
    health = {(r.method, r.route): r for r in third.api.routes}[("GET", "/healthz")]
    assert health.requests_per_s == 0 and health.p50_ms is None

    # The settings name no database: the data dir's SQLite file, which is not there
    # and must not be made by looking at it.
    expected = tmp_path / "devconnect.db"
    assert third.outbox.error == f"no database at {expected} (the API creates it when it starts)"
    assert not expected.exists()


def test_the_serve_instances_come_from_its_run_state(
    stack: Stack, api: ApiServer, observe: Callable[..., Observer], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    settings = _settings(stack, data_dir, **{"api.database_url": api.database_url})
    port = int(api.url.rsplit(":", 1)[1])
    # This test process stands for the supervisor: the state file names a live process.
    state = StateFile(data_dir, "detached", shutdown_timeout=5)
    child = ChildState(
        "api-1", "api", "up", api.proc.pid, None, port, f"{api.url}/readyz", time.time(), 0, None
    )
    waiting = dataclasses.replace(
        child, name="api-2", state="backoff", pid=None, port=free_port(), ready_url=None
    )
    state.update([child, waiting], ready=True)
    try:
        observer = observe(settings=settings)
        client = api.client()
        signup = client.post(
            "/signup",
            json={
                "firstName": "Ada",
                "lastName": "Lovelace",
                "emailId": f"top{os.getpid()}{time.monotonic_ns()}@example.com",
                "password": "Str0ng!pass",
            },
        )
        assert signup.status_code == 200, signup.text
        snapshot = observer.snapshot()
    finally:
        state.remove()
    names = {i.name: i for i in snapshot.api.instances}
    assert names["api-1"].error is None and names["api-1"].url == api.url
    assert names["api-2"].error == "backoff"
    outbox = snapshot.outbox
    assert outbox.error is None, outbox.error
    assert outbox.backlog is not None and outbox.backlog >= 0
    assert outbox.database is not None and "api.db" in outbox.database


def test_an_api_instance_killed_shows_as_down_at_once(
    stack: Stack, tmp_path: Path, observe: Callable[..., Observer]
) -> None:
    server = start_api(stack, f"sqlite:///{tmp_path / 'k.db'}", tmp_path / "k.log")
    try:
        observer = observe(api_urls=[server.url])
        assert observer.snapshot().api.instances[0].error is None
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        snapshot, took = _timed(observer)
    finally:
        stop_api(server)
    (instance,) = snapshot.api.instances
    assert instance.error is not None and "unreachable" in instance.error
    assert snapshot.api.error == "no API instance answered"
    assert took < DEADLINE + 0.5
    assert snapshot.kafka.error is None and snapshot.redis.error is None


# --- sources down or hung -----------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A listening socket that never accepts: connections succeed, nothing answers."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(64)
        yield f"127.0.0.1:{holder.getsockname()[1]}"


def test_hung_servers_are_down_within_the_deadline(
    stack: Stack, observe: Callable[..., Observer], silent_server: str
) -> None:
    endpoints = dataclasses.replace(stack.endpoints, redis_url=f"redis://{silent_server}/0")
    observer = observe(endpoints=endpoints, api_urls=[f"http://{silent_server}"])
    for _ in range(3):  # the reads still running are not started again
        snapshot, took = _timed(observer)
        assert took < DEADLINE + 0.5
        assert snapshot.redis.error is not None and snapshot.presence.error is not None
        assert snapshot.api.instances[0].error is not None
        assert snapshot.kafka.error is None  # the others keep answering
    assert "no answer" in (snapshot.api.instances[0].error or "")


def test_stopped_servers_are_down_and_named(
    stack: Stack, observe: Callable[..., Observer], tmp_path: Path
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    settings = _settings(
        stack, tmp_path, **{"api.database_url": f"postgresql://top:s3cret@{dead}/devconnect"}
    )
    endpoints = dataclasses.replace(
        stack.endpoints, kafka_brokers=dead, redis_url=f"redis://{dead}/0"
    )
    observer = observe(settings=settings, endpoints=endpoints)
    snapshot, took = _timed(observer)
    assert took < DEADLINE + 0.5
    for name, panel in snapshot.panels().items():
        if name != "events":  # the event reader reports once it has tried
            assert panel.error is not None, name
    assert "Connection refused" in (snapshot.redis.error or "") or "refused" in (
        snapshot.redis.error or ""
    )
    text = json.dumps(snapshot.to_json())
    assert "s3cret" not in text
    assert json.loads(text)["redis"]["status"] == "down"


def test_a_stack_that_is_not_running_is_said_per_panel(
    stack: Stack, observe: Callable[..., Observer]
) -> None:
    endpoints = dataclasses.replace(stack.endpoints, not_running=("redis",))
    snapshot = observe(endpoints=endpoints).snapshot()
    assert snapshot.redis.error == "redis of the local stack is not running"
    assert snapshot.presence.error == "redis of the local stack is not running"
    assert snapshot.kafka.error is None


def test_the_json_keys_are_stable(observe: Callable[..., Observer]) -> None:
    data = observe(events=0).snapshot().to_json()
    assert list(data) == [
        "format",
        "time",
        "interval_s",
        "kafka",
        "groups",
        "presence",
        "api",
        "outbox",
        "redis",
        "events",
    ]
    for name in list(data)[3:]:
        assert {"status", "error", "latency_ms"} <= set(data[name]), name
    assert data["events"]["error"] == "not read (events off)"
    assert set(data["redis"]) >= {"used_memory", "ops_per_s", "version", "keys"}


def test_one_client_per_probe_even_when_asked_often(
    stack: Stack, observe: Callable[..., Observer], silent_server: str
) -> None:
    """A hung server holds one thread, however many refreshes ask."""
    import threading

    endpoints = dataclasses.replace(stack.endpoints, redis_url=f"redis://{silent_server}/0")
    observer = observe(endpoints=endpoints, events=0, deadline=0.2)
    before = threading.active_count()
    for _ in range(6):
        observer.snapshot()
    # presence and redis: one read each still in flight (plus any read that is finishing).
    assert threading.active_count() - before <= 4
