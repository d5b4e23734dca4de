"""The realtime group of `devctl test` on real servers: two API instances of its own (and
the notifications consumer), a running serve with two instances; what it leaves behind
(no check user, no key of the run in Redis, no process)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from devctl.processes import free_port
from tests.checks.test_api_checks import keys, processes_of, sqlite_count
from tests.cli.conftest import Cli
from tests.conftest import Stack

GROUP = [
    "two API instances with Socket.IO ready",
    "check users A and B connected, on different instances",
    "presence: B coming online seen once by A",
    "a message crosses the instances both ways",
    "a spoofed fromUserId is ignored",
    "a notification arrives live over Socket.IO",
]


def devctl_test(env: dict[str, str], *args: str, timeout: float = 120) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "devctl", "test", "--json", "-g", "realtime", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def checks_of(result: Any) -> dict[str, dict[str, Any]]:
    document = json.loads(result.stdout)
    return {c["name"]: c for c in document["checks"] if c["group"] == "realtime"}


def assert_all_passed(result: Any) -> dict[str, dict[str, Any]]:
    assert result.returncode == 0, result.stdout + result.stderr
    checks = checks_of(result)
    assert list(checks) == GROUP
    assert {c["status"] for c in checks.values()} == {"pass"}, checks
    document = json.loads(result.stdout)
    assert document["cleanup_problems"] == [] and document["ok"] is True
    return checks


def test_two_instances_of_its_own_pass_and_leave_nothing_behind(stack: Stack) -> None:
    before = keys(stack)
    result = devctl_test(stack.env)
    checks = assert_all_passed(result)
    assert checks["two API instances with Socket.IO ready"]["reason"].startswith(
        "two own instances"
    )
    assert checks["check users A and B connected, on different instances"]["reason"] != ""
    a_url, b_url = (
        checks["check users A and B connected, on different instances"]["reason"]
        .removeprefix("A on ")
        .split(", B on ")
    )
    assert a_url != b_url  # really two instances
    note = checks["a notification arrives live over Socket.IO"]["reason"]
    assert note.startswith("C's request reached B's socket"), note
    run_id = json.loads(result.stdout).get("run_id") or ""
    assert not run_id or processes_of(run_id) == []
    assert not [p for p in processes_of("devctl-test-") if "-rt" in p or "notifications" in p]
    # Sessions, cache entries, buckets, notifications, conversation of the check users:
    # all gone. What the consumers keep of events stays, each with its expiry: their
    # idempotency markers, the analytics counters, and the notifications the check's
    # consumer made of OTHER tests' events on this shared stack (a group new to the
    # stack starts at the earliest offsets).
    client = stack.redis()
    try:
        left = keys(stack) - before
        kept = {k for k in left if ":idem:" in k or "{an}" in k or ":notifications" in k}
        assert left - kept == set(), left - kept
        assert all(client.ttl(k) > 0 for k in kept)
    finally:
        client.close()


def test_a_running_serve_with_two_instances_is_the_target(cli: Cli) -> None:
    port = free_port()
    serve = cli.run("serve", "--detach", "--port", str(port), "--instances", "2", timeout=120)
    assert serve.returncode == 0, serve.stdout + serve.stderr
    result = cli.run("test", "--json", "-g", "realtime", timeout=120)
    checks = assert_all_passed(result)
    gate = checks["two API instances with Socket.IO ready"]["reason"]
    assert gate == "api-1 and api-2 of the running serve", gate
    assert sqlite_count(cli.data_dir / "devconnect.db") == 0
