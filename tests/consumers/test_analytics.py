"""The analytics domain and consumer: what is counted, where, and exactly once.

The consumer tests run the real consumer process (`python -m devctl.consumers
analytics`, as `devctl serve` does) against a stack of the test's own (Valkey +
Tansu on free ports, down afterwards), so the DevConnect topics hold only the
test's records and every count can be exact. HyperLogLog counts are estimates;
below a few hundred members Redis's sparse encoding is exact, so the tests keep
to small sets.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import consumer_conf
from devctl.clients.redis_client import make_redis
from devctl.config.loader import Settings
from devctl.engines.local import LocalEngine
from devctl.errors import UsageError
from devctl.events.producer import EventProducer
from devctl.state.analytics import (
    DAY,
    HOUR,
    Activity,
    Analytics,
    AnalyticsOps,
    bucket_of,
    event_time,
    parse_window,
    period_start,
    window_text,
)
from devctl.state.keys import KeySchema
from devctl.streams.groups import GroupAdmin
from devctl.streams.offsets import end_offsets
from devctl.streams.topics import TopicAdmin
from tests.conftest import stack_settings

# A fixed moment (a Wednesday, 2026-11-25 18:22:42 UTC) for the pure tests.
T0 = datetime(2026, 11, 25, 18, 22, 42, tzinfo=UTC).timestamp()
GROUP = "devconnect-group.analytics"  # the default kafka.group_id + ".analytics"


def act(event_type: str, at: float, subject: str | None, **data: Any) -> Activity:
    return Activity(event_type, at, subject, data)


# --- the domain without I/O ---------------------------------------------------------------


def test_effects_merge_a_batch_into_buckets_of_the_events_own_time() -> None:
    keys = KeySchema("p:")
    ops = AnalyticsOps(keys)
    later = T0 + 3 * HOUR  # another hour, same day
    commands = ops.effects(
        [
            act("devconnect.message.sent", T0, "a", fromUserId="a", toUserId="b"),
            act("devconnect.message.sent", T0 + 1, "a", fromUserId="a", toUserId="b"),
            act("devconnect.message.sent", later, "b", fromUserId="b", toUserId="a"),
            act("devconnect.user.signup", T0, "c", userId="c"),
            act(
                "devconnect.connection.requested",
                T0,
                "a",
                fromUserId="a",
                toUserId="c",
                status="interested",
            ),
            act(
                "devconnect.connection.requested",
                T0,
                "b",
                fromUserId="b",
                toUserId="c",
                status="ignored",
            ),
            act("devconnect.notification.created", T0, "z", userId="z"),
        ],
        now=T0 + 60,
    )
    got = [(c.name, *c.args) for c in commands]
    minute = keys.analytics_counts("m", "202611251822")
    assert ("hincrby", minute, "devconnect.message.sent", 2) in got  # merged: one command
    assert (
        "hincrby",
        keys.analytics_counts("m", "202611252122"),
        "devconnect.message.sent",
        1,
    ) in got
    assert ("hincrby", keys.analytics_counts("d", "20261125"), "devconnect.message.sent", 3) in got
    assert ("expireat", minute, int(T0 // 60 * 60 + 60 + 48 * HOUR)) in got
    day_end = int(datetime(2026, 11, 26, tzinfo=UTC).timestamp())
    assert ("expireat", keys.analytics_counts("d", "20261125"), day_end + 400 * DAY) in got
    # Active users: subjects, never a notification's recipient (a notification is no act).
    assert ("pfadd", keys.analytics_active("d", "20261125"), "a", "b", "c") in got
    month_end = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    assert ("expireat", keys.analytics_active("m", "202611"), month_end + 800 * DAY) in got
    assert ("incrby", keys.analytics_signups("20261125"), 1) in got
    users = {
        (c.args[0], c.args[1]): c.args[2]
        for c in commands
        if c.name == "hincrby" and ":user:" in c.args[0]
    }
    assert users == {
        (keys.analytics_user("a"), "messages_sent"): 2,
        (keys.analytics_user("b"), "messages_received"): 2,
        (keys.analytics_user("b"), "messages_sent"): 1,
        (keys.analytics_user("a"), "messages_received"): 1,
        (keys.analytics_user("a"), "requests_sent"): 1,
        (keys.analytics_user("c"), "requests_received"): 1,
        (keys.analytics_user("b"), "passes"): 1,  # an "ignored" request is a pass
        (keys.analytics_user("z"), "notifications"): 1,
    }
    assert ("expire", keys.analytics_user("a"), 90 * DAY) in got
    # Every key written gets its expiry: nothing lives for ever.
    written = {c.args[0] for c in commands if c.name in ("hincrby", "pfadd", "incrby")}
    expiring = {c.args[0] for c in commands if c.name in ("expireat", "expire")}
    assert written == expiring


def test_buckets_past_their_retention_are_not_written() -> None:
    keys = KeySchema("p:")
    now = T0 + 3 * DAY  # the minute buckets of T0 are gone (48 h), hours and days are not
    commands = AnalyticsOps(keys).effects([act("devconnect.user.login", T0, "a", userId="a")], now)
    written = {c.args[0] for c in commands if c.name == "hincrby"}
    assert keys.analytics_counts("m", "202611251822") not in written
    assert keys.analytics_counts("h", "2026112518") in written
    assert keys.analytics_counts("d", "20261125") in written
    ancient = AnalyticsOps(keys).effects([act("devconnect.user.login", T0 - 900 * DAY, "a")], T0)
    assert [c.name for c in ancient] == []  # no bucket, no active-user key, no user counter


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15m", 900), ("1h", 3600), ("6h", 21600), ("24h", 86400), ("7d", 604800), (" 2H ", 7200)],
)
def test_windows(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds
    assert parse_window(window_text(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "1w", "-1h", "1.5h", "0m", "32d", "1h30m", "abc"])
def test_bad_windows_are_usage_errors_with_examples(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_window(text, field="start_since")
    assert caught.value.field == "start_since"
    assert caught.value.data["value"] == text
    assert "15m" in caught.value.data["examples"]


def test_event_times() -> None:
    assert event_time("2026-11-25T18:22:42Z") == T0
    assert event_time("2026-11-25t20:22:42.000+02:00") == T0
    assert event_time("2026-11-25T18:22:42") == T0  # no zone: UTC
    assert event_time(None) is None
    assert event_time("yesterday") is None
    assert bucket_of("m", T0) == "202611251822" and bucket_of("M", T0) == "202611"


# --- the domain against Redis -------------------------------------------------------------


@pytest.fixture
def analytics(stack: Any, unique: str) -> Iterator[Analytics]:
    """The analytics under a key prefix of this test; its keys are deleted afterwards."""
    client = stack.redis()
    prefix = f"an{unique}:"
    yield Analytics(client, KeySchema(prefix))
    found = list(client.scan_iter(match=f"an{unique}:*", count=1000))
    if found:
        client.delete(*found)
    client.close()


def test_reads_zero_fill_series_and_count_days_months_signups_and_top_users(
    analytics: Analytics,
) -> None:
    # Noon of the real day: Redis expires buckets by its own clock, and no event below
    # crosses midnight.
    now = period_start("d", time.time()) + 12 * HOUR
    day = [time.strftime("%Y-%m-%d", time.gmtime(now - DAY * i)) for i in (2, 1, 0)]
    users = ["u1", "u2", "odd:id{x}"]  # escaped in keys, given back as it was
    events = [act("devconnect.user.signup", now - DAY, u, userId=u) for u in users]
    events += [
        act("devconnect.message.sent", now - 120, "u1", fromUserId="u1", toUserId="u2"),
        act("devconnect.message.sent", now - 120, "u1", fromUserId="u1", toUserId="u2"),
        act("devconnect.message.sent", now, "odd:id{x}", fromUserId="odd:id{x}", toUserId="u1"),
        act("devconnect.user.login", now, "u2", userId="u2"),
    ]
    assert analytics.record(events, now=now) == len(events)

    series = analytics.series(15 * 60, now=now)
    assert series.granularity == "m" and series.step == 60 and len(series.starts) == 15
    assert series.starts[-1] == now // 60 * 60  # the current minute last
    assert series.counts["devconnect.message.sent"][-3:] == [2, 0, 1]  # zero-filled
    assert sum(series.counts["devconnect.message.sent"]) == 3
    assert "devconnect.user.signup" not in series.counts  # a day ago: outside the window
    assert series.per_bucket[-1] == 2

    hourly = analytics.series(3 * DAY, now=now)
    assert hourly.granularity == "h" and len(hourly.starts) == 72
    assert hourly.totals == {
        "devconnect.user.signup": 3,
        "devconnect.message.sent": 3,
        "devconnect.user.login": 1,
    }

    dau = analytics.daily_active(3, now=now)
    assert [(d.day, d.count) for d in dau] == [
        (day[0], 0),
        (day[1], 3),
        (day[2], 3),
    ]
    assert analytics.monthly_active(now=now) == 3
    assert [d.count for d in analytics.signups(3, now=now)] == [0, 3, 0]
    top, scanned = analytics.top_users(2)
    assert scanned == 3
    assert [(u.user_id, u.messages) for u in top] == [("u1", 3), ("u2", 2)]
    assert analytics.user("odd:id{x}") == {"messages_sent": 1}

    summary = analytics.summary(HOUR, top=5, now=now)
    shape = summary.to_json()
    assert shape["total"] == 4 and shape["window"] == "1h" and shape["granularity"] == "minute"
    assert shape["dau_today"] == 3 and shape["mau"] == {"month": day[2][:7], "users": 3}
    assert [d["count"] for d in shape["signups"]][-2:] == [3, 0]
    assert [u["user_id"] for u in shape["top_users"]] == ["u1", "u2", "odd:id{x}"]
    assert set(shape) == {
        "now",
        "window",
        "window_seconds",
        "granularity",
        "bucket_seconds",
        "buckets",
        "total",
        "per_bucket",
        "types",
        "dau",
        "dau_today",
        "mau",
        "signups",
        "top_users",
        "users_scanned",
    }


# --- the consumer process on a stack of its own ---------------------------------------------


@dataclass
class OwnStack:
    settings: Settings
    endpoints: Endpoints
    root: Path
    client: redis.Redis

    @property
    def keys(self) -> KeySchema:
        return KeySchema(self.settings.redis.key_prefix)

    def env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))
        }
        env.update(
            DEVCTL_DATA_DIR=str(self.settings.data_dir),
            DEVCTL_REDIS_PORT=str(self.settings.redis.port),
            DEVCTL_KAFKA_PORT=str(self.settings.kafka.port),
            PYTHONPATH=os.pathsep.join(sys.path),
            DEVCTL_LOG_LEVEL="info",  # the runtime's "stopped; {counters}" line
        )
        return env


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[OwnStack]:
    # A short stop timeout: Tansu waits for connected clients on SIGTERM.
    settings = stack_settings(tmp_path / "data", tmp_path, **{"local.stop_timeout": 0.5})
    engine = LocalEngine(settings)
    try:
        endpoints = engine.up().endpoints
        admin = TopicAdmin(endpoints, settings)
        admin.apply(admin.plan(settings.topics))
        client = make_redis(endpoints, settings)
        try:
            yield OwnStack(settings, endpoints, tmp_path, client)
        finally:
            client.close()
    finally:
        engine.down()


@pytest.fixture
def consumers(own_stack: OwnStack) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `python -m devctl.consumers analytics` processes; all are killed afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(config: str | None = None) -> subprocess.Popen[str]:
        env = own_stack.env()
        if config is not None:
            path = own_stack.root / f"devctl-{len(started)}.yaml"
            path.write_text(config)
            env["DEVCTL_CONFIG"] = str(path)
        proc = subprocess.Popen(
            [sys.executable, "-m", "devctl.consumers", "analytics"],
            env=env,
            cwd=own_stack.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def stop(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """SIGTERM a consumer; it must exit 0. Its final counters (from its log)."""
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    match = re.search(r"stopped; (\{.*\})", err)
    assert match, err
    counters: dict[str, Any] = ast.literal_eval(match.group(1))  # the runtime logs a dict
    return counters


def wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(
                f"the consumer exited ({proc.returncode}): {proc.communicate()[1]}"
            )
        assert time.monotonic() < deadline, "timed out waiting for the consumer"
        time.sleep(0.02)


def snapshot(stack: OwnStack) -> dict[str, Any]:
    """Every analytics key and its content (hash, string, HLL count)."""
    out: dict[str, Any] = {}
    for key in stack.client.scan_iter(
        match=stack.keys.scan_pattern("analytics_counts"), count=1000
    ):
        out[key] = stack.client.hgetall(key)
    for kind in ("analytics_user",):
        for key in stack.client.scan_iter(match=stack.keys.scan_pattern(kind), count=1000):
            out[key] = stack.client.hgetall(key)
    for key in stack.client.scan_iter(
        match=stack.keys.scan_pattern("analytics_signups"), count=1000
    ):
        out[key] = stack.client.get(key)
    for key in stack.client.scan_iter(
        match=stack.keys.scan_pattern("analytics_active"), count=1000
    ):
        out[key] = stack.client.pfcount(key)
    return out


def counted(stack: OwnStack) -> int:
    """Events counted in the day buckets, all types."""
    total = 0
    for key in stack.client.scan_iter(match=stack.keys.analytics_counts("d", "*"), count=1000):
        total += sum(int(v) for v in stack.client.hvals(key))
    return total


@dataclass
class Sent:
    type: str
    at: float
    subject: str
    data: dict[str, Any]


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message(sender: str, recipient: str, message_id: str) -> dict[str, Any]:
    """The data of a ``message.sent``."""
    return {
        "fromUserId": sender,
        "toUserId": recipient,
        "messageId": message_id,
        "text": "hi",
        "ts": "2026-11-25T18:22:42Z",
    }


def send(
    producer: EventProducer, event_type: str, data: dict[str, Any], at: float | None = None
) -> Sent:
    """Publish one event, at ``at`` (epoch s) when given (the envelope's time rewritten)."""
    encoded = producer.encode(event_type, data)
    envelope = json.loads(encoded.value)
    if at is not None:
        envelope["time"] = iso(at)
        encoded = encoded._replace(value=json.dumps(envelope).encode())
    producer.publish_encoded(encoded)
    return Sent(event_type, event_time(envelope["time"]) or 0.0, encoded.subject, data)


def legacy(producer: EventProducer, topic: str, key: str, record: dict[str, Any]) -> None:
    producer.publish_raw(topic, json.dumps(record).encode(), key=key.encode())


def expected_counts(keys: KeySchema, sent: list[Sent]) -> dict[str, dict[str, str]]:
    """The count hashes the events must give, computed here independently of the domain."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for s in sent:
        moment = datetime.fromtimestamp(s.at, UTC)
        for granularity, pattern in (("m", "%Y%m%d%H%M"), ("h", "%Y%m%d%H"), ("d", "%Y%m%d")):
            out[keys.analytics_counts(granularity, moment.strftime(pattern))][s.type] += 1
    return {k: {t: str(n) for t, n in v.items()} for k, v in out.items()}


def counts_in(stack: OwnStack) -> dict[str, dict[str, str]]:
    return {
        key: stack.client.hgetall(key)
        for key in stack.client.scan_iter(match=stack.keys.scan_pattern("analytics_counts"))
    }


def dead_letters(stack: OwnStack, topic: str) -> list[Any]:
    dlq = f"{topic}.dlq"
    parts = [(dlq, p) for p in range(3)]
    ends = end_offsets(stack.endpoints, stack.settings, parts)
    want = sum(ends[p].high for p in parts)
    consumer = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id="dlq-reader"))
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(dlq, p, 0) for _, p in parts])
        deadline = time.monotonic() + 10
        while len(out) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


@pytest.mark.slow
def test_the_consumer_counts_every_event_where_it_happened_legacy_too(
    own_stack: OwnStack, consumers: Callable[..., subprocess.Popen[str]]
) -> None:
    keys = own_stack.keys
    now = time.time()
    yesterday = now - 30 * HOUR  # a day the test's "now" events never touch
    sent: list[Sent] = []
    with EventProducer(own_stack.endpoints, own_stack.settings) as producer:
        for user in ("ann", "bob", "cy"):
            sent.append(
                send(
                    producer,
                    "devconnect.user.signup",
                    {"userId": user, "firstName": "Test", "emailId": f"{user}@example.com"},
                )
            )
        sent.append(send(producer, "devconnect.user.login", {"userId": "ann"}))
        for i in range(5):
            sent.append(send(producer, "devconnect.message.sent", message("ann", "bob", f"m{i}")))
        sent.append(
            send(
                producer,
                "devconnect.connection.requested",
                {"fromUserId": "cy", "toUserId": "ann", "requestId": "r1", "status": "interested"},
            )
        )
        sent.append(
            send(
                producer,
                "devconnect.connection.accepted",
                {"fromUserId": "cy", "toUserId": "ann", "requestId": "r1"},
            )
        )
        sent.append(
            send(
                producer,
                "devconnect.notification.created",
                {"notificationId": "n1", "userId": "dee", "kind": "system", "title": "hello"},
            )
        )
        # Replayed or late: counted in the buckets of their own time.
        for i in range(2):
            late = message("old", "bob", f"o{i}")
            sent.append(send(producer, "devconnect.message.sent", late, at=yesterday + i))
        # Today's backend's records: no envelope, no id, their own timestamps.
        legacy_at = now - 2 * HOUR
        legacy_iso = iso(legacy_at)
        mongo = "5f1d7c2e9b1e8a3d4c5b6a79"
        legacy(
            producer,
            "user-events",
            mongo,
            {
                "eventType": "USER_SIGNUP",
                "userId": mongo,
                "timestamp": legacy_iso,
                "data": {
                    "firstName": "Leg",
                    "lastName": "Acy",
                    "emailId": "leg@example.com",
                    "signupTime": legacy_iso,
                },
            },
        )
        legacy(
            producer,
            "message-events",
            mongo,
            {
                "eventType": "MESSAGE_SENT",
                "timestamp": legacy_iso,
                "data": {
                    "messageId": "x1",
                    "fromUserId": mongo,
                    "toUserId": "bob",
                    "text": "from node",
                    "ts": int(legacy_at * 1000),
                },
            },
        )
        sent.append(Sent("devconnect.user.signup", event_time(legacy_iso) or 0, mongo, {}))
        sent.append(Sent("devconnect.message.sent", event_time(legacy_iso) or 0, mongo, {}))
        # Poison: not an event at all; dead-lettered, never counted.
        producer.publish_raw("message-events", b"\xff not json", key=b"ann")
        assert producer.flush(10) == 0

    proc = consumers()
    wait_for(lambda: counted(own_stack) >= len(sent), proc)
    time.sleep(0.5)  # anything counted twice would show now
    counters = stop(proc)
    assert counters["processed"] == len(sent) and counters["dead_lettered"] == 1

    assert counts_in(own_stack) == expected_counts(keys, sent)
    active: dict[str, set[str]] = defaultdict(set)
    signups: Counter[str] = Counter()
    for s in sent:
        if s.type != "devconnect.notification.created":  # a notification is no act of its user
            active[keys.analytics_active("d", bucket_of("d", s.at))].add(s.subject)
            active[keys.analytics_active("m", bucket_of("M", s.at))].add(s.subject)
        if s.type == "devconnect.user.signup":
            signups[keys.analytics_signups(bucket_of("d", s.at))] += 1
    assert {k: own_stack.client.pfcount(k) for k in active} == {
        k: len(v) for k, v in active.items()
    }
    assert {k: own_stack.client.get(k) for k in signups} == {k: str(n) for k, n in signups.items()}
    assert snapshot(own_stack).keys() >= active.keys() | signups.keys()
    analytics = Analytics(own_stack.client, keys)
    assert analytics.user("ann") == {
        "logins": 1,
        "messages_sent": 5,
        "requests_received": 1,
        "requests_accepted": 1,
        "connections": 1,
    }
    assert analytics.user("bob") == {"messages_received": 8}  # 5 + 2 late + 1 legacy
    assert analytics.user("cy") == {"requests_sent": 1, "connections": 1}
    assert analytics.user("dee") == {"notifications": 1}
    assert analytics.user(mongo) == {"messages_sent": 1}

    (poison,) = dead_letters(own_stack, "message-events")
    headers = {k: v.decode() for k, v in poison.headers() or []}
    assert headers["dlq-reason"] == "invalid-envelope" and headers["dlq-group"] == GROUP
    assert GroupAdmin(own_stack.endpoints, own_stack.settings).committed(
        GROUP
    )  # the documented group


@pytest.mark.slow
def test_redelivery_changes_nothing(
    own_stack: OwnStack, consumers: Callable[..., subprocess.Popen[str]]
) -> None:
    with EventProducer(own_stack.endpoints, own_stack.settings) as producer:
        sent = [
            send(producer, "devconnect.message.sent", message(f"u{i % 4}", "z", f"m{i}"))
            for i in range(40)
        ]
        again = producer.encode("devconnect.user.login", {"userId": "u1"})
        producer.publish_encoded(again)
        producer.publish_encoded(again)  # the same event twice on the topic: counted once
        sent.append(Sent(again.type, 0, "u1", {}))
        assert producer.flush(10) == 0
    first = consumers()
    wait_for(lambda: counted(own_stack) >= len(sent), first)
    time.sleep(0.3)
    assert stop(first)["duplicates"] == 1
    before = snapshot(own_stack)
    assert counted(own_stack) == len(sent)

    # Every record delivered again to the same group: the guard absorbs all of them.
    groups = GroupAdmin(own_stack.endpoints, own_stack.settings)
    for topic in ("user-events", "message-events"):
        groups.reset(GROUP, groups.plan_reset(GROUP, topic, "earliest"))
    second = consumers()
    wait_for(lambda: groups.describe(GROUP).lag == 0 and groups.describe(GROUP).active, second)
    time.sleep(0.5)
    counters = stop(second)
    assert counters["processed"] == 0 and counters["duplicates"] == len(sent) + 1
    assert snapshot(own_stack) == before


@pytest.mark.slow
def test_a_consumer_killed_mid_stream_counts_exactly_once_after_a_restart(
    own_stack: OwnStack, consumers: Callable[..., subprocess.Popen[str]]
) -> None:
    keys = own_stack.keys
    total = 2000
    types = [
        ("devconnect.user.login", lambda i: {"userId": f"u{i % 50}"}),
        ("devconnect.message.sent", lambda i: message(f"u{i % 50}", f"u{(i + 1) % 50}", f"m{i}")),
        (
            "devconnect.connection.requested",
            lambda i: {
                "fromUserId": f"u{i % 50}",
                "toUserId": f"u{(i + 7) % 50}",
                "requestId": f"r{i}",
                "status": "interested",
            },
        ),
    ]
    with EventProducer(own_stack.endpoints, own_stack.settings) as producer:
        sent = []
        for i in range(total):
            event_type, data = types[(i // 3) % 3]  # short runs of one type: many transactions
            sent.append(send(producer, event_type, data(i)))
        assert producer.flush(30) == 0

    # Small polls so that the kill lands mid-stream, with handled events not yet committed.
    first = consumers("events:\n  consumer_batch_size: 5\n")
    wait_for(lambda: counted(own_stack) >= 300, first, timeout=90)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    at_kill = counted(own_stack)
    assert 300 <= at_kill < total  # really mid-stream

    second = consumers()
    wait_for(lambda: counted(own_stack) >= total, second, timeout=90)
    time.sleep(0.5)  # a double count would show now
    counters = stop(second)
    assert counters["processed"] + at_kill >= total  # what the first one did not commit came again
    assert counts_in(own_stack) == expected_counts(keys, sent)
    analytics = Analytics(own_stack.client, keys)
    sent_by: Counter[str] = Counter(
        s.data["fromUserId"] for s in sent if s.type == "devconnect.message.sent"
    )
    for user in ("u0", "u17", "u49"):
        assert analytics.user(user)["messages_sent"] == sent_by[user]
    assert analytics.daily_active(1)[0].count == 50
