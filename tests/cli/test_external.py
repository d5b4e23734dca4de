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


def test_half_a_stack_is_not_running(cli, stack) -> None:  # type: ignore[no-untyped-def]
    # Another broker answers on the configured port: devctl must not test that one instead.
    other_port = stack.endpoints.kafka_brokers.rsplit(":", 1)[1]
    assert cli.run("up", "--kafka-port", "0").returncode == 0
    psutil.Process(cli.pids()["kafka"]).kill()
    result = cli.run("test", "--json", DEVCTL_KAFKA_PORT=other_port)
    assert result.returncode == EXIT_NOT_RUNNING
    report = json.loads(result.stdout)
    # Redis is tested; nothing that needs Kafka runs (not against the other broker either).
    assert report["ok"] is False and report["down"] == {"kafka": "not running"}
    by_group: dict[str, set[str]] = {}
    for check in report["checks"]:
        by_group.setdefault(check["group"], set()).add(check["status"])
    assert by_group["redis"] == {"pass"}
    assert by_group["kafka"] == by_group["events"] == {"skip"}
    assert "devctl up" in result.stderr
    status = cli.run("status", "--json")
    services = {s["service"]: s for s in json.loads(status.stdout)}
    assert services["redis"]["health"] == "ok" and services["kafka"]["health"] == "stopped"
    assert "stale pidfile" in services["kafka"]["detail"]
    assert status.returncode == 1  # partly healthy
    up = cli.run("up")  # brings the dead one back, keeps the live one
    assert up.returncode == 0 and "started kafka" in up.stdout
    assert "stale kafka pidfile" in up.stderr


def test_switching_engines_while_local_runs_is_refused(cli, stack) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up").returncode == 0
    env = {"REDIS_URL": stack.endpoints.redis_url, "KAFKA_BROKERS": stack.endpoints.kafka_brokers}
    result = cli.run("up", "--engine", "external", **env)
    assert result.returncode == EXIT_USAGE
    assert "a local stack is running" in result.stderr and "devctl down" in result.stderr


def test_external_endpoints_are_remembered_and_redacted(cli, stack) -> None:  # type: ignore[no-untyped-def]
    import os
    import stat

    port = stack.endpoints.redis_url.rsplit(":", 1)[1].split("/")[0]
    # Valkey without a password accepts AUTH-less connections; a URL with a
    # password must still never be shown.
    url = f"redis://default:p@ss w/rd@127.0.0.1:{port}/0"
    up = cli.run(
        "up", "--engine", "external", REDIS_URL=url, KAFKA_BROKERS=stack.endpoints.kafka_brokers
    )
    # The server has no password, so AUTH fails: still, nothing may leak.
    assert "p@ss" not in up.stdout + up.stderr and "w/rd" not in up.stdout + up.stderr
    good = stack.endpoints.redis_url
    up = cli.run(
        "up", "--engine", "external", REDIS_URL=good, KAFKA_BROKERS=stack.endpoints.kafka_brokers
    )
    assert up.returncode == 0, up.stderr
    stack_file = cli.data_dir / "stack.json"
    assert stat.S_IMODE(os.stat(stack_file).st_mode) == 0o600
    # A new shell without the variables: the recorded endpoints are used.
    status = cli.run("status", "--json")
    assert status.returncode == 0, status.stderr
    assert {s["engine"] for s in json.loads(status.stdout)} == {"external"}
    assert cli.run("test", "--group", "redis").returncode == 0
    down = cli.run("down", "--purge")  # nothing to purge: no confirmation needed
    assert down.returncode == 0 and "leaves them running" in down.stdout
