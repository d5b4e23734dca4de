"""Other clients' view: the official CloudEvents SDK reads our records, we read its
binary-mode records, and the records today's Node backend writes are read as typed events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaProducer

from devctl.clients.kafka_client import consumer_conf
from devctl.events.envelope import encode_event
from devctl.events.legacy import legacy_event_id
from devctl.events.producer import EventProducer
from devctl.events.registry import REGISTRY
from tests.events.test_consumer_runtime import runtime

LOGIN = "devconnect.user.login"


def _samples() -> dict[str, dict[str, Any]]:
    """Valid data for every registered type."""
    a, b = "65a1b2c3d4e5f60718293a4b", "65a1b2c3d4e5f60718293a4c"
    two = {"fromUserId": a, "toUserId": b}
    when = "2026-11-25T18:00:00Z"
    return {
        "devconnect.user.signup": {"userId": a, "firstName": "Ada", "emailId": "ada@x.io"},
        LOGIN: {"userId": a, "userAgent": "curl"},
        "devconnect.user.logout": {"userId": a},
        "devconnect.user.online": {"userId": a},
        "devconnect.user.offline": {"userId": a, "lastSeen": when},
        "devconnect.user.profile_updated": {"userId": a, "changed": ["about"]},
        "devconnect.message.sent": {**two, "messageId": "m1", "text": "hi", "ts": when},
        "devconnect.message.delivered": {**two, "messageId": "m1", "deliveredAt": when},
        "devconnect.message.read": {**two, "messageId": "m1", "readAt": when},
        "devconnect.connection.requested": {**two, "requestId": "r1", "status": "interested"},
        "devconnect.connection.accepted": {**two, "requestId": "r1"},
        "devconnect.connection.rejected": {**two, "requestId": "r1"},
        "devconnect.notification.created": {
            "notificationId": "n1",
            "userId": a,
            "kind": "system",
            "title": "Hello",
        },
        "devconnect.analytics.activity": {"userId": a, "action": "page.view"},
    }


def test_every_type_is_read_by_the_python_sdk_kafka_binding() -> None:
    samples = _samples()
    assert set(samples) == set(REGISTRY)
    for name, data in samples.items():
        encoded = encode_event(name, data, source="/devconnect/test")
        message = ce_kafka.KafkaMessage(
            headers={k: v if isinstance(v, bytes) else str(v).encode() for k, v in encoded.headers},
            key=encoded.key,
            value=encoded.value,
        )
        for reader in (ce_kafka.from_kafka_event, ce_kafka.from_structured_event):
            event = reader(message)
            assert event.get_type() == name, reader
            assert event.get_id() == encoded.id
            assert event.get_source() == "/devconnect/test"
            assert event.get_subject() == encoded.subject
            assert event.get_extension("partitionkey") == encoded.key.decode()
            assert isinstance(event.get_data(), dict)


@pytest.fixture
def kafka_python(stack: Any) -> Any:
    client = KafkaProducer(bootstrap_servers=stack.endpoints.kafka_brokers)
    yield client
    client.close()


def test_binary_mode_events_from_the_sdk_are_read_by_tail_and_the_runtime(
    stack: Any, make_topic: Any, devctl: Any, kafka_python: Any, unique: str
) -> None:
    topic = make_topic("binary", partitions=1, dead_letter=True)
    sent = []
    for index in range(3):
        event = CloudEvent(
            attributes={
                "type": LOGIN,
                "source": "/node/api",
                "id": f"bin-{unique}-{index}",
                "subject": f"u{index}",
                "datacontenttype": "application/json",
            },
            data={"userId": f"u{index}"},
        )
        message = ce_kafka.to_binary_event(event)
        assert "ce_type" in message.headers  # really binary mode
        kafka_python.send(
            topic, key=message.key, value=message.value, headers=list(message.headers.items())
        ).get(timeout=20)
        sent.append(event.get_id())
    shown = devctl("tail", topic, "--from-beginning", "--no-follow", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [line["event"]["id"] for line in lines] == sent
    assert all("warning" not in line for line in lines)
    assert lines[0]["event"]["data"] == {"userId": "u0"}
    assert lines[0]["event"]["source"] == "/node/api"
    by_type = devctl("tail", topic, "--from-beginning", "--no-follow", "-o", "json", "-t", LOGIN)
    assert len(by_type.stdout.splitlines()) == 3  # the ce_type header is the fast filter too
    handled: list[str] = []
    rt = runtime(stack, topic, f"g-{unique}", idempotency=False)
    rt.on(LOGIN, lambda e: handled.append(e.id))
    counters = rt.run(install_signals=False, until_idle=1.0)
    assert handled == sent and counters.dead_lettered == 0


def _node_records() -> list[tuple[str, str | None, dict[str, Any]]]:
    """(topic, key, value) exactly as today's Node backend (kafkajs) writes them."""
    user, other = "65a1b2c3d4e5f60718293a4b", "65a1b2c3d4e5f60718293a4c"
    at = "2026-11-25T18:00:00.000Z"
    return [
        (
            "user-events",
            user,
            {
                "eventType": "USER_SIGNUP",
                "userId": user,
                "timestamp": at,
                "data": {
                    "firstName": "Ada",
                    "lastName": "L",
                    "emailId": "ada@x.io",
                    "signupTime": at,
                },
            },
        ),
        (
            "user-events",
            user,
            {
                "eventType": "USER_LOGIN",
                "userId": user,
                "timestamp": at,
                "data": {"emailId": "ada@x.io", "loginTime": at, "ipAddress": "::1"},
            },
        ),
        (
            "user-events",
            user,
            {
                "eventType": "USER_ONLINE",
                "userId": user,
                "timestamp": at,
                "data": {"socketId": "s1"},
            },
        ),
        (
            "user-events",
            user,
            {
                "eventType": "USER_OFFLINE",
                "userId": user,
                "timestamp": at,
                "data": {"socketId": "s1"},
            },
        ),
        (
            "message-events",
            user,
            {
                "eventType": "MESSAGE_SENT",
                "timestamp": at,
                "data": {
                    "messageId": "65a1b2c3d4e5f60718293a50",
                    "fromUserId": user,
                    "toUserId": other,
                    "text": "hello",
                    "ts": 1764093600000,
                },
            },
        ),
        (
            "connection-events",
            user,
            {
                "eventType": "CONNECTION_REQUEST",
                "timestamp": at,
                "data": {
                    "requestId": "65a1b2c3d4e5f60718293a51",
                    "fromUserId": user,
                    "toUserId": other,
                    "status": "interested",
                    "timestamp": at,
                },
            },
        ),
        (
            "connection-events",
            user,
            {
                "eventType": "CONNECTION_REVIEW",
                "timestamp": at,
                "data": {
                    "requestId": "65a1b2c3d4e5f60718293a51",
                    "fromUserId": user,
                    "toUserId": other,
                    "status": "accepted",
                    "timestamp": at,
                },
            },
        ),
        (
            "notification-events",
            other,
            {
                "eventType": "CONNECTION_REQUEST_NOTIFICATION",
                "timestamp": at,
                "data": {"userId": other, "fromUserId": user, "message": "Ada wants to connect"},
            },
        ),
        (
            "analytics-events",
            "system",
            {
                "eventType": "MESSAGE_ANALYTICS",
                "timestamp": at,
                "data": {"userId": user, "messageCount": 3, "timestamp": at},
            },
        ),
        (
            "user-events",
            "test-user",
            {"eventType": "TEST_EVENT", "userId": "test-user", "timestamp": at, "data": {"x": 1}},
        ),
    ]


