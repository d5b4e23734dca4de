"""`devctl stats`: the analytics as tables and JSON, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devctl.cli.commands.stats import BLOCKS, sparkline
from devctl.engines.processes import free_port
from devctl.errors import EXIT_NOT_RUNNING, EXIT_USAGE
from devctl.state.analytics import DAY, HOUR, Activity, Analytics, period_start
from devctl.state.keys import KeySchema


def test_sparkline_scales_to_the_peak_and_keeps_zero_blank() -> None:
    assert sparkline([0, 1, 2, 4, 8]) == " " + BLOCKS[1] + BLOCKS[2] + BLOCKS[4] + BLOCKS[7]
    assert sparkline([0, 0, 0]) == "   "
    assert sparkline([5]) == BLOCKS[-1]
    assert sparkline([1] * 120, width=60) == BLOCKS[-1] * 60  # pairs summed: 60 marks
    assert len(sparkline(list(range(1440)))) == 60


@pytest.fixture
def counted(stack: Any, unique: str) -> Iterator[tuple[dict[str, str], float]]:
    """Counters under a key prefix of this test, written by the analytics domain (as the
    consumer writes them); the environment that points `devctl stats` at them."""
    client = stack.redis()
    prefix = f"st{unique}:"
    # Two minutes ago at the latest, and never across midnight: the rows below are exact.
    now = max(time.time() - 120, period_start("d", time.time()) + 60)
    events = [Activity("devconnect.user.signup", now, u, {"userId": u}) for u in ("ann", "bob")]
    events += [
        Activity("devconnect.message.sent", now, "ann", {"fromUserId": "ann", "toUserId": "bob"})
        for _ in range(5)
    ]
    events.append(Activity("devconnect.user.login", now - DAY, "cy", {"userId": "cy"}))
    Analytics(client, KeySchema(prefix)).record(events)
    env = {**stack.env, "DEVCTL_REDIS_KEY_PREFIX": prefix, "COLUMNS": "200"}
    try:
        yield env, now
    finally:
        found = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if found:
            client.delete(*found)
        client.close()


def stats(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devctl", "stats", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_piped_tables_are_plain(counted: tuple[dict[str, str], float]) -> None:
    env, now = counted
    result = stats(env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b" not in out  # no ANSI codes in a pipe
    lines = out.splitlines()
    assert lines[0].startswith("events, last 1h (UTC ") and "one mark per minute" in lines[0]
    assert lines[1].split() == ["TYPE", "TOTAL", "PEAK", "PER", "MINUTE", "ACTIVITY"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:5]}
    assert rows["message.sent"][:2] == ["5", "5"] and rows["message.sent"][2] == BLOCKS[-1]
    assert rows["user.signup"][:2] == ["2", "2"]
    assert rows["all"][:2] == ["7", "7"]
    assert "user.login" not in rows  # a day ago: outside the window
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(now - DAY))
    assert f"{today} (today)  2    2" in out  # DAU ann and bob; 2 signups
    assert f"{yesterday}          1    0" in out  # cy logged in
    assert f"active users (MAU {today[:7]}: " in out
    top = out[out.index("top users by messages (of 3)") :].splitlines()[1:]
    assert [line.split() for line in top] == [
        ["USER", "MESSAGES", "SENT", "MESSAGES", "RECEIVED", "LOGINS"],
        ["ann", "5", "0", "0"],
        ["bob", "0", "5", "0"],
        ["cy", "0", "0", "1"],
    ]


def test_a_terminal_gets_rich_tables(counted: tuple[dict[str, str], float]) -> None:
    env, _now = counted
    result = stats({**env, "TTY_COMPATIBLE": "1"}, "--since", "15m")
    assert result.returncode == 0, result.stderr
    assert "┏" in result.stdout and "message.sent" in result.stdout
    assert BLOCKS[-1] in result.stdout


def test_json_has_the_documented_shape(counted: tuple[dict[str, str], float]) -> None:
    env, now = counted
    result = stats(env, "--json", "--since", "6h", "--top", "1")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["window"] == "6h" and doc["window_seconds"] == 6 * HOUR
    assert doc["granularity"] == "minute" and doc["bucket_seconds"] == 60
    assert len(doc["buckets"]) == 360 == len(doc["per_bucket"])
    assert doc["total"] == 7 and sum(doc["per_bucket"]) == 7
    assert doc["types"]["devconnect.message.sent"]["total"] == 5
    assert len(doc["types"]["devconnect.message.sent"]["counts"]) == 360
    assert [d["users"] for d in doc["dau"]][-2:] == [1, 2] and doc["dau_today"] == 2
    assert doc["signups"][-1] == {"day": time.strftime("%Y-%m-%d", time.gmtime(now)), "count": 2}
    assert doc["mau"]["users"] >= 2
    (top,) = doc["top_users"]
    assert top["user_id"] == "ann" and top["messages_sent"] == 5 and top["logins"] == 0

    week = json.loads(stats(env, "--json", "--since", "7d").stdout)
    assert week["granularity"] == "hour" and len(week["buckets"]) == 168
    assert week["types"]["devconnect.user.login"]["total"] == 1


@pytest.mark.parametrize("since", ["2x", "0m", "90d", "1h30m"])
def test_a_bad_window_is_a_usage_error_with_a_hint(
    counted: tuple[dict[str, str], float], since: str
) -> None:
    env, _now = counted
    result = stats(env, "--since", since)
    assert result.returncode == EXIT_USAGE
    assert f"error: --since: '{since}'" in result.stderr
    assert "hint: e.g. --since 15m, --since 1h" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_redis_down_is_exit_3_in_one_line(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))}
    env.update(
        DEVCTL_ENGINE="external",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        KAFKA_BROKERS="127.0.0.1:1",
        DEVCTL_DATA_DIR=str(tmp_path / "data"),
    )
    result = stats(env)
    assert result.returncode == EXIT_NOT_RUNNING, result.stderr
    assert result.stderr.startswith("error: Redis is not reachable")
    assert "Traceback" not in result.stderr and result.stdout == ""
    as_json = stats(env, "--json")
    assert as_json.returncode == EXIT_NOT_RUNNING
    assert json.loads(as_json.stderr)["error"]["code"] == "redis-unavailable"
