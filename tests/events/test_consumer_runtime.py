"""The consumer runtime against the real broker and Redis.

Most tests pin partitions (no group join, offsets still committed to the group) to
stay fast; the crash test runs real group members in processes of their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from redis.backoff import NoBackoff
from redis.retry import Retry

from devctl.clients.kafka_client import consumer_conf
from devctl.engines.processes import free_port
from devctl.events.consumer import CHECK_HEADER, DLQ_REASONS, ConsumerRuntime, HandlerContext
from devctl.events.envelope import Event
from devctl.events.errors import PermanentError
from devctl.events.producer import EventProducer
from devctl.state.keys import KeySchema
from devctl.streams.groups import GroupAdmin
from devctl.streams.offsets import end_offsets

ACTIVITY = "devconnect.analytics.activity"
WORKER = Path(__file__).with_name("consumer_worker.py")


@pytest.fixture
def scratch(stack: Any, unique: str) -> Iterator[tuple[redis.Redis, str]]:
    """A Redis client and a key prefix of this test; its keys are deleted afterwards."""
    client = stack.redis()
    prefix = f"rt{unique}:"
    yield client, prefix
    keys = list(client.scan_iter(match=f"*{unique}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def runtime(
    stack: Any, topic: str, group: str, partitions: int = 1, **kwargs: Any
) -> ConsumerRuntime:
    kwargs.setdefault("lag_interval", 0)
    kwargs.setdefault("backoff_ms", 10)
    return ConsumerRuntime(
        stack.endpoints,
        stack.settings,
        group=group,
        partitions=[(topic, p) for p in range(partitions)],
        **kwargs,
    )


def committed(stack: Any, group: str, topic: str, partitions: int = 1) -> dict[int, int]:
    consumer = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id=group))
    try:
        found = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


def dead_letters(stack: Any, topic: str) -> list[Any]:
    dlq = f"{topic}.dlq"
    ends = end_offsets(stack.endpoints, stack.settings, [(dlq, 0)])
    consumer = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id="dlq-reader"))
    out: list[Any] = []
    try:
        consumer.assign([TopicPartition(dlq, 0, 0)])
        deadline = time.monotonic() + 10
        while len(out) < ends[(dlq, 0)].high and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def activity(producer: EventProducer, topic: str, actions: list[str], **kwargs: Any) -> list[str]:
    futures = [
        producer.publish(ACTIVITY, {"userId": "u1", "action": a}, topic=topic, **kwargs)
        for a in actions
    ]
    return [f.result(timeout=10).event_id or "" for f in futures]


def test_dispatch_by_type_commit_and_skips(
    stack: Any, make_topic: Any, producer: EventProducer, unique: str
) -> None:
    topic = make_topic("dispatch", partitions=2)
    activity(producer, topic, ["a", "b"])
    producer.publish("devconnect.user.login", {"userId": "u7"}, topic=topic).result(10)
    producer.publish("devconnect.user.logout", {"userId": "u7"}, topic=topic).result(10)
    producer.publish_raw(topic, b"written by a check", headers=[(CHECK_HEADER, b"1")]).result(10)
    seen: list[tuple[str, str]] = []
    rt = runtime(stack, topic, f"g-{unique}", partitions=2, idempotency=False)
    rt.on(ACTIVITY, lambda e: seen.append(("activity", e.data["action"])))
    rt.on("devconnect.user.login", lambda e, ctx: seen.append(("login", ctx.topic)))
    counters = rt.run(install_signals=False, until_idle=1.0)
    assert sorted(seen) == [("activity", "a"), ("activity", "b"), ("login", topic)]
    assert (counters.processed, counters.ignored, counters.skipped) == (3, 1, 1)
    assert counters.dead_lettered == 0
    ends = end_offsets(stack.endpoints, stack.settings, [(topic, 0), (topic, 1)])
    # A partition the keys left empty has nothing to commit (murmur2 may put all on one).
    assert committed(stack, f"g-{unique}", topic, 2) == {
        p: ends[(topic, p)].high or -1001 for p in (0, 1)
    }


def test_invalid_records_go_to_the_dead_letter_topic_with_reasons(
    stack: Any, make_topic: Any, producer: EventProducer, unique: str
) -> None:
    topic = make_topic("dlq", partitions=1, dead_letter=True)
    producer.publish_raw(topic, b"{broken", key=b"k1", headers=[("trace", b"t1")]).result(10)
    producer.publish_raw(
        topic,
        b'{"specversion": "1.0", "id": "x1", "source": "s", "type": "devconnect.user.gone", "data": {}}',
    ).result(10)
    producer.publish_raw(
        topic,
        b'{"specversion": "1.0", "id": "x2", "source": "s", "type": "devconnect.user.login", "data": {"nope": 1}}',
    ).result(10)
    activity(producer, topic, ["fine"])
    handled: list[str] = []
    group = f"g-{unique}"
    rt = runtime(stack, topic, group, idempotency=False)
    rt.on(ACTIVITY, lambda e: handled.append(e.data["action"]))
    counters = rt.run(install_signals=False, until_idle=1.0)
    assert handled == ["fine"] and counters.dead_lettered == 3
    letters = dead_letters(stack, topic)
    reasons = [dict(m.headers())["dlq-reason"] for m in letters]
    assert reasons == [b"invalid-envelope", b"unknown-type", b"invalid-data"]
    assert {r.decode() for r in reasons} <= set(DLQ_REASONS)
    first = dict(letters[0].headers())
    assert letters[0].value() == b"{broken" and letters[0].key() == b"k1"
    assert first["trace"] == b"t1"  # original headers kept
    assert first["dlq-topic"] == topic.encode() and first["dlq-partition"] == b"0"
    assert first["dlq-offset"] == b"0" and first["dlq-group"] == group.encode()
    assert first["dlq-attempts"] == b"0" and b"not JSON" in first["dlq-error"]
    assert b"nope" in dict(letters[2].headers())["dlq-error"]
    assert committed(stack, group, topic) == {0: 4}  # moved on past every record


def test_retries_with_backoff_then_dead_letters(
    stack: Any, make_topic: Any, producer: EventProducer, unique: str
) -> None:
    topic = make_topic("retry", partitions=1, dead_letter=True)
    activity(producer, topic, ["flaky", "broken", "refused", "after"])
    attempts: dict[str, int] = {}

    def handle(event: Event, ctx: HandlerContext) -> None:
        action = event.data["action"]
        attempts[action] = attempts.get(action, 0) + 1
        assert ctx.attempt == attempts[action] - 1
        if action == "flaky" and attempts[action] < 3:
            raise ConnectionError("transient")
        if action == "broken":
            raise ValueError("always")
        if action == "refused":
            raise PermanentError("cannot ever work")

    rt = runtime(
        stack,
        topic,
        f"g-{unique}",
        idempotency=False,
        max_retries=3,
        backoff_ms=40,
        backoff_max_ms=80,
    )
    rt.on(ACTIVITY, handle)
    started = time.monotonic()
    counters = rt.run(install_signals=False, until_idle=1.0)
    assert attempts == {"flaky": 3, "broken": 4, "refused": 1, "after": 1}
    assert counters.processed == 2 and counters.retried == 2 + 3 and counters.dead_lettered == 2
    # flaky waited 40 + 80 ms, broken 40 + 80 + 80 ms (capped).
    assert time.monotonic() - started >= 0.32
    letters = {
        dict(m.headers())["dlq-reason"]: dict(m.headers()) for m in dead_letters(stack, topic)
    }
    assert letters[b"retries-exhausted"]["dlq-attempts"] == b"4"
    assert letters[b"retries-exhausted"]["dlq-error-type"] == b"ValueError"
    assert letters[b"handler-rejected"]["dlq-attempts"] == b"1"


def test_batch_handler_isolates_a_poisonous_event(
    stack: Any, make_topic: Any, producer: EventProducer, scratch: Any, unique: str
) -> None:
    client, _prefix = scratch
    topic = make_topic("batch", partitions=1, dead_letter=True)
    with EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 100}) as batched:
        ids = activity(
            batched,
            topic,
            [f"ok{i}" for i in range(4)] + ["poison"] + [f"ok{i}" for i in range(4, 8)],
        )
    sizes: list[int] = []
    effects = f"effects:{unique}"

    def handle(events: list[Event], ctx: HandlerContext) -> None:
        sizes.append(len(events))
        if any(e.data["action"] == "poison" for e in events):
            raise ValueError("poison in the batch")
        for event in events:
            ctx.tx.rpush(effects, event.id)

    rt = runtime(stack, topic, f"g-{unique}", redis_client=client, max_retries=1)
    rt.on(ACTIVITY, handle, batch=True)
    counters = rt.run(install_signals=False, until_idle=1.0)
    assert max(sizes) > 1  # events really came in batches
    assert client.lrange(effects, 0, -1) == [i for i in ids if i != ids[4]]  # each once, in order
    assert counters.dead_lettered == 1 and counters.processed == 8
    (letter,) = dead_letters(stack, topic)
    assert json.loads(letter.value())["id"] == ids[4]


def test_a_wildcard_batch_handler_gets_mixed_types_and_typed_routes_stay_apart(
    stack: Any, make_topic: Any, unique: str
) -> None:
    from devctl.events.consumer import ANY_TYPE

    topic = make_topic("mixed", partitions=1)
    with EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 100}) as batched:
        futures = []
        for i in range(6):
            futures.append(
                batched.publish(ACTIVITY, {"userId": "u1", "action": f"a{i}"}, topic=topic)
            )
            futures.append(
                batched.publish("devconnect.user.login", {"userId": f"u{i}"}, topic=topic)
            )
        futures.append(batched.publish("devconnect.user.logout", {"userId": "u9"}, topic=topic))
        for future in futures:
            future.result(timeout=10)
    wildcard: list[list[str]] = []
    logouts: list[list[str]] = []
    rt = runtime(stack, topic, f"g-{unique}", idempotency=False)
    rt.on(ANY_TYPE, lambda events: wildcard.append([e.type for e in events]), batch=True)
    rt.on(
        "devconnect.user.logout",
        lambda events: logouts.append([e.type for e in events]),
        batch=True,
    )
    counters = rt.run(install_signals=False, until_idle=1.0)
    assert counters.processed == 13
    assert sum(len(unit) for unit in wildcard) == 12
    assert max(len(set(unit)) for unit in wildcard) == 2  # both types in one unit
    assert logouts == [["devconnect.user.logout"]]


def test_idempotency_guard_skips_redelivered_events(
    stack: Any, make_topic: Any, producer: EventProducer, scratch: Any, unique: str
) -> None:
    client, _prefix = scratch
    topic = make_topic("guard", partitions=1)
    ids = activity(producer, topic, [f"e{i}" for i in range(6)])
    effects = f"effects:{unique}"
    group = f"g-{unique}"

    def run(guard: bool) -> Any:
        rt = runtime(
            stack, topic, group, redis_client=client, idempotency=guard, idempotency_ttl=120
        )
        rt.on(ACTIVITY, lambda e, ctx: ctx.tx.rpush(effects, e.id))
        return rt.run(install_signals=False, until_idle=1.0)

    def rewind() -> None:
        consumer = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id=group))
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
        consumer.close()

    first = run(guard=True)
    assert first.processed == 6 and client.lrange(effects, 0, -1) == ids
    marker = KeySchema(stack.settings.redis.key_prefix).idempotency(group, ids[0])
    assert client.get(marker) == "1" and 110 < client.ttl(marker) <= 120
    rewind()
    second = run(guard=True)
    assert (second.processed, second.duplicates) == (0, 6)
    assert client.llen(effects) == 6  # no second effect
    rewind()
    unguarded = run(guard=False)
    assert unguarded.processed == 6 and client.llen(effects) == 12  # what the guard prevents
    client.delete(*[KeySchema(stack.settings.redis.key_prefix).idempotency(group, i) for i in ids])


def test_tx_effects_lose_a_race_instead_of_doubling(
    stack: Any, make_topic: Any, producer: EventProducer, scratch: Any, unique: str
) -> None:
    """Another consumer marks the event while our handler runs: our queued effect is dropped."""
    client, _prefix = scratch
    topic = make_topic("race", partitions=1)
    (event_id,) = activity(producer, topic, ["once"])
    group = f"g-{unique}"
    marker = KeySchema(stack.settings.redis.key_prefix).idempotency(group, event_id)

    def handle(event: Event, ctx: HandlerContext) -> None:
        ctx.tx.incr(f"effects:{unique}")
        client.set(marker, "1", ex=60)  # the other consumer finishes first

    rt = runtime(stack, topic, group, redis_client=client)
    rt.on(ACTIVITY, handle)
    counters = rt.run(install_signals=False, until_idle=1.0)
    assert client.get(f"effects:{unique}") is None
    assert counters.duplicates == 1 and counters.processed == 0
    assert committed(stack, group, topic) == {0: 1}
    client.delete(marker)


def test_redis_down_stalls_without_committing_or_dead_lettering(
    stack: Any, make_topic: Any, producer: EventProducer, scratch: Any, unique: str
) -> None:
    client, _prefix = scratch
    topic = make_topic("stall", partitions=1, dead_letter=True)
    ids = activity(producer, topic, ["x", "y"])
    group = f"g-{unique}"
    down = redis.Redis(
        host="127.0.0.1",
        port=free_port(),  # nothing listens there
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    stalled = runtime(stack, topic, group, redis_client=down, backoff_ms=50, backoff_max_ms=100)
    stalled.on(ACTIVITY, lambda e: None)
    threading.Timer(1.5, stalled.stop).start()
    counters = stalled.run(install_signals=False)
    assert counters.stalls >= 2 and counters.processed == 0 and counters.dead_lettered == 0
    assert committed(stack, group, topic)[0] < 0  # nothing committed
    healthy = runtime(stack, topic, group, redis_client=client)
    handled: list[str] = []
    healthy.on(ACTIVITY, lambda e: handled.append(e.id))
    assert healthy.run(install_signals=False, until_idle=1.0).processed == 2
    assert handled == ids and not dead_letters(stack, topic)
    client.delete(*[KeySchema(stack.settings.redis.key_prefix).idempotency(group, i) for i in ids])


def test_lag_counter_uses_true_end_offsets(stack: Any, make_topic: Any, unique: str) -> None:
    topic = make_topic("lag", partitions=1)
    with EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 100}) as batched:
        activity(batched, topic, [f"l{i}" for i in range(12)])  # one multi-record batch
    seen: list[int | None] = []
    rt = runtime(stack, topic, f"g-{unique}", idempotency=False, batch_size=1)

    def handle(event: Event) -> None:
        if event.data["action"] == "l4":
            seen.append(rt.refresh_lag())
            rt.stop()

    rt.on(ACTIVITY, handle)
    rt.run(install_signals=False, until_idle=2.0)
    assert seen == [7]  # 12 records, position 5 after the 5th


@pytest.mark.slow
def test_killed_consumer_restarts_without_loss_or_double_effect(
    stack: Any, make_topic: Any, scratch: Any, unique: str
) -> None:
    client, _prefix = scratch
    topic = make_topic("crash", partitions=3, dead_letter=True)
    group = f"crash-{unique}"
    effects = f"effects:{unique}"
    with EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 50}) as batched:
        ids = activity(batched, topic, [f"c{i}" for i in range(240)])
    env = {**stack.env, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs: list[subprocess.Popen[str]] = []

    def start(*extra: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), group, topic, effects, *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    try:
        first = start("--block-at", "100")
        deadline = time.monotonic() + 60
        while not client.get(f"{effects}:blocked") and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert client.llen(effects) == 100
        before = committed(stack, group, topic, 3)
        assert sum(max(o, 0) for o in before.values()) < 100  # handled events not yet committed

        second = start()
        deadline = time.monotonic() + 90
        while client.llen(effects) < 240 and time.monotonic() < deadline:
            assert second.poll() is None, second.stderr.read() if second.stderr else ""
            time.sleep(0.1)
        time.sleep(0.5)  # a double effect would show up now
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=20)
        assert second.returncode == 0, err
        counters = json.loads(out.strip().splitlines()[-1])
        # SIGTERM: the batch was finished and committed, and the member left the group.
        state = GroupAdmin(stack.endpoints, stack.settings).describe(group)
        assert state.state == "EMPTY" and state.lag == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    done = client.lrange(effects, 0, -1)
    assert len(done) == 240 and set(done) == set(ids)  # every event's effect, exactly once
    assert counters["processed"] == 140
    assert counters["duplicates"] >= 1  # redelivered after the kill, absorbed by the guard
    GroupAdmin(stack.endpoints, stack.settings).delete(group)
    client.delete(*[KeySchema(stack.settings.redis.key_prefix).idempotency(group, i) for i in ids])


def _send_in_one_batch(stack: Any, topic: str, events: list[Any]) -> None:
    """Publish encoded events (repeats allowed) so that one poll returns them all."""
    with EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 100}) as batched:
        futures = [batched.publish_encoded(e, topic=topic) for e in events]
        for future in futures:
            future.result(timeout=10)


def test_a_unit_with_one_event_marked_elsewhere_handles_the_rest(
    stack: Any, make_topic: Any, producer: EventProducer, scratch: Any, unique: str
) -> None:
    """Another consumer marks X between our MGET and WATCH: only X is a duplicate, Y is handled."""
    client, _prefix = scratch
    topic = make_topic("partial", partitions=1)
    z = producer.encode("devconnect.user.login", {"userId": "u1"})
    y, x = (producer.encode(ACTIVITY, {"userId": "u1", "action": a}) for a in ("y", "x"))
    _send_in_one_batch(stack, topic, [z, y, x])
    group = f"g-{unique}"
    keys = KeySchema(stack.settings.redis.key_prefix)
    effects = f"effects:{unique}"

    def login(event: Event) -> None:  # the other consumer finishes X meanwhile
        client.set(keys.idempotency(group, x.id), "1", ex=60)

    def handle(events: list[Event], ctx: HandlerContext) -> None:
        for event in events:
            ctx.tx.rpush(effects, event.data["action"])

    rt = runtime(stack, topic, group, redis_client=client)
    rt.on("devconnect.user.login", login)
    rt.on(ACTIVITY, handle, batch=True)
    counters = rt.run(install_signals=False, until_idle=0.5)
    assert counters.batches == 1  # the three came in one poll
    assert client.lrange(effects, 0, -1) == ["y"]
    assert (counters.processed, counters.duplicates) == (2, 1)
    assert client.get(keys.idempotency(group, y.id)) == "1"
    assert committed(stack, group, topic) == {0: 3}


def test_a_marker_set_during_a_batch_handler_drops_only_that_event(
    stack: Any, make_topic: Any, producer: EventProducer, scratch: Any, unique: str
) -> None:
    client, _prefix = scratch
    topic = make_topic("watch", partitions=1)
    y, x = (producer.encode(ACTIVITY, {"userId": "u1", "action": a}) for a in ("y", "x"))
    _send_in_one_batch(stack, topic, [y, x])
    group = f"g-{unique}"
    keys = KeySchema(stack.settings.redis.key_prefix)
    effects = f"effects:{unique}"
    calls: list[list[str]] = []

    def handle(events: list[Event], ctx: HandlerContext) -> None:
        calls.append([e.data["action"] for e in events])
        for event in events:
            ctx.tx.rpush(effects, event.data["action"])
        if len(calls) == 1:  # the other consumer commits X while we run: WATCH fires
            client.set(keys.idempotency(group, x.id), "1", ex=60)

    rt = runtime(stack, topic, group, redis_client=client)
    rt.on(ACTIVITY, handle, batch=True)
    counters = rt.run(install_signals=False, until_idle=0.5)
    assert calls == [["y", "x"], ["y"]]
    assert client.lrange(effects, 0, -1) == ["y"]
    assert (counters.processed, counters.duplicates) == (1, 1)


def test_repeated_event_ids_in_one_poll_are_handled_once(
    stack: Any, make_topic: Any, producer: EventProducer, scratch: Any, unique: str
) -> None:
    client, _prefix = scratch
    topic = make_topic("repeat", partitions=1)
    dup = producer.encode(ACTIVITY, {"userId": "u1", "action": "dup"})
    _send_in_one_batch(stack, topic, [dup, dup, dup])
    seen: list[str] = []
    rt = runtime(stack, topic, f"g1-{unique}", redis_client=client)
    rt.on(ACTIVITY, lambda e: seen.append(e.id))
    counters = rt.run(install_signals=False, until_idle=0.5)
    assert counters.batches == 1
    assert seen == [dup.id] and (counters.processed, counters.duplicates) == (1, 2)

    topic = make_topic("repeat-tx", partitions=1)
    x, y = (producer.encode(ACTIVITY, {"userId": "u1", "action": a}) for a in ("x", "y"))
    _send_in_one_batch(stack, topic, [x, y, x])
    effects = f"effects:{unique}"

    def handle(events: list[Event], ctx: HandlerContext) -> None:
        for event in events:
            ctx.tx.rpush(effects, event.data["action"])

    rt = runtime(stack, topic, f"g2-{unique}", redis_client=client)
    rt.on(ACTIVITY, handle, batch=True)
    counters = rt.run(install_signals=False, until_idle=0.5)
    assert counters.batches == 1
    assert client.lrange(effects, 0, -1) == ["x", "y"]
    assert (counters.processed, counters.duplicates) == (2, 1)


def _run_bounded(rt: ConsumerRuntime, limit: float, **kwargs: Any) -> Any:
    """Run in a thread, stopped after ``limit`` seconds if it has not ended by itself."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(rt.run(install_signals=False, **kwargs)))
    thread.start()
    thread.join(limit)
    rt.stop()
    thread.join(30)
    assert not thread.is_alive()
    return out[0]


