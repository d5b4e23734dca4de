"""Typed pub/sub and a subscriber that reconnects after a Redis restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from devctl.engines.processes import free_port
from devctl.state import StateServices
from devctl.state.pubsub import Notification, PresenceChange
from tests.state.conftest import PrivateRedis


def next_message(sub: Any, timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sub.get(timeout=0.1)
        if got is not None:
            return got
    return None


def test_notifications_are_typed_json(state: StateServices) -> None:
    ps = state.pubsub
    with ps.subscribe([ps.notification_channel("42")]) as sub:
        assert ps.notify("42", "CONNECTION_REQUEST", {"fromUserId": "7"}) == 1
        got = next_message(sub)
    assert got.channel == state.keys.notification_channel("42")
    assert isinstance(got.message, Notification)
    assert got.message.kind == "CONNECTION_REQUEST" and got.message.data == {"fromUserId": "7"}
    assert json.loads(got.raw)["type"] == "notification"


def test_pattern_subscription_receives_every_users_notifications(state: StateServices) -> None:
    ps = state.pubsub
    with ps.subscribe([ps.all_notifications()]) as sub:
        ps.notify("1", "A")
        ps.notify("2", "B")
        got = [next_message(sub), next_message(sub)]
    assert [(g.message.user_id, g.message.kind) for g in got] == [("1", "A"), ("2", "B")]


def test_presence_events_come_from_the_transitions(state: StateServices) -> None:
    ps = state.pubsub
    state.presence.heartbeat("api-1")
    with ps.subscribe([ps.presence_channel()]) as sub:
        state.presence.connect("42", "c1", "api-1")
        got = next_message(sub)
    assert isinstance(got.message, PresenceChange)
    assert (got.message.user_id, got.message.online, got.message.instance) == ("42", True, "api-1")
    assert abs(got.message.ts - time.time()) < 5
    payload = json.loads(got.raw)
    assert payload["type"] == "presence" and payload["userId"] == "42" and payload["online"] is True


def test_undecodable_payload_is_reported_not_raised(state: StateServices) -> None:
    ps = state.pubsub
    channel = ps.presence_channel()
    with ps.subscribe([channel]) as sub:
        state.client.publish(channel.name, "not json")
        state.client.publish(channel.name, json.dumps({"no": "fields"}))
        bad = [next_message(sub), next_message(sub)]
    assert all(b.message is None and b.error for b in bad)
    assert bad[0].raw == "not json"


def test_subscriber_reconnects_after_a_redis_restart(private_redis: Any, tmp_path: Path) -> None:
    services = private_redis.services(tmp_path, **{"redis.socket_timeout": 0.5})
    reconnected: list[float] = []
    ps = services.pubsub
    with ps.subscribe(
        [ps.notification_channel("42")], on_reconnect=lambda: reconnected.append(time.time())
    ) as sub:
        ps.notify("42", "before")
        assert next_message(sub).message.kind == "before"
        private_redis.kill()
        assert sub.get(timeout=0.3) is None  # down: no exception, just nothing
        private_redis.start()
        deadline = time.monotonic() + 5
        while not reconnected and time.monotonic() < deadline:
            sub.get(timeout=0.1)
        assert len(reconnected) == 1 and sub.reconnects == 1
        publisher = private_redis.services(tmp_path)
        assert publisher.pubsub.notify("42", "after") == 1
        assert next_message(sub).message.kind == "after"
        publisher.close()
    services.close()


def test_a_failing_on_reconnect_is_retried_not_raised(private_redis: Any, tmp_path: Path) -> None:
    """The reload after a reconnect fails (its Redis is not back yet): get() keeps going."""
    data = PrivateRedis(free_port(), tmp_path / "data")
    data.workdir.mkdir()
    reader = data.services(tmp_path, **{"redis.connect_timeout": 0.3})
    services = private_redis.services(tmp_path, **{"redis.socket_timeout": 0.5})
    reloads: list[int] = []

    def reload() -> None:
        reloads.append(len(reader.presence.known_users()))  # RedisUnavailable while down

    ps = services.pubsub
    try:
        with ps.subscribe([ps.notification_channel("42")], on_reconnect=reload) as sub:
            private_redis.kill()
            private_redis.start()
            deadline = time.monotonic() + 5
            while sub.reconnects == 0 and time.monotonic() < deadline:
                assert sub.get(timeout=0.1) is None  # never raises
            assert sub.reconnects == 1 and sub.stale and reloads == []
            assert "not reachable" in (sub.last_error or "")
            data.start()
            while sub.stale and time.monotonic() < deadline:
                sub.get(timeout=0.1)
            assert not sub.stale and reloads == [0]
            assert services.pubsub.notify("42", "after") == 1
            assert next_message(sub).message.kind == "after"
    finally:
        data.kill()
        reader.close()
        services.close()
