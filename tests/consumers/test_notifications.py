"""The notifications domain and consumer, on the real stack, the consumer as a real process."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from devctl.clients.kafka_client import common_conf
from devctl.consumers import CONSUMERS
from devctl.consumers.notifications import (
    created_event_id,
    group_name,
    notification_for,
)
from devctl.events.envelope import Event, decode_event
from devctl.events.legacy import legacy_event_id
from devctl.events.producer import EventProducer
from devctl.state.keys import KeySchema
from devctl.state.notifications import (
    Notifications,
    new_notification,
    notification_id,
)
from devctl.state.presence import Presence
from devctl.state.validate import InvalidArgument
from tests.conftest import Stack
from tests.consumers.conftest import (
    ConsumerProcess,
    caught_up,
    commit_offsets,
    topic_ends,
    wait_until,
)

TOPICS = ["connection-events", "message-events"]


def oid() -> str:
    """A MongoDB-style id (24 hex digits), as the API's."""
    return uuid.uuid4().hex[:24]


@pytest.fixture
def notes(stack: Stack) -> Iterator[Notifications]:
    client = stack.redis()
    keys = KeySchema(stack.settings.redis.key_prefix)
    try:
        yield Notifications(client, keys, max_items=5, ttl=3600)
    finally:
        client.close()


def note(user: str, n: int, kind: str = "message") -> dict[str, Any]:
    return new_notification(
        id=f"n{n}",
        type=kind,  # type: ignore[arg-type]
        user_id=user,
        from_user_id="someone",
        text=f'text {n} with "quotes" and ,"read":false}} inside',
        data={"messageId": f"m{n}"},
        created_at="2026-12-01T10:00:00Z",
    )


# --- the domain -------------------------------------------------------------------


def test_add_lists_newest_first_with_exact_unread(notes: Notifications) -> None:
    user = oid()
    assert notes.add(note(user, 1)) == 1
    assert notes.add(note(user, 2)) == 2
    page = notes.list(user)
    assert [n["id"] for n in page.items] == ["n2", "n1"]
    assert page.unread == 2
    assert page.items[0] == {**note(user, 2), "read": False}
    assert notes.unread_count(user) == 2


def test_an_id_already_there_adds_nothing(notes: Notifications) -> None:
    user = oid()
    assert notes.add(note(user, 1)) == 1
    assert notes.add(note(user, 1)) is None
    assert notes.unread_count(user) == 1
    assert len(notes.list(user).items) == 1


def test_the_cap_drops_the_oldest_and_keeps_the_count_exact(notes: Notifications) -> None:
    user = oid()
    for n in range(1, 6):
        notes.add(note(user, n))
    notes.mark_read(user, ["n1", "n2"])  # the two oldest: read
    assert notes.unread_count(user) == 3
    notes.add(note(user, 6))  # drops n1 (read): unread 4
    assert notes.unread_count(user) == 4
    notes.add(note(user, 7))  # drops n2 (read): unread 5
    assert notes.unread_count(user) == 5
    notes.add(note(user, 8))  # drops n3 (unread): still 5
    page = notes.list(user, limit=100)
    assert [n["id"] for n in page.items] == ["n8", "n7", "n6", "n5", "n4"]
    assert page.unread == 5


def test_mark_read_some_all_twice_unknown_and_never_negative(notes: Notifications) -> None:
    user = oid()
    for n in range(1, 4):
        notes.add(note(user, n))
    first = notes.mark_read(user, ["n2", "nope", "n2"])
    assert (first.marked, first.unread) == (1, 2)
    again = notes.mark_read(user, ["n2"])
    assert (again.marked, again.unread) == (0, 2)
    page = notes.list(user, unread_only=True)
    assert [n["id"] for n in page.items] == ["n3", "n1"]
    read = notes.list(user).items[1]
    assert read["id"] == "n2" and read["read"] is True
    assert read["text"] == note(user, 2)["text"]  # only the flag changed
    everything = notes.mark_read(user)
    assert (everything.marked, everything.unread) == (2, 0)
    assert notes.mark_read(user).unread == 0
    assert notes.unread_count(user) == 0
    assert notes.mark_read(user, []).marked == 0
    # A user with nothing: zero, and no key left behind.
    nobody = oid()
    assert notes.mark_read(nobody).unread == 0
    assert not notes.client.exists(notes.keys.notifications_unread(nobody))