def test_records_of_todays_backend_are_read_as_typed_events(
    stack: Any, devctl: Any, kafka_python: Any
) -> None:
    expected = {
        "USER_SIGNUP": "devconnect.user.signup",
        "USER_LOGIN": "devconnect.user.login",
        "USER_ONLINE": "devconnect.user.online",
        "USER_OFFLINE": "devconnect.user.offline",
        "MESSAGE_SENT": "devconnect.message.sent",
        "CONNECTION_REQUEST": "devconnect.connection.requested",
        "CONNECTION_REVIEW": "devconnect.connection.accepted",
        "CONNECTION_REQUEST_NOTIFICATION": "devconnect.notification.created",
        "MESSAGE_ANALYTICS": "devconnect.analytics.activity",
    }
    for topic, key, value in _node_records():
        meta = kafka_python.send(
            topic, key=key.encode() if key else None, value=json.dumps(value).encode()
        ).get(timeout=20)
        where = f"{meta.partition}:{meta.offset}"
        shown = devctl("tail", topic, "--offset", where, "--count", "1", "-o", "json")
        assert shown.returncode == 0, shown.stderr
        line = json.loads(shown.stdout)
        name = value["eventType"]
        assert line["legacy"] == name
        assert line["event"]["id"] == legacy_event_id(
            topic, meta.partition, meta.offset, json.dumps(value).encode()
        )
        if name == "TEST_EVENT":  # unknown legacy names are shown, not dropped
            assert line["warning"] == "unknown legacy event type TEST_EVENT"
            continue
        assert "warning" not in line, line
        assert line["event"]["type"] == expected[name]
        pretty = devctl("tail", topic, "--offset", where, "--count", "1", "-t", name)
        assert f"legacy {name} {expected[name]}" in pretty.stdout, pretty.stderr
        assert f"--type {name} is today's name of" in pretty.stderr


