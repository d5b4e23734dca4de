"""The external engine against servers devctl did not start (the shared stack plays them)."""

from __future__ import annotations

import json

import psutil

from devctl.engines.processes import free_port
from devctl.errors import EXIT_NOT_RUNNING, EXIT_USAGE


def test_external_up_status_test_down(cli, stack) -> None:  # type: ignore[no-untyped-def]
    env = {"REDIS_URL": stack.endpoints.redis_url, "KAFKA_BROKERS": stack.endpoints.kafka_brokers}
    up = cli.run("up", "--engine", "external", "--json", **env)
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout)
    assert report["engine"] == "external" and report["started"] == []
    assert report["endpoints"]["KAFKA_BROKERS"] == stack.endpoints.kafka_brokers

    # Later commands find the external engine through the data dir, without --engine.
    status = cli.run("status", "--json", **env)
    assert status.returncode == 0, status.stderr
    assert {s["engine"] for s in json.loads(status.stdout)} == {"external"}
    assert all(s["health"] == "ok" for s in json.loads(status.stdout))

    checks = cli.run("test", "--group", "redis", **env)
    assert checks.returncode == 0, checks.stdout

    down = cli.run("down", **env)
    assert down.returncode == 0
    assert "leaves them running" in down.stdout
    pid = stack.engine.service_info("redis")["pid"]
    assert psutil.pid_exists(pid), "down on the external engine must not stop anything"
    assert cli.pids() == {}


def test_external_without_endpoints_is_a_config_error(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli.run("up", "--engine", "external")
    assert result.returncode == EXIT_USAGE
    assert "REDIS_URL and KAFKA_BROKERS" in result.stderr


def test_external_unreachable_exits_3(cli) -> None:  # type: ignore[no-untyped-def]
    dead = free_port()
    result = cli.run(
        "up",
        "--engine",
        "external",
        REDIS_URL=f"redis://127.0.0.1:{dead}/0",
        KAFKA_BROKERS=f"127.0.0.1:{dead}",
        DEVCTL_REDIS_CONNECT_TIMEOUT="0.5",
        DEVCTL_KAFKA_REQUEST_TIMEOUT_MS="1000",
    )
    assert result.returncode == EXIT_NOT_RUNNING
    assert f"127.0.0.1:{dead}" in result.stderr and "not reachable" in result.stderr


def test_half_a_stack_fails_its_group_and_exits_3(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up").returncode == 0
    psutil.Process(cli.pids()["kafka"]).kill()
    result = cli.run("test", "--json", DEVCTL_KAFKA_REQUEST_TIMEOUT_MS="1000")
    assert result.returncode == EXIT_NOT_RUNNING
    checks = json.loads(result.stdout)["checks"]
    assert {c["status"] for c in checks if c["group"] == "redis"} == {"pass"}
    kafka = [c for c in checks if c["group"] == "kafka"]
    assert kafka[0]["status"] == "fail" and all(c["status"] == "skip" for c in kafka[1:])
    status = cli.run("status", "--json")
    health = {s["service"]: s["health"] for s in json.loads(status.stdout)}
    assert health == {"redis": "ok", "kafka": "stopped"}
    up = cli.run("up")  # brings the dead one back, keeps the live one
    assert up.returncode == 0 and "started kafka" in up.stdout
