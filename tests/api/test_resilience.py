"""The API when a server dies: Kafka down during a burst, Redis down, two relays on one database.

These stop servers, so they run on a private stack of their own.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from devctl.engines.local import LocalEngine
from devctl.engines.processes import read_pidfile
from tests.api.conftest import STRONG_PASSWORD, ApiServer, start_api, stop_api
from tests.conftest import Stack, stack_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("own-stack")
    settings = stack_settings(root / "data", root)
    engine = LocalEngine(settings)
    try:
        result = engine.up()
        _apply_topics(result.endpoints, settings)
        yield Stack(settings, result.endpoints, engine, root / "data")
    finally:
        engine.down()


def _apply_topics(endpoints: Any, settings: Any) -> None:
    from devctl.streams.topics import TopicAdmin

    admin = TopicAdmin(endpoints, settings)
    admin.apply(admin.plan(settings.topics))


def _kill(stack: Stack, service: str, sig: int = signal.SIGKILL) -> int:
    record = read_pidfile(stack.engine.pidfile(service))
    assert record is not None
    os.kill(record.pid, sig)
    if sig == signal.SIGKILL:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(record.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
    return record.pid


def _restart(stack: Stack) -> None:
    result = stack.engine.up()
    # Same ports: the running API instance reconnects to the same addresses.
    assert result.endpoints.redis_url == stack.endpoints.redis_url
    assert result.endpoints.kafka_brokers == stack.endpoints.kafka_brokers
    _apply_topics(result.endpoints, stack.settings)


def _signup(api: ApiServer) -> tuple[Any, str]:
    client = api.client()
    email = f"r{uuid.uuid4().hex[:12]}@example.com"
    answer = client.post(
        "/signup", json={"firstName": "Ops", "emailId": email, "password": STRONG_PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    return client, answer.json()["_id"]


def _outbox_rows(url: str, event_type: str, keys: set[str]) -> list[tuple[int, str, str, bool]]:
    """(row id, event id, key, sent) of the outbox rows of one type for some keys, in id order."""

    async def read() -> list[tuple[int, str, str, bool]]:
        from sqlalchemy import select

        from devctl.db.engine import make_engine
        from devctl.db.models import OutboxRow

        engine = make_engine(url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(
                    select(OutboxRow.id, OutboxRow.event_id, OutboxRow.key, OutboxRow.sent_at)
                    .where(OutboxRow.event_type == event_type)
                    .order_by(OutboxRow.id)
                )
                return [
                    (r[0], r[1], bytes(r[2]).decode(), r[3] is not None)
                    for r in rows
                    if bytes(r[2]).decode() in keys
                ]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _kafka_events(
    stack: Stack, topic: str, keys: set[str], want: int, timeout: float
) -> list[dict[str, Any]]:
    """Every record of ``topic`` with one of ``keys``, in partition order, until ``want`` came."""
    consumer = Consumer(
        {
            "bootstrap.servers": stack.endpoints.kafka_brokers,
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    found: list[dict[str, Any]] = []
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(found) < want:
            for record in consumer.consume(1000, 0.5):
                if record.error() is None and record.key() and record.key().decode() in keys:
                    event = json.loads(record.value())
                    event["_partition"], event["_offset"] = record.partition(), record.offset()
                    found.append(event)
        # Anything more (duplicates) would arrive right behind: read a little longer.
        for record in consumer.consume(1000, 1.0):
            if record.error() is None and record.key() and record.key().decode() in keys:
                found.append(json.loads(record.value()))
        return found
    finally:
        consumer.close()


def _wait_sent(
    url: str, event_type: str, keys: set[str], timeout: float
) -> list[tuple[int, str, str, bool]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _outbox_rows(url, event_type, keys)
        if all(sent for *_, sent in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_kafka_down_during_a_burst_loses_nothing_and_keeps_order(
    own_stack: Stack, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'burst.db'}"
    api = start_api(own_stack, url, tmp_path / "api.log")
    try:
        users = [_signup(api) for _ in range(5)]
        keys = {user_id for _, user_id in users}
        _kill(own_stack, "kafka")

        def edit(i: int) -> int:
            client, _ = users[i % len(users)]
            return client.patch("/profile/edit", json={"about": f"edit {i}"}).status_code

        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(edit, range(500)))
        burst_seconds = time.monotonic() - started
        assert statuses == [200] * 500  # requests never wait for Kafka
        assert burst_seconds < 60
        pending = _outbox_rows(url, "devconnect.user.profile_updated", keys)
        assert len(pending) == 500 and not all(sent for *_, sent in pending)

        _restart(own_stack)  # memory storage: the topics come back empty
        rows = _wait_sent(url, "devconnect.user.profile_updated", keys, timeout=90)
        assert all(sent for *_, sent in rows), api.log()[-3000:]
        events = [
            e
            for e in _kafka_events(own_stack, "user-events", keys, want=500, timeout=30)
            if e["type"] == "devconnect.user.profile_updated"
        ]
        counts = collections.Counter(e["id"] for e in events)
        assert set(counts) == {event_id for _, event_id, _, _ in rows}
        assert max(counts.values()) == 1  # exactly once per outbox row
        for key in keys:
            on_kafka = [e["id"] for e in events if e["subject"] == key]
            in_outbox = [event_id for _, event_id, k, _ in rows if k == key]
            assert on_kafka == in_outbox  # commit order, per key
    finally:
        assert stop_api(api) == 0, api.log()[-3000:]


def test_redis_down_answers_503_fast_and_recovers(own_stack: Stack, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'redis.db'}"
    api = start_api(own_stack, url, tmp_path / "api.log")
    try:
        client, _ = _signup(api)
        email = f"late{uuid.uuid4().hex[:8]}@example.com"
        _kill(own_stack, "redis")
        started = time.monotonic()
        answer = client.get("/profile/view")
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "redis-unavailable"
        assert time.monotonic() - started < 5
        # What the user sees names no address, port or driver error (they go to the log).
        assert "127.0.0.1" not in answer.text and "Error" not in answer.json()["message"]
        # A change that needs Redis is not half made: the 503 means nothing changed.
        late = api.client().post(
            "/signup", json={"firstName": "Late", "emailId": email, "password": STRONG_PASSWORD}
        )
        assert late.status_code == 503
        changed = client.patch(
            "/profile/password",
            json={"currentPassword": STRONG_PASSWORD, "newPassword": "N3w!password"},
        )
        assert changed.status_code == 503
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"]["status"] == "degraded"
        assert ready.json()["checks"]["database"]["status"] == "ok"
        _restart(own_stack)
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.2)
        again, _ = _signup(api)  # the instance recovered by itself
        assert again.get("/profile/view").status_code == 200
        # The refused sign-up left no account behind; the password is the old one.
        retry = api.client().post(
            "/signup", json={"firstName": "Late", "emailId": email, "password": STRONG_PASSWORD}
        )
        assert retry.status_code == 200, retry.text
        assert client.get("/profile/view").status_code == 200  # its session survived
    finally:
        assert stop_api(api) == 0, api.log()[-3000:]


def test_hung_redis_answers_503_within_the_timeout(own_stack: Stack, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hung.db'}"
    api = start_api(own_stack, url, tmp_path / "api.log")
    pid = None
    try:
        client, _ = _signup(api)
        pid = _kill(own_stack, "redis", signal.SIGSTOP)
        started = time.monotonic()
        answer = client.get("/profile/view")
        assert answer.status_code == 503, answer.text
        assert time.monotonic() - started < 10
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        assert stop_api(api) == 0, api.log()[-3000:]


def test_sqlite_reads_do_not_wait_for_a_writer(stack: Stack, tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "busy.db"
    api = start_api(stack, f"sqlite:///{path}", tmp_path / "api.log")
    writer = None
    try:
        client, _ = _signup(api)
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        started = time.monotonic()
        assert client.get("/user/connections").status_code == 200
        assert client.get("/feed").status_code == 200
        assert time.monotonic() - started < 2  # not the 5 s busy timeout
    finally:
        if writer is not None:
            writer.rollback()
            writer.close()
        assert stop_api(api) == 0, api.log()[-3000:]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_instances_publish_each_row_once(
    stack: Stack, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'two.db'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database(
            f"two_{uuid.uuid4().hex[:8]}"
        )
    first = start_api(stack, url, tmp_path / "api-1.log", name="api-1")
    second = None
    try:
        second = start_api(stack, url, tmp_path / "api-2.log", name="api-2")
        users = [_signup(server) for server in (first, second) for _ in range(3)]
        keys = {user_id for _, user_id in users}
        # Every user's session on both instances: consecutive edits alternate between them.
        sessions = []
        for server in (first, second):
            for client, _ in users:
                session = server.client()
                session.cookies.update(client.cookies)
                sessions.append(session)

        def edit(i: int) -> int:
            session = sessions[(i % 2) * len(users) + i % len(users)]
            return session.patch("/profile/edit", json={"about": f"n{i}"}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(edit, range(200))) == {200}
        rows = _wait_sent(url, "devconnect.user.profile_updated", keys, timeout=60)
        assert len(rows) == 200 and all(sent for *_, sent in rows)
        events = [
            e
            for e in _kafka_events(stack, "user-events", keys, want=200, timeout=30)
            if e["type"] == "devconnect.user.profile_updated"
        ]
        counts = collections.Counter(e["id"] for e in events)
        assert len(counts) == 200 and max(counts.values()) == 1
    finally:
        assert stop_api(first) == 0, first.log()[-3000:]
        if second is not None:
            assert stop_api(second) == 0, second.log()[-3000:]
