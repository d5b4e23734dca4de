"""A server that stops answering at any point of `devctl test` (hung or dead, at the start
or mid-run) skips the checks that need it, lets the others run, and makes the run exit 3
naming it (defects: a Kafka hang mid-run made the next Kafka checks wait their own
timeouts; a Redis hang mid-run gave exit 1; a killed server gave exit 3 with no table)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devctl.checks import Check, CheckContext, CheckFailed, run_checks
from devctl.clients.endpoints import Endpoints
from devctl.config.loader import load_settings
from devctl.engines.local import LocalEngine
from devctl.errors import EXIT_NOT_RUNNING


def test_a_server_hung_mid_run_is_probed_after_a_failure_and_its_checks_skipped(
    private_redis: Any, tmp_path: Path
) -> None:
    settings = load_settings(cwd=tmp_path, environ={})
    endpoints = Endpoints("external", private_redis.url, "127.0.0.1:1")
    ran: list[str] = []

    def gate(ctx: CheckContext) -> None:
        ctx.redis.ping()

    def hang_then_fail(ctx: CheckContext) -> None:
        private_redis.pause()
        # A failure no error type ties to Redis: a timeout of the check's own making.
        raise TimeoutError

    checks = [
        Check("redis", "connection", gate, gate=True),
        Check("redis", "hangs", hang_then_fail),
        Check("redis", "after", lambda ctx: ran.append("redis")),
        Check("state", "state after", lambda ctx: ran.append("state")),
        Check("other", "needs no server", lambda ctx: ran.append("other")),
    ]
    started = time.monotonic()
    report = run_checks(settings, endpoints, checks=checks, deadline=20)
    assert time.monotonic() - started < 30  # one probe's timeouts, not one per check
    assert [r.status for r in report.results] == ["pass", "fail", "skip", "skip", "pass"]
    assert report.results[1].reason == "TimeoutError: no answer in time (redis stopped answering)"
    assert ran == ["other"]
    assert list(report.down) == ["redis"] and not report.ok


def test_a_plain_failure_with_the_servers_answering_marks_nothing_down(
    private_redis: Any, tmp_path: Path
) -> None:
    settings = load_settings(cwd=tmp_path, environ={})
    endpoints = Endpoints("external", private_redis.url, "127.0.0.1:1")

    def fails(ctx: CheckContext) -> None:
        raise CheckFailed("expected 2, got 3")

    checks = [Check("redis", "fails", fails), Check("redis", "after", lambda ctx: "ran")]
    report = run_checks(settings, endpoints, checks=checks, deadline=20)
    assert [(r.status, r.reason) for r in report.results] == [
        ("fail", "expected 2, got 3"),
        ("pass", "ran"),
    ]
    assert report.down == {}


def test_clean_up_problems_say_what_was_left_behind(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, environ={})
    endpoints = Endpoints("local", "redis://127.0.0.1:1/0", "127.0.0.1:1", caps=LocalEngine.caps)

    def defers(ctx: CheckContext) -> None:
        ctx.defer(lambda: 1 / 0)
        ctx.defer(lambda: 1 / 0, what="topic t-1")

    report = run_checks(settings, endpoints, checks=[Check("g", "mine", defers)], deadline=5)
    assert not any("<lambda>" in p for p in report.cleanup_problems)
    [named, anonymous] = report.cleanup_problems
    assert named.startswith("topic t-1: ZeroDivisionError")
    assert anonymous.startswith("a clean-up of check 'mine': ZeroDivisionError")
    assert all(
        p.endswith(f"left behind under run id {_run_id(p)}") for p in report.cleanup_problems
    )


def _run_id(problem: str) -> str:
    return problem.rsplit(" ", 1)[-1]


def test_devctl_test_with_redis_killed_runs_the_kafka_checks_and_exits_3(cli: Any) -> None:
    assert cli.run("up").returncode == 0
    os.kill(cli.pids()["redis"], signal.SIGKILL)
    result = cli.run("test", "--json", timeout=120)
    assert result.returncode == EXIT_NOT_RUNNING, (result.stdout, result.stderr)
    document = json.loads(result.stdout)
    statuses = {(c["group"], c["name"]): c["status"] for c in document["checks"]}
    assert statuses[("kafka", "produce -> consume on every topic")] == "pass"
    assert {s for (g, _), s in statuses.items() if g in ("redis", "state")} == {"skip"}
    assert list(document["down"]) == ["redis"]
    text = cli.run("test", "--group", "redis", "--group", "kafka", timeout=120)
    assert text.returncode == EXIT_NOT_RUNNING
    assert "PASS kafka    metadata" in text.stdout and "SKIP redis" in text.stdout
    assert " passed, " in text.stdout and " skipped in " in text.stdout
    assert "redis: not running" in text.stderr and "hint: redis did not answer" in text.stderr
    # Only the servers the chosen checks use count.
    assert cli.run("test", "--group", "kafka", timeout=120).returncode == 0


def test_devctl_test_with_kafka_hung_mid_run_skips_the_rest_and_exits_3(cli: Any) -> None:
    assert cli.run("up").returncode == 0
    kafka = cli.pids()["kafka"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "devctl", "test"],
        cwd=cli.cwd,
        env={**cli.env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    stopped = False
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if "kafka    leftovers" in line:  # hang it just before the round trip
                os.kill(kafka, signal.SIGSTOP)
                stopped = True
                started = time.monotonic()
                break
        assert stopped, lines
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - started
    finally:
        if stopped:
            os.kill(kafka, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stdout = "".join(lines) + out
    assert proc.returncode == EXIT_NOT_RUNNING, (stdout, err)
    assert "FAIL kafka    produce -> consume" in stdout and "kafka stopped answering" in stdout
    assert "SKIP kafka    consumer group commit and resume" in stdout
    assert "SKIP events" in stdout and "PASS state" in stdout
    assert " skipped in " in stdout and "hint: kafka did not answer" in err
    assert "TimeoutError: \n" not in stdout
    assert took < 90, (took, stdout, err)  # generous: it ended by itself
