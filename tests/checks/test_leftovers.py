"""`devctl test` cleans up after runs that could not: SIGTERM cleans up like Ctrl-C, and
what a SIGKILLed run left behind is removed by the next run once it is old enough."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from devctl.checks import LEFTOVER_AGE, is_leftover, new_run_id
from devctl.clients.kafka_client import consumer_conf, make_admin, producer_conf
from devctl.state.keys import KeySchema
from tests.conftest import running


def test_run_ids_carry_their_start_and_age_into_leftovers() -> None:
    now = 1_800_000_000.0
    fresh = new_run_id(now)
    assert (
        fresh.startswith(f"devctl-test-{int(now):08x}-") and len(fresh) == len("devctl-test-") + 17
    )
    assert not is_leftover(f"{fresh}-group", now + LEFTOVER_AGE - 1)
    assert is_leftover(f"{fresh}-group", now + LEFTOVER_AGE)
    assert is_leftover(f"devconnect:{{u:{fresh}-alice}}:user", now + LEFTOVER_AGE)
    assert not is_leftover(f"{new_run_id(now + 60)}-group", now)  # a clock slightly ahead
    # Ids of older devctl versions have no time: only such a version's runs use them.
    assert is_leftover(f"devctl-test-{secrets.token_hex(6)}-dlq.dlq", now)
    for name in ("user-events", "devctl-test-", "devctl-test-xyz", "my-devctl-test-topic"):
        assert not is_leftover(name, now)


def _make(stack: Any, run_id: str) -> tuple[list[str], str, list[str], str]:
    """What a run of ``run_id`` killed half-way leaves: topics, a group with a committed
    offset, keys of CheckContext.key and the state checks, a registered instance."""
    admin = make_admin(stack.endpoints, stack.settings)
    topics = [f"{run_id}-group", f"{run_id}-dlq", f"{run_id}-dlq.dlq"]
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        future.result(timeout=10)
    producer = Producer(producer_conf(stack.endpoints, stack.settings))
    producer.produce(topics[0], value=b"record-0", partition=0)
    assert producer.flush(10) == 0
    group = f"{run_id}-group"
    consumer = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id=group))
    try:
        consumer.commit(offsets=[TopicPartition(topics[0], 0, 1)], asynchronous=False)
    finally:
        consumer.close()
    keys = KeySchema(stack.settings.redis.key_prefix)
    client = stack.redis()
    made = [
        f"{keys.prefix}{run_id}:effects",
        keys.user(f"{run_id}-alice"),
        keys.idempotency(f"{run_id}-restart", "0190a0a0-0000-7000-8000-000000000000"),
    ]
    for key in made:
        client.set(key, "x")
    instance = f"{run_id}-a"
    client.hset(keys.instance_registry(), instance, int(time.time()))
    client.close()
    return topics, group, made, instance


def _present(
    stack: Any, topics: list[str], group: str, keys: list[str], instance: str
) -> dict[str, bool]:
    admin = make_admin(stack.endpoints, stack.settings)
    listed = admin.list_topics(timeout=10).topics
    groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid}
    client = stack.redis()
    registry = KeySchema(stack.settings.redis.key_prefix).instance_registry()
    try:
        return {
            **{f"topic {t}": t in listed for t in topics},
            f"group {group}": group in groups,
            **{f"key {k}": bool(client.exists(k)) for k in keys},
            f"instance {instance}": bool(client.hexists(registry, instance)),
        }
    finally:
        client.close()


def _remove(stack: Any, topics: list[str], group: str, keys: list[str], instance: str) -> None:
    admin = make_admin(stack.endpoints, stack.settings)
    admin.delete_consumer_groups([group])[group].result(timeout=10)
    for future in admin.delete_topics(topics).values():
        future.result(timeout=10)
    client = stack.redis()
    client.delete(*keys)
    client.hdel(KeySchema(stack.settings.redis.key_prefix).instance_registry(), instance)
    client.close()


def test_a_run_removes_leftovers_of_killed_runs_but_not_a_live_runs(stack: Any) -> None:
    now = time.time()
    killed = _make(stack, new_run_id(now - LEFTOVER_AGE - 60))
    legacy = _make(stack, f"devctl-test-{secrets.token_hex(6)}")  # an older devctl's run
    live = _make(stack, new_run_id(now - 30))  # a run going on beside ours
    try:
        assert all(_present(stack, *killed).values()) and all(_present(stack, *legacy).values())
        result = subprocess.run(
            [sys.executable, "-m", "devctl", "test", "--json", "-g", "redis", "-g", "kafka"],
            capture_output=True,
            text=True,
            env=stack.env,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        notes = {(c["group"], c["name"]): c["reason"] for c in json.loads(result.stdout)["checks"]}
        # At least these two runs' (a long test session may hold older ones too).
        assert notes[("kafka", "leftovers of interrupted runs removed")].startswith("removed ")
        assert notes[("redis", "leftovers of interrupted runs removed")].startswith("removed ")
        assert not any(_present(stack, *killed).values()), _present(stack, *killed)
        assert not any(_present(stack, *legacy).values()), _present(stack, *legacy)
        assert all(_present(stack, *live).values()), _present(stack, *live)
    finally:
        _remove(stack, *live)


def test_sigterm_mid_run_cleans_up_like_ctrl_c(stack: Any) -> None:
    admin = make_admin(stack.endpoints, stack.settings)
    before = {t for t in admin.list_topics(timeout=10).topics if t.startswith("devctl-test-")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devctl", "test"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**stack.env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
    )
    with running(proc):
        assert proc.stdout is not None
        for line in proc.stdout:
            # Its topic and group stay until the run's clean-up at the very end.
            if "consumer group commit and resume" in line:
                break
        else:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        mine = {
            t for t in admin.list_topics(timeout=10).topics if t.startswith("devctl-test-")
        } - before
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated (cleaned up)" in err and "Traceback" not in err
    [topic] = [t for t in mine if t.endswith("-group")]
    run_id = topic.removesuffix("-group")
    assert not [t for t in admin.list_topics(timeout=10).topics if run_id in t]
    groups = admin.list_consumer_groups().result(timeout=10).valid
    assert not [g.group_id for g in groups if run_id in g.group_id]
    client = stack.redis()
    assert not list(client.scan_iter(match=f"*{run_id}*"))
    assert not [
        i
        for i in client.hkeys(KeySchema(stack.settings.redis.key_prefix).instance_registry())
        if run_id in i
    ]
    client.close()
