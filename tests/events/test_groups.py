"""`devctl groups` and its domain: lag from true end offsets, reset plans, refusal with members."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from devctl.clients.kafka_client import consumer_conf, producer_conf
from devctl.streams.groups import GroupAdmin
from tests.conftest import interrupt, running


def batch(stack: Any, topic: str, partition: int, count: int) -> None:
    """``count`` records in one multi-record batch (the broker under-reports its end after it)."""
    producer = Producer(producer_conf(stack.endpoints, stack.settings, **{"linger.ms": 200}))
    for index in range(count):
        producer.produce(topic, value=b"r%d" % index, partition=partition)
    assert producer.flush(10) == 0


def commit(stack: Any, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id=group))
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


@pytest.fixture
def lagging(stack: Any, make_topic: Any, unique: str) -> Any:
    topic = make_topic("groups")
    group = f"grp-{unique}"
    batch(stack, topic, 0, 10)
    batch(stack, topic, 2, 5)
    commit(stack, group, {(topic, 0): 4, (topic, 2): 5})
    admin = GroupAdmin(stack.endpoints, stack.settings)
    yield topic, group, admin
    admin.delete(group)


def test_describe_and_lag(lagging: Any, devctl: Any) -> None:
    topic, group, admin = lagging
    described = admin.describe(group)
    assert described.state == "EMPTY" and described.members == []
    rows = {p.partition: (p.committed, p.end, p.lag) for p in described.partitions}
    # A caught-up partition shows 0; one never committed counts what it holds (here nothing).
    assert rows == {0: (4, 10, 6), 1: (None, 0, 0), 2: (5, 5, 0)}
    assert described.lag == 6
    result = devctl("groups", "describe", group, "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["lag"] == 6
    assert [(p["partition"], p["lag"]) for p in shown["partitions"]] == [(0, 6), (1, 0), (2, 0)]
    lag = json.loads(devctl("groups", "lag", group, "--json").stdout)
    assert lag == [{"group": group, "topic": topic, "partitions": 3, "lag": 6, "uncommitted": 1}]
    listed = json.loads(devctl("groups", "list", "--json").stdout)
    assert {"group": group, "state": "EMPTY", "members": 0} in listed
    every = json.loads(devctl("groups", "lag", "--json").stdout)
    assert {"group": group, "topic": topic, "partitions": 3, "lag": 6, "uncommitted": 1} in every
    table = devctl("groups", "lag", group)
    assert group in table.stdout and " 6 " in table.stdout


def test_reset_is_a_dry_run_unless_executed(lagging: Any, devctl: Any) -> None:
    topic, group, admin = lagging
    dry = devctl("groups", "reset", group, "--topic", topic, "--to", "earliest", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["executed"] is False
    assert [(r["partition"], r["current"], r["target"]) for r in plan["partitions"]] == [
        (0, 4, 0),
        (1, None, 0),
        (2, 5, 0),
    ]
    assert admin.committed(group) == {(topic, 0): 4, (topic, 2): 5}  # untouched

    latest = devctl(
        "groups", "reset", group, "--topic", topic, "--to", "latest", "--execute", "--yes"
    )
    assert latest.returncode == 0, latest.stderr
    assert admin.committed(group) == {(topic, 0): 10, (topic, 1): 0, (topic, 2): 5}
    assert admin.describe(group).lag == 0

    two = devctl(
        "groups", "reset", group, "--topic", topic, "--to", "2", "--execute", "--yes", "--json"
    )
    rows = {r["partition"]: r for r in json.loads(two.stdout)["partitions"]}
    assert {p: r["target"] for p, r in rows.items()} == {0: 2, 1: 0, 2: 2}
    assert "clamped" in rows[1]["note"]
    assert admin.committed(group)[(topic, 0)] == 2


def test_reset_to_a_time(stack: Any, lagging: Any, devctl: Any) -> None:
    topic, group, admin = lagging
    time.sleep(1.1)
    cut = datetime.now(UTC).isoformat()
    time.sleep(0.1)
    batch(stack, topic, 0, 3)  # offsets 10, 11, 12 come after the cut
    result = devctl("groups", "reset", group, "--topic", topic, "--to", cut, "--execute", "--yes")
    assert result.returncode == 0, result.stderr
    assert admin.committed(group) == {(topic, 0): 10, (topic, 1): 0, (topic, 2): 5}
    bogus = devctl("groups", "reset", group, "--topic", topic, "--to", "yesterday-ish")
    assert bogus.returncode == 2 and "--to: the reset target is earliest" in bogus.stderr


@pytest.mark.slow
def test_reset_refuses_while_the_group_has_members(stack: Any, lagging: Any, devctl: Any) -> None:
    topic, group, admin = lagging
    member = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id=group))
    assigned: list[Any] = []
    member.subscribe([topic], on_assign=lambda _c, parts: assigned.extend(parts))
    try:
        deadline = time.monotonic() + 30
        while not assigned and time.monotonic() < deadline:
            member.poll(0.1)
        assert assigned, "the member never joined"
        refused = devctl(
            "groups", "reset", group, "--topic", topic, "--to", "earliest", "--execute", "--yes"
        )
        assert refused.returncode == 1
        assert "offsets can only be reset while it is empty" in refused.stderr
        dry = devctl("groups", "reset", group, "--topic", topic, "--to", "earliest")
        assert dry.returncode == 0 and "--execute would refuse" in dry.stderr
        assert admin.describe(group).active
    finally:
        member.close()  # leaves the group at once
    assert admin.committed(group)[(topic, 0)] == 4
    after = devctl(
        "groups", "reset", group, "--topic", topic, "--to", "earliest", "--execute", "--yes"
    )
    assert after.returncode == 0, after.stderr


def test_lag_watch_refreshes_until_ctrl_c(stack: Any, lagging: Any) -> None:
    _topic, group, _admin = lagging
    proc = subprocess.Popen(
        [sys.executable, "-m", "devctl", "groups", "lag", group, "--watch", "--interval", "0.2"],
        env={**stack.env, "COLUMNS": "200", "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with running(proc):
        time.sleep(2.5)
        out, err = interrupt(proc, timeout=10)
    assert proc.returncode == 0, err
    assert out.count("lag at ") >= 2  # refreshed at least once
    assert group in out and "Traceback" not in err


def test_unknown_group(devctl: Any, unique: str) -> None:
    result = devctl("groups", "describe", f"never-{unique}")
    assert result.returncode == 1 and "does not exist" in result.stderr


@pytest.mark.slow
def test_a_broker_that_does_not_answer_is_exit_3_not_no_groups(tmp_path: Any) -> None:
    """kill -STOP on a broker of this test's own: list and lag must not say 'no groups'."""
    import os

    from devctl.engines.local import LocalEngine
    from devctl.engines.processes import read_pidfile
    from tests.conftest import stack_settings

    settings = stack_settings(tmp_path / "data", tmp_path, **{"local.stop_timeout": 0.5})
    engine = LocalEngine(settings)
    record = None
    try:
        engine.up()
        record = read_pidfile(engine.pidfile("kafka"))
        assert record is not None
        os.kill(record.pid, signal.SIGSTOP)
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))
        }
        env.update(
            DEVCTL_DATA_DIR=str(tmp_path / "data"),
            DEVCTL_REDIS_PORT=str(settings.redis.port),
            DEVCTL_KAFKA_PORT=str(settings.kafka.port),
            DEVCTL_KAFKA_REQUEST_TIMEOUT_MS="1000",
            NO_COLOR="1",
        )
        for command in (["groups", "list"], ["groups", "lag"]):
            result = subprocess.run(
                [sys.executable, "-m", "devctl", *command],
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert result.returncode == 3, (command, result.stdout, result.stderr)
            assert "did not answer" in result.stderr
            assert "no consumer groups" not in result.stdout
    finally:
        if record is not None:
            os.kill(record.pid, signal.SIGCONT)
        engine.down()


def test_reset_refuses_an_unknown_group_and_asks_first(
    lagging: Any, devctl: Any, unique: str
) -> None:
    topic, group, admin = lagging
    typo = f"typo-{unique}"
    refused = devctl(
        "groups", "reset", typo, "--topic", topic, "--to", "earliest", "--execute", "--yes"
    )
    assert refused.returncode == 1 and "does not exist" in refused.stderr
    assert admin.committed(typo) == {}  # not created
    before = admin.committed(group)
    unasked = devctl("groups", "reset", group, "--topic", topic, "--to", "earliest", "--execute")
    assert unasked.returncode == 2 and "--yes" in unasked.stderr
    assert admin.committed(group) == before


def test_one_group_the_broker_cannot_describe_does_not_hide_the_others(
    stack: Any, make_topic: Any, unique: str
) -> None:
    """Tansu lists a group named with `[`, `\\` or non-ASCII percent-encoded, and then
    cannot find it under that name: lag over all groups leaves it out and says so."""
    from confluent_kafka import Consumer, TopicPartition

    from devctl.clients.kafka_client import consumer_conf

    topic = make_topic("oddgroup", partitions=1)
    odd, plain = f"g[red]宽\\{unique}", f"plain-{unique}"
    for group in (odd, plain):
        consumer = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id=group))
        try:
            consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
        finally:
            consumer.close()
    admin = GroupAdmin(stack.endpoints, stack.settings)
    skipped: list[str] = []
    try:
        rows = admin.lag(skipped=skipped)
        assert plain in {row.group for row in rows}
        listed = {g.group for g in admin.summaries()}
        assert all(name in listed for name in skipped)
    finally:
        for group in (odd, plain):
            with contextlib.suppress(Exception):
                admin.delete(group)
