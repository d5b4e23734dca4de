"""up / status / test / down as a user runs them, with the failure cases."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import psutil

from devctl.engines.processes import PidRecord, write_pidfile
from devctl.errors import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_USAGE
from tests.conftest import interrupt, running


def test_up_test_down_leaves_nothing_behind(cli) -> None:  # type: ignore[no-untyped-def]
    first = cli.run("up", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["started"] == ["redis", "kafka"]
    assert report["endpoints"]["REDIS_URL"] == f"redis://127.0.0.1:{cli.env['DEVCTL_REDIS_PORT']}/0"
    assert report["endpoints"]["KAFKA_BROKERS"] == f"127.0.0.1:{cli.env['DEVCTL_KAFKA_PORT']}"
    assert len(report["topics_created"]) == 10

    pids = cli.pids()
    assert set(pids) == {"redis", "kafka"}
    for pid in pids.values():
        proc = psutil.Process(pid)
        # Detached: alive after the CLI exited, in a session of its own.
        assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        assert os.getsid(pid) == pid

    second = cli.run("up", "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["started"] == [] and again["already_running"] == ["redis", "kafka"]
    assert again["endpoints"] == report["endpoints"]
    assert again["topics_created"] == []
    assert cli.pids() == pids

    status = cli.run("status", "--json")
    assert status.returncode == 0, status.stderr
    services = {s["service"]: s for s in json.loads(status.stdout)}
    assert services["redis"]["health"] == "ok" and services["kafka"]["health"] == "ok"
    assert services["redis"]["pid"] == pids["redis"]
    assert services["redis"]["version"].startswith("valkey ")
    assert services["kafka"]["latency_ms"] > 0

    checks = cli.run("test", "--json", "--junit", "report.xml")
    assert checks.returncode == 0, checks.stdout + checks.stderr
    result = json.loads(checks.stdout)
    assert result["ok"] is True
    names = {c["name"] for c in result["checks"]}
    assert {"connection", "pub/sub round trip", "produce -> consume on every topic"} <= names
    assert all(c["status"] == "pass" for c in result["checks"])
    junit = (cli.cwd / "report.xml").read_text()
    assert "<testsuite" in junit and 'failures="0"' in junit

    down = cli.run("down")
    assert down.returncode == 0, down.stderr
    assert "redis: stopped" in down.stdout and "kafka: stopped" in down.stdout
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert cli.pids() == {}

    after = cli.run("status")
    assert after.returncode == EXIT_NOT_RUNNING
    unreachable = cli.run("test")
    assert unreachable.returncode == EXIT_NOT_RUNNING
    assert "devctl up" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_redis_data_survives_down_and_up(cli) -> None:  # type: ignore[no-untyped-def]
    import redis

    assert cli.run("up").returncode == 0
    url = f"redis://127.0.0.1:{cli.env['DEVCTL_REDIS_PORT']}/0"
    client = redis.Redis.from_url(url)
    client.set("devconnect:survivor", "yes")
    client.close()
    assert cli.run("down").returncode == 0
    assert cli.run("up").returncode == 0
    client = redis.Redis.from_url(url)
    assert client.get("devconnect:survivor") == b"yes"
    client.close()


def test_taken_port_names_port_process_and_flag(cli) -> None:  # type: ignore[no-untyped-def]
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    try:
        result = cli.run("up", "--redis-port", str(port))
        assert result.returncode == EXIT_USAGE
        assert f"port {port} for redis is already in use" in result.stderr
        assert f"pid {os.getpid()}" in result.stderr  # the squatter is this test process
        assert "--redis-port" in result.stderr
        assert "Traceback" not in result.stderr
        assert cli.pids() == {}  # nothing was started
    finally:
        squatter.close()


def test_stale_pidfile_is_cleaned_and_never_kills_a_stranger(cli) -> None:  # type: ignore[no-untyped-def]
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        # A pidfile naming a live process that is not ours (pid reused after a reboot).
        write_pidfile(
            cli.data_dir / "run" / "redis.pid",
            PidRecord(
                stranger.pid,
                time.time() - 3600,
                "/usr/bin/valkey-server",
                int(cli.env["DEVCTL_REDIS_PORT"]),
                "x",
                [],
            ),
        )
        # And one naming a process that no longer exists.
        write_pidfile(
            cli.data_dir / "run" / "kafka.pid",
            PidRecord(2**22 + 7, 0.0, "/usr/bin/tansu", int(cli.env["DEVCTL_KAFKA_PORT"]), "x", []),
        )
        up = cli.run("up")
        assert up.returncode == 0, up.stderr
        assert "stale redis pidfile" in up.stderr and "stale kafka pidfile" in up.stderr
        assert cli.pids()["redis"] != stranger.pid
        assert cli.run("down").returncode == 0
        assert stranger.poll() is None, "down must not signal a process it did not start"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_service_that_fails_to_start(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken-broker"
    broken.write_text("#!/bin/sh\necho 'fatal: cannot open storage' >&2\nexit 3\n")
    broken.chmod(0o755)
    result = cli.run("up", DEVCTL_KAFKA_BROKER=str(broken))
    assert result.returncode == EXIT_FAILED
    assert "kafka exited during start-up" in result.stderr
    assert "fatal: cannot open storage" in result.stderr  # the log's last lines
    assert cli.pids() == {}  # redis was stopped again

    kept = cli.run("up", "--keep", DEVCTL_KAFKA_BROKER=str(broken))
    assert kept.returncode == EXIT_FAILED
    assert set(cli.pids()) == {"redis"}


def test_missing_binary_is_a_usage_error(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli.run("up", DEVCTL_REDIS_SERVER="/nonexistent/valkey-server")
    assert result.returncode == EXIT_USAGE
    assert "/nonexistent/valkey-server" in result.stderr and "DEVCTL_REDIS_SERVER" in result.stderr


def test_bad_config_file_message_and_exit_code(cli) -> None:  # type: ignore[no-untyped-def]
    (cli.cwd / "devctl.yaml").write_text("redis:\n  port: 6379\n  timeout: 5\n")
    result = cli.run("up")
    assert result.returncode == EXIT_USAGE
    assert f"{cli.cwd / 'devctl.yaml'}:3" in result.stderr
    assert "redis.timeout" in result.stderr and "unknown key" in result.stderr
    assert "Traceback" not in result.stderr
    validate = cli.run("config", "validate")
    assert validate.returncode == EXIT_USAGE


def test_purge_needs_confirmation(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up").returncode == 0
    refused = cli.run("down", "--purge")
    assert refused.returncode == EXIT_USAGE and "--yes" in refused.stderr
    assert cli.data_dir.exists()
    assert set(cli.pids()) == {"redis", "kafka"}  # refusing stopped nothing
    done = cli.run("down", "--purge", "--yes")
    assert done.returncode == 0
    assert not (cli.data_dir / "redis").exists()


def test_logs_show_the_servers_output(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up").returncode == 0
    logs = cli.run("logs", "kafka", "-n", "3")
    assert logs.returncode == 0
    assert 0 < len(logs.stdout.splitlines()) <= 3
    assert "tansu" in cli.run("logs", "kafka", "-n", "50").stdout
    bad = cli.run("logs", "zookeeper")
    assert bad.returncode == EXIT_USAGE and "zookeeper" in bad.stderr and "kafka" in bad.stderr


def test_servers_listen_on_loopback_only(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up").returncode == 0
    for service, pid in cli.pids().items():
        listening = [
            c.laddr for c in psutil.Process(pid).net_connections() if c.status == psutil.CONN_LISTEN
        ]
        assert listening, f"{service} listens nowhere"
        assert {addr.ip for addr in listening} == {"127.0.0.1"}, f"{service}: {listening}"


def test_logs_follow_stops_cleanly_on_ctrl_c(cli) -> None:  # type: ignore[no-untyped-def]
    import sys

    assert cli.run("up").returncode == 0
    follower = subprocess.Popen(
        [sys.executable, "-m", "devctl", "logs", "redis", "-f", "-n", "2"],
        cwd=cli.cwd,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with running(follower):
        time.sleep(1.5)
        out, err = interrupt(follower, timeout=10)
    assert follower.returncode == 0, err
    assert len(out.splitlines()) >= 1
    assert "Traceback" not in err


def test_shell_completion_script(cli) -> None:  # type: ignore[no-untyped-def]
    # Typer's own switch: the shell is the option's value, not detected from the
    # process tree (which holds no shell when pytest runs detached, e.g. under nohup).
    result = cli.run("--show-completion", "bash", _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert result.returncode == 0
    assert "complete" in result.stdout and "devctl" in result.stdout


def test_concurrent_ups_start_one_stack(cli) -> None:  # type: ignore[no-untyped-def]
    import sys

    # Six, as the report had it: all succeed (they once shared one write-probe file).
    ups = [
        subprocess.Popen(
            [sys.executable, "-m", "devctl", "up", "--json"],
            cwd=cli.cwd,
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    reports = []
    for proc in ups:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    assert sorted(len(r["started"]) for r in reports) == [0, 0, 0, 0, 0, 2]
    assert len({json.dumps(r["endpoints"]) for r in reports}) == 1
    servers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(cli.env["DEVCTL_KAFKA_PORT"] in part for part in (p.info["cmdline"] or []))
    ]
    assert len(servers) == 1


def test_password_with_spaces_and_newlines_is_quoted(cli) -> None:  # type: ignore[no-untyped-def]
    import redis

    password = 'a b"c\nport 1'
    up = cli.run("up", "--json", DEVCTL_REDIS_PASSWORD=password)
    assert up.returncode == 0, up.stderr
    url = json.loads(up.stdout)["endpoints"]["REDIS_URL"]
    assert "a b" not in up.stdout and "********" in url
    port = int(cli.env["DEVCTL_REDIS_PORT"])
    anonymous = redis.Redis(port=port)
    try:
        anonymous.ping()
        raise AssertionError("Redis accepted a client without the password")
    except redis.AuthenticationError:
        pass
    finally:
        anonymous.close()
    authed = redis.Redis(port=port, password=password)
    assert authed.ping() is True
    authed.close()
    # Later commands connect through the recorded endpoints, without the variable.
    assert cli.run("test", "--group", "redis").returncode == 0
    status = cli.run("status")
    assert "a b" not in status.stdout


def test_up_checks_health_of_a_running_service(cli) -> None:  # type: ignore[no-untyped-def]
    import signal

    (cli.cwd / "devctl.yaml").write_text("local:\n  start_timeout: 2\n")
    assert cli.run("up").returncode == 0
    redis_pid = cli.pids()["redis"]
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        result = cli.run("up")
        assert result.returncode == EXIT_FAILED
        assert f"redis (pid {redis_pid}) did not become healthy" in result.stderr
        assert "devctl down && devctl up" in result.stderr
        assert cli.pids()["redis"] == redis_pid  # not stopped: this up did not start it
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    assert cli.run("up").returncode == 0


def test_failure_log_shows_this_run_only_with_exit_status(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up").returncode == 0
    assert cli.run("down").returncode == 0
    broken = tmp_path / "broken-broker"
    broken.write_text("#!/bin/sh\necho 'this run failed' >&2\nexit 7\n")
    broken.chmod(0o755)
    result = cli.run("up", DEVCTL_KAFKA_BROKER=str(broken))
    assert result.returncode == EXIT_FAILED
    assert "kafka exited during start-up (exit code 7)" in result.stderr
    assert "this run failed" in result.stderr
    assert "listening on" not in result.stderr  # the earlier, healthy run's lines


def test_up_fails_when_config_topics_cannot_be_applied(cli) -> None:  # type: ignore[no-untyped-def]
    (cli.cwd / "devctl.yaml").write_text(
        "topics:\n  - name: grow\n    partitions: 1\n    dead_letter: false\n"
    )
    assert cli.run("up").returncode == 0
    (cli.cwd / "devctl.yaml").write_text(
        "topics:\n  - name: grow\n    partitions: 2\n    dead_letter: false\n"
    )
    result = cli.run("up")
    assert result.returncode == EXIT_FAILED
    assert "topic grow: unsupported" in result.stderr and "CreatePartitions" in result.stderr


def test_bad_paths_are_usage_errors(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    down = cli.run("down", "--data-dir", str(a_file))
    assert down.returncode == EXIT_USAGE and "is a file" in down.stderr
    assert cli.run("up").returncode == 0
    junit = cli.run("test", "--junit", str(tmp_path))
    assert junit.returncode == EXIT_USAGE and "--junit" in junit.stderr
    group = cli.run("test", "--group", "nope")
    assert group.returncode == EXIT_USAGE and "unknown check group" in group.stderr
    port = cli.run("up", "--redis-port", "70000")
    assert port.returncode == EXIT_USAGE and "at most 65535" in port.stderr
    assert "Traceback" not in down.stderr + junit.stderr + group.stderr + port.stderr
