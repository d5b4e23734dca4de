"""A hung server never hangs `devctl test`: every check and clean-up has a deadline, and a
server that did not answer skips the checks that need it (issue 9, task 1)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from devctl.checks import Check, CheckContext, run_checks
from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import make_admin
from devctl.config.loader import Settings, load_settings
from devctl.engines.local import LocalEngine
from devctl.errors import EXIT_NOT_RUNNING, RedisUnavailable
from devctl.events.consumer import ConsumerRuntime
from devctl.events.producer import EventProducer


def _stack_of(cwd: Path) -> tuple[Settings, Endpoints]:
    """Settings and endpoints for checks that never reach a server."""
    settings = load_settings(cwd=cwd, environ={})
    return settings, Endpoints(
        "local", "redis://127.0.0.1:1/0", "127.0.0.1:1", caps=LocalEngine.caps
    )


def test_a_hung_check_is_abandoned_at_its_deadline_and_clean_ups_still_run(tmp_path: Path) -> None:
    settings, endpoints = _stack_of(tmp_path)
    release = threading.Event()
    cleaned: list[str] = []

    def hangs(ctx: CheckContext) -> None:
        ctx.defer(lambda: cleaned.append("hangs"))
        release.wait(60)

    def passes(ctx: CheckContext) -> str:
        ctx.defer(lambda: cleaned.append("passes"))
        return "ok"

    def cleanup_hangs(ctx: CheckContext) -> None:
        ctx.defer(lambda: release.wait(60))

    checks = [
        Check("g", "hangs", hangs),
        Check("g", "passes", passes),
        Check("g", "its clean-up hangs", cleanup_hangs),
    ]
    started = time.monotonic()
    try:
        report = run_checks(settings, endpoints, checks=checks, deadline=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 10
    assert [r.status for r in report.results] == ["fail", "pass", "pass"]
    assert "no result within 0.5s" in report.results[0].reason
    assert sorted(cleaned) == ["hangs", "passes"]
    assert (
        len(report.cleanup_problems) == 1
        and "no answer within 0.5s" in (report.cleanup_problems[0])
    )


def test_a_hung_gate_makes_its_group_and_server_unreachable(tmp_path: Path) -> None:
    settings, endpoints = _stack_of(tmp_path)
    release = threading.Event()
    ran: list[str] = []
    checks = [
        Check("redis", "gate", lambda ctx: release.wait(60), gate=True),
        Check("redis", "after", lambda ctx: ran.append("redis")),
        Check("state", "gate", lambda ctx: ran.append("state"), gate=True),
        Check("kafka", "gate", lambda ctx: ran.append("kafka"), gate=True),
    ]
    try:
        report = run_checks(settings, endpoints, checks=checks, deadline=0.5)
    finally:
        release.set()
    assert [r.status for r in report.results] == ["fail", "skip", "skip", "pass"]
    assert report.results[2].reason == "needs redis, not reachable"
    assert ran == ["kafka"]
    assert list(report.unreachable) == ["redis"]


def test_a_check_touching_a_server_known_down_is_skipped_at_once(tmp_path: Path) -> None:
    settings, endpoints = _stack_of(tmp_path)

    def redis_gate(ctx: CheckContext) -> None:
        raise RedisUnavailable("Redis at redis://127.0.0.1:1/0 is not reachable")

    def uses_redis(ctx: CheckContext) -> None:
        ctx.redis.get("x")

    checks = [
        Check("redis", "connection", redis_gate, gate=True),
        Check("events", "needs kafka only", lambda ctx: "fine"),
        Check("events", "also needs redis", uses_redis),
    ]
    report = run_checks(settings, endpoints, checks=checks, deadline=5)
    assert [(r.status, r.reason) for r in report.results[1:]] == [
        ("pass", "fine"),
        ("skip", "needs redis, not reachable"),
    ]


def test_a_stalled_consumer_gives_up_after_its_stall_limit(stack, private_redis, unique) -> None:  # type: ignore[no-untyped-def]
    topic = f"stall-{unique}"
    admin = make_admin(stack.endpoints, stack.settings)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)
    producer = EventProducer(stack.endpoints, stack.settings)
    client = private_redis.client(stack.settings.cwd)
    try:
        producer.publish(
            "devconnect.analytics.activity", {"userId": unique, "action": "x"}, topic=topic
        ).result(timeout=10)
        private_redis.pause()  # the idempotency guard gets no answer
        runtime = ConsumerRuntime(
            stack.endpoints,
            stack.settings,
            group=f"stall-{unique}",
            partitions=[(topic, 0)],
            redis_client=client,
            lag_interval=0,
            stall_limit=1.0,
        )
        runtime.on("devconnect.analytics.activity", lambda event: None)
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match=r"stalled for .*limit 1s.*idempotency guard"):
            runtime.run(install_signals=False, until_idle=30)
        assert time.monotonic() - started < 20  # the guard's timeouts plus the limit, not for ever
        assert runtime.counters.stalls >= 1 and runtime.counters.processed == 0
    finally:
        private_redis.kill()
        client.close()
        producer.close(5)
        admin.delete_topics([topic])[topic].result(timeout=10)


def test_devctl_test_with_redis_hung_exits_3_with_a_summary(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up").returncode == 0
    redis_pid = cli.pids()["redis"]
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = cli.run("test", timeout=120)
        took = time.monotonic() - started
        # A generous bound: it ended by itself, well before the subprocess timeout.
        assert took < 60, (took, result.stdout, result.stderr)
        assert result.returncode == EXIT_NOT_RUNNING, (result.stdout, result.stderr)
        assert "FAIL redis    connection" in result.stdout
        assert "SKIP state" in result.stdout
        assert " passed, " in result.stdout and " skipped in " in result.stdout
        assert "redis not reachable" in result.stderr
        assert "stalled, retrying" not in result.stderr
        as_json = cli.run("test", "--json", timeout=120)
        assert as_json.returncode == EXIT_NOT_RUNNING
        document = json.loads(as_json.stdout)
        assert list(document["unreachable"]) == ["redis"]
        statuses = {c["name"]: c["status"] for c in document["checks"]}
        assert statuses["consumer restart: no loss, no duplicate effect"] == "skip"
        # A consumer given the client but not the guard never needs Redis: it still runs.
        assert statuses["invalid event routed to the dead-letter topic"] == "pass"
    finally:
        os.kill(redis_pid, signal.SIGCONT)