@pytest.mark.slow
def test_stopping_during_the_first_join_leaves_the_group_usable(
    stack: Any, make_topic: Any, producer: EventProducer, unique: str
) -> None:
    """Tansu breaks a group whose member leaves mid-join; the runtime finishes the join first."""
    topic = make_topic("join", partitions=2)
    activity(producer, topic, [f"j{i}" for i in range(4)])
    group = f"g-{unique}"

    def member() -> ConsumerRuntime:
        rt = ConsumerRuntime(
            stack.endpoints, stack.settings, group=group, topics=[topic], idempotency=False,
            lag_interval=0,
        )  # fmt: skip
        rt.on(ACTIVITY, lambda e: None)
        return rt

    early = _run_bounded(member(), 1.5)  # stopped during its first join (~3 s on Tansu)
    assert early.processed == 0
    # until_idle shorter than the join: the idle clock starts at the assignment.
    later = _run_bounded(member(), 20, until_idle=1.0)
    assert later.processed == 4
    GroupAdmin(stack.endpoints, stack.settings).delete(group)


def test_redis_out_of_memory_stalls_instead_of_failing_the_handler(
    stack: Any, make_topic: Any, producer: EventProducer, scratch: Any, unique: str
) -> None:
    """OOM on the marker SET (or the tx) is a Redis outage: no retries, no dead letter."""
    client, _prefix = scratch
    topic = make_topic("oom", partitions=1, dead_letter=True)
    ids = activity(producer, topic, ["x"])
    group = f"g-{unique}"
    effects = f"effects:{unique}"
    previous = client.config_get("maxmemory")["maxmemory"]
    plain = runtime(stack, topic, group, redis_client=client, backoff_ms=50, backoff_max_ms=100)
    plain.on(ACTIVITY, lambda e: None)  # handled; then its marker SET is refused
    tx = runtime(
        stack, topic, f"{group}-tx", redis_client=client, backoff_ms=50, backoff_max_ms=100
    )
    tx.on(ACTIVITY, lambda e, ctx: ctx.tx.rpush(effects, e.id))
    try:
        client.config_set("maxmemory", "1")  # below what is in use: every write is refused
        for rt in (plain, tx):
            threading.Timer(0.6, rt.stop).start()
            counters = rt.run(install_signals=False)
            assert counters.stalls >= 1 and counters.dead_lettered == 0, counters
            assert counters.retried == 0
    finally:
        client.config_set("maxmemory", previous)
    # The tx's effect and marker were refused together: nothing committed, nothing applied.
    assert committed(stack, f"{group}-tx", topic)[0] < 0 and client.llen(effects) == 0
    assert not dead_letters(stack, topic)
    healthy = runtime(stack, topic, f"{group}-tx", redis_client=client)
    healthy.on(ACTIVITY, lambda e, ctx: ctx.tx.rpush(effects, e.id))
    assert healthy.run(install_signals=False, until_idle=1.0).processed == 1
    assert client.lrange(effects, 0, -1) == ids