def test_both_keys_expire_together_and_each_add_refreshes_them(notes: Notifications) -> None:
    user = oid()
    notes.add(note(user, 1))
    keys = [notes.keys.notifications(user), notes.keys.notifications_unread(user)]
    for key in keys:
        assert 3590 < notes.client.ttl(key) <= 3600
    notes.client.expire(keys[0], 100)
    notes.client.expire(keys[1], 100)
    notes.mark_read(user, ["n1"])  # keeps the list's TTL
    assert 0 < notes.client.ttl(keys[1]) <= 100
    notes.add(note(user, 2))
    for key in keys:
        assert notes.client.ttl(key) > 3500


def test_bad_ids_are_refused(notes: Notifications) -> None:
    with pytest.raises(InvalidArgument):
        notes.mark_read(oid(), ['x",'])
    with pytest.raises(InvalidArgument):
        new_notification(id="a:b", type="message", user_id="u", text="t", created_at="t")


# --- the consumer -------------------------------------------------------------------


def publish_wait(producer: EventProducer, event_type: str, data: dict[str, Any]) -> str:
    """Publish, wait for the broker; the event id."""
    return str(producer.publish(event_type, data).result(10).event_id)


def message(sender: str, to: str, text: str = "hi") -> dict[str, Any]:
    return {
        "fromUserId": sender,
        "toUserId": to,
        "messageId": oid(),
        "text": text,
        "ts": "2026-12-01T10:00:00Z",
    }


def stored(stack: Stack, user: str) -> list[dict[str, Any]]:
    client = stack.redis()
    try:
        key = KeySchema(stack.settings.redis.key_prefix).notifications(user)
        return [json.loads(item) for item in client.lrange(key, 0, -1)]
    finally:
        client.close()


def unread(stack: Stack, user: str) -> int:
    client = stack.redis()
    try:
        key = KeySchema(stack.settings.redis.key_prefix).notifications_unread(user)
        return int(client.get(key) or 0)
    finally:
        client.close()