def test_legacy_redelivery_is_a_duplicate_for_the_runtime(
    stack: Any, make_topic: Any, kafka_python: Any, unique: str
) -> None:
    """The derived id is the same on every read: the idempotency guard skips a redelivery."""
    topic = make_topic("legacy", partitions=1, dead_letter=True)
    for _t, key, value in _node_records()[:4]:
        kafka_python.send(topic, key=key.encode(), value=json.dumps(value).encode()).get(20)
    group = f"g-{unique}"
    seen: list[tuple[str, str | None]] = []

    def run() -> Any:
        rt = runtime(stack, topic, group)
        rt.on("*", lambda e, ctx: (seen.append((e.type, e.legacy)), ctx.tx.ping()))
        return rt.run(install_signals=False, until_idle=1.0)

    first = run()
    assert first.processed == 4 and first.dead_lettered == 0
    assert seen[1] == ("devconnect.user.login", "USER_LOGIN")
    rewind = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id=group))
    try:
        rewind.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        rewind.close()
    second = run()
    assert (second.processed, second.duplicates) == (0, 4)
    assert len(seen) == 4


def test_dead_lettered_copies_stay_readable(
    stack: Any, make_topic: Any, producer: EventProducer, devctl: Any, unique: str
) -> None:
    """A dead-letter topic is not a registered topic: any type is shown there unwarned."""
    topic = make_topic("dlq-read", partitions=1, dead_letter=True)
    producer.publish(LOGIN, {"userId": "u1"}, topic=f"{topic}.dlq").result(10)
    shown = devctl("tail", f"{topic}.dlq", "--from-beginning", "--no-follow", "-o", "json")
    assert "warning" not in json.loads(shown.stdout)


_JS_READER = """
const { Kafka } = require("cloudevents");
const msgs = JSON.parse(require("fs").readFileSync(0, "utf8"));
for (const m of msgs) {
  const ev = Kafka.toEvent({ key: m.key, value: m.value, headers: m.headers });
  if (ev.type !== m.type || ev.id !== m.id || ev.source !== "/devconnect/test") {
    console.error(`mismatch: ${m.type} read as ${ev.type} ${ev.id}`);
    process.exit(1);
  }
}
console.log(`read ${msgs.length}`);
"""


@pytest.mark.slow
def test_every_type_is_read_by_the_js_sdk(tmp_path: Any) -> None:
    """kafkajs services read our events with the JS SDK's Kafka.toEvent (npm `cloudevents`).

    Needs node and the npm registry (both on the project's machines); skipped without them.
    """
    import shutil
    import subprocess

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    install = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(tmp_path), "cloudevents@10"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if install.returncode != 0:
        pytest.skip(f"npm could not install cloudevents: {install.stderr[-300:]}")
    messages = []
    for name, data in _samples().items():
        encoded = encode_event(name, data, source="/devconnect/test")
        messages.append(
            {
                "key": encoded.key.decode(),
                "value": encoded.value.decode(),
                "headers": {k: bytes(v).decode() for k, v in encoded.headers},  # type: ignore[arg-type]
                "type": name,
                "id": encoded.id,
            }
        )
    script = tmp_path / "read.js"
    script.write_text(_JS_READER)
    read = subprocess.run(
        ["node", str(script)],
        input=json.dumps(messages),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == f"read {len(REGISTRY)}"