def read_from(
    stack: Stack,
    start: dict[tuple[str, int], int],
    done: Callable[[list[Any]], bool],
    timeout: float = 30,
) -> list[Any]:
    """Records from ``start`` until ``done(records)`` (or the timeout: what came)."""
    conf = common_conf(stack.endpoints, stack.settings)
    conf.update({"group.id": f"t-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    reader = Consumer(conf)
    got: list[Any] = []
    try:
        reader.assign([TopicPartition(t, p, o) for (t, p), o in start.items()])
        deadline = time.monotonic() + timeout
        while not done(got) and time.monotonic() < deadline:
            msg = reader.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append(msg)
    finally:
        reader.close()
    return got


def created_events(
    stack: Stack, start: dict[tuple[str, int], int], ids: set[str], timeout: float = 30
) -> dict[str, Event]:
    """The notification.created events with these ids published after ``start``, by id."""

    def found(records: list[Any]) -> dict[str, Event]:
        out = {}
        for msg in records:
            event = decode_event(msg.value())
            if event.id in ids:
                out[event.id] = event
        return out

    return found(read_from(stack, start, lambda got: set(found(got)) >= ids, timeout))


@pytest.fixture
def notifications_consumer(
    consumer_process: Callable[..., ConsumerProcess], unique: str
) -> Callable[..., ConsumerProcess]:
    """Start the notifications consumer at the end of its topics, joined."""

    def start(**kwargs: Any) -> ConsumerProcess:
        proc = consumer_process("notifications", group_id=f"g{unique}", topics=TOPICS, **kwargs)
        proc.wait_joined()
        return proc

    return start


def wait_caught_up(stack: Stack, proc: ConsumerProcess, timeout: float = 30) -> None:
    ends = topic_ends(stack, TOPICS)
    wait_until(lambda: caught_up(stack, proc.group, ends), timeout, f"{proc.group} to catch up")


def test_it_is_registered_and_its_group_is_derived_from_the_config(stack: Stack) -> None:
    assert CONSUMERS["notifications"] == "devctl.consumers.notifications:main"
    assert group_name(stack.settings) == f"{stack.settings.kafka.group_id}.notifications"


def test_requests_and_acceptances_become_notifications(
    stack: Stack,
    notifications_consumer: Callable[..., ConsumerProcess],
    event_producer: EventProducer,
) -> None:
    created_start = topic_ends(stack, ["notification-events"])
    proc = notifications_consumer()
    alice, bob, carol = oid(), oid(), oid()
    request = oid()
    requested = publish_wait(
        event_producer,
        "devconnect.connection.requested",
        {"fromUserId": alice, "toUserId": bob, "requestId": request, "status": "interested"},
    )
    publish_wait(  # passing on someone is no notification
        event_producer,
        "devconnect.connection.requested",
        {"fromUserId": carol, "toUserId": bob, "requestId": oid(), "status": "ignored"},
    )
    accepted = publish_wait(
        event_producer,
        "devconnect.connection.accepted",
        {"fromUserId": alice, "toUserId": bob, "requestId": request},
    )
    for_alice = wait_until(lambda: stored(stack, alice), what="alice's notification")
    wait_caught_up(stack, proc)
    for_bob = stored(stack, bob)
    assert [n["id"] for n in for_bob] == [notification_id(requested)]
    assert for_bob[0]["type"] == "connection_request"
    assert for_bob[0]["userId"] == bob and for_bob[0]["fromUserId"] == alice
    assert for_bob[0]["text"] == "You have a new connection request"
    assert for_bob[0]["data"] == {"requestId": request}
    assert for_bob[0]["read"] is False
    assert [n["id"] for n in for_alice] == [notification_id(accepted)]
    assert for_alice[0]["type"] == "connection_accepted"
    assert for_alice[0]["fromUserId"] == bob
    assert for_alice[0]["text"] == "Your connection request was accepted"
    assert (unread(stack, alice), unread(stack, bob), unread(stack, carol)) == (1, 1, 0)
    # Each is published as notification.created, under an id derived from its source.
    ids = {created_event_id(requested), created_event_id(accepted)}
    events = created_events(stack, created_start, ids)
    assert set(events) == ids
    bob_event = events[created_event_id(requested)]
    assert bob_event.type == "devconnect.notification.created"
    assert bob_event.data == {
        "notificationId": notification_id(requested),
        "userId": bob,
        "kind": "connection_request",
        "title": "You have a new connection request",
        "body": None,
        "actorId": alice,
        "refId": request,
    }
    assert proc.stop() == 0
    assert f"{proc.group}: stopped;" in proc.log()


def test_messages_notify_offline_recipients_only(
    stack: Stack,
    notifications_consumer: Callable[..., ConsumerProcess],
    event_producer: EventProducer,
) -> None:
    proc = notifications_consumer()
    sender, offline, online = oid(), oid(), oid()
    client = stack.redis()
    presence = Presence(client, KeySchema(stack.settings.redis.key_prefix), instance_ttl=60)
    instance = f"api-{oid()[:8]}"
    try:
        presence.heartbeat(instance)
        presence.connect(online, "tab-1", instance)
        assert presence.status(online).online
        publish_wait(event_producer, "devconnect.message.sent", message(sender, online, "there?"))
        long_text = "  hello\n  " + "x" * 300
        to_offline = publish_wait(
            event_producer, "devconnect.message.sent", message(sender, offline, long_text)
        )
        got = wait_until(lambda: stored(stack, offline), what="the offline user's notification")
        wait_caught_up(stack, proc)
        assert got[0]["id"] == notification_id(to_offline)
        assert got[0]["type"] == "message" and got[0]["fromUserId"] == sender
        assert got[0]["text"] == "New message: hello " + "x" * 93 + "…"
        assert len(got[0]["text"]) == len("New message: ") + 100
        assert stored(stack, online) == []
        assert unread(stack, online) == 0
    finally:
        presence.disconnect(online, "tab-1", instance)
        client.close()


def test_a_redelivered_event_changes_nothing(
    stack: Stack,
    notifications_consumer: Callable[..., ConsumerProcess],
    event_producer: EventProducer,
) -> None:
    proc = notifications_consumer()
    start = topic_ends(stack, TOPICS)
    sender, to = oid(), oid()
    encoded = event_producer.encode("devconnect.message.sent", message(sender, to, "one"))
    event_producer.publish_encoded(encoded).result(10)
    wait_until(lambda: stored(stack, to), what="the first delivery")
    before = stored(stack, to)
    # The same event again (same id), published twice more.
    event_producer.publish_encoded(encoded).result(10)
    event_producer.publish_encoded(encoded).result(10)
    wait_caught_up(stack, proc)
    assert stored(stack, to) == before
    assert unread(stack, to) == 1
    # Redelivered by the group itself: stopped, rewound, started again.
    assert proc.stop() == 0
    commit_offsets(stack, proc.group, start)
    proc.start()
    proc.wait_joined()
    wait_caught_up(stack, proc)
    assert stored(stack, to) == before
    assert unread(stack, to) == 1
    assert proc.stop() == 0
    assert "'duplicates': 3" in proc.log()  # all three copies were recognised


def test_killed_mid_stream_and_restarted_ends_exactly_as_if_not_killed(
    stack: Stack,
    notifications_consumer: Callable[..., ConsumerProcess],
    event_producer: EventProducer,
) -> None:
    created_start = topic_ends(stack, ["notification-events"])
    proc = notifications_consumer(config={"events": {"consumer_batch_size": 10}})
    recipients = [oid() for _ in range(10)]
    senders = [oid() for _ in range(5)]
    encoded = [
        event_producer.encode(
            "devconnect.message.sent",
            message(senders[i % 5], recipients[i % 10], f"message {i}"),
        )
        for i in range(500)
    ]
    expected: dict[str, list[dict[str, Any]]] = {user: [] for user in recipients}
    for one in encoded:
        made = notification_for(decode_event(one.value))
        assert made is not None
        expected[made["userId"]].insert(0, made)
    for future in [event_producer.publish_encoded(one) for one in encoded]:
        future.result(10)

    client = stack.redis()
    keys = KeySchema(stack.settings.redis.key_prefix)

    def total() -> int:
        pipe = client.pipeline(transaction=False)
        for user in recipients:
            pipe.llen(keys.notifications(user))
        return sum(pipe.execute())

    try:
        wait_until(lambda: total() >= 200, what="200 notifications")
        proc.kill()
        at_kill = total()
        assert 200 <= at_kill < 500, f"the kill came too late to test anything ({at_kill})"
        proc.start()
        proc.wait_joined()
        wait_until(lambda: total() >= 500, 60, "all 500 notifications")
        wait_caught_up(stack, proc)
    finally:
        client.close()
    for user in recipients:
        got = stored(stack, user)
        assert sorted(got, key=itemgetter("id")) == sorted(expected[user], key=itemgetter("id"))
        # Within one conversation (one partition), newest first as sent.
        for sender in senders:
            mine = [n["id"] for n in got if n["fromUserId"] == sender]
            assert mine == [n["id"] for n in expected[user] if n["fromUserId"] == sender]
        assert unread(stack, user) == 50
    ids = {created_event_id(one.id) for one in encoded}
    assert set(created_events(stack, created_start, ids, timeout=60)) == ids
    assert proc.stop() == 0


def test_legacy_records_of_todays_backend_make_notifications(
    stack: Stack,
    notifications_consumer: Callable[..., ConsumerProcess],
    event_producer: EventProducer,
) -> None:
    proc = notifications_consumer()
    alice, bob, carol = oid(), oid(), oid()
    request = oid()
    when = "2026-12-01T10:00:00.000Z"

    def legacy(topic: str, key: str, name: str, data: dict[str, Any]) -> str:
        value = json.dumps({"eventType": name, "timestamp": when, "data": data}).encode()
        sent = event_producer.publish_raw(topic, value, key=key.encode()).result(10)
        return legacy_event_id(topic, sent.partition, sent.offset, value)

    two = {"fromUserId": alice, "toUserId": bob, "requestId": request}
    requested = legacy(
        "connection-events", alice, "CONNECTION_REQUEST", {**two, "status": "interested"}
    )
    accepted = legacy(
        "connection-events", alice, "CONNECTION_REVIEW", {**two, "status": "accepted"}
    )
    sent = legacy(
        "message-events",
        carol,
        "MESSAGE_SENT",
        {
            "messageId": oid(),
            "fromUserId": carol,
            "toUserId": bob,
            "text": "hey",
            "ts": 1764583200000,
        },
    )
    wait_until(lambda: len(stored(stack, bob)) == 2, what="bob's two notifications")
    wait_caught_up(stack, proc)
    for_bob = {n["id"]: n for n in stored(stack, bob)}
    assert set(for_bob) == {notification_id(requested), notification_id(sent)}
    assert for_bob[notification_id(requested)]["type"] == "connection_request"
    assert for_bob[notification_id(sent)]["text"] == "New message: hey"
    assert for_bob[notification_id(sent)]["fromUserId"] == carol
    assert [n["id"] for n in stored(stack, alice)] == [notification_id(accepted)]
    assert (unread(stack, alice), unread(stack, bob)) == (1, 2)


def test_a_poison_record_is_dead_lettered_and_the_next_one_handled(
    stack: Stack,
    notifications_consumer: Callable[..., ConsumerProcess],
    event_producer: EventProducer,
) -> None:
    dlq_start = topic_ends(stack, ["connection-events.dlq"])
    proc = notifications_consumer()
    alice, bob = oid(), oid()
    poison = event_producer.publish_raw(
        "connection-events", b"{not json", key=alice.encode()
    ).result(10)
    requested = publish_wait(
        event_producer,
        "devconnect.connection.requested",
        {"fromUserId": alice, "toUserId": bob, "requestId": oid(), "status": "interested"},
    )
    wait_until(lambda: stored(stack, bob), what="the event after the poison")
    assert [n["id"] for n in stored(stack, bob)] == [notification_id(requested)]

    def ours(records: list[Any]) -> list[dict[str, str]]:
        out = []
        for msg in records:
            headers = {k: v.decode() for k, v in msg.headers() or []}
            if headers.get("dlq-group") == proc.group:
                out.append(headers)
        return out

    dead = ours(read_from(stack, dlq_start, lambda got: bool(ours(got))))
    assert len(dead) == 1
    assert dead[0]["dlq-reason"] == "invalid-envelope"
    assert dead[0]["dlq-offset"] == str(poison.offset)
    assert proc.running()


def test_the_live_push_reaches_the_users_room_after_the_store(
    stack: Stack,
    notifications_consumer: Callable[..., ConsumerProcess],
    event_producer: EventProducer,
) -> None:
    proc = notifications_consumer()
    alice, bob = oid(), oid()
    keys = KeySchema(stack.settings.redis.key_prefix)
    listener = stack.redis()
    sub = listener.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(keys.socketio_channel())
    try:
        requested = publish_wait(
            event_producer,
            "devconnect.connection.requested",
            {"fromUserId": alice, "toUserId": bob, "requestId": oid(), "status": "interested"},
        )
        deadline = time.monotonic() + 30
        push = None
        while push is None and time.monotonic() < deadline:
            got = sub.get_message(timeout=1)
            if got is None:
                continue
            body = json.loads(got["data"])
            if body.get("room") == f"user:{bob}":
                push = body
                stored_then = stored(stack, bob)  # read as soon as the push arrived
        assert push is not None, "no push on the Socket.IO channel"
        assert push["method"] == "emit" and push["event"] == "notification"
        assert push["namespace"] == "/"
        [payload] = push["data"]  # the emit's arguments: one, the payload
        assert payload["unread"] == 1
        assert payload["notification"]["id"] == notification_id(requested)
        assert payload["notification"]["userId"] == bob
        assert [n["id"] for n in stored_then] == [notification_id(requested)]
    finally:
        sub.close()
        listener.close()
    assert proc.running()
