"""Faults a hostile tester found: dead servers, wrappers, read-only dirs, crashes, races."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from devctl.engines.local import find_binary
from devctl.engines.processes import free_port, port_is_free
from devctl.errors import EXIT_NOT_RUNNING


def _kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _redis_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_a_dead_server_only_breaks_the_commands_that_need_it(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up").returncode == 0
    _kill9(cli.pids()["redis"])
    kafka_commands = [
        ("topics", "list"),
        ("publish", "user-events", "--type", "devconnect.user.login", "--data", '{"userId": "u1"}'),
        ("tail", "user-events", "--from-beginning", "--no-follow", "--output", "json"),
        ("groups", "list"),
    ]
    for args in kafka_commands:
        result = cli.run(*args)
        assert result.returncode == 0, (args, result.stderr)
    redis_only = cli.run("sessions", "count")
    assert redis_only.returncode == EXIT_NOT_RUNNING
    assert "redis" in redis_only.stderr.lower() and "kafka" not in redis_only.stderr.lower()
    # --enrich reads Redis: it fails, and says it is Redis that is down.
    enrich = cli.run("tail", "user-events", "--from-beginning", "--no-follow", "--enrich")
    assert enrich.returncode == EXIT_NOT_RUNNING and "redis" in enrich.stderr.lower()

    assert cli.run("up").returncode == 0
    _kill9(cli.pids()["kafka"])
    for args in [("sessions", "count"), ("presence", "list")]:
        result = cli.run(*args)
        assert result.returncode == 0, (args, result.stderr)
    kafka_only = cli.run("topics", "list")
    assert kafka_only.returncode == EXIT_NOT_RUNNING and "kafka" in kafka_only.stderr.lower()
    assert "Traceback" not in kafka_only.stderr + redis_only.stderr + enrich.stderr


@pytest.mark.parametrize("exec_", [True, False], ids=["exec", "fork"])
def test_a_server_started_through_a_wrapper_script(cli, tmp_path, exec_) -> None:  # type: ignore[no-untyped-def]
    real = find_binary("redis", None).path
    wrapper = tmp_path / "valkey-wrapper.sh"
    # The "fork" wrapper stays alive as the parent of the server it starts.
    wrapper.write_text(f'#!/bin/sh\n{"exec " if exec_ else ""}"{real}" "$@"\n')
    wrapper.chmod(0o755)
    env = {"DEVCTL_REDIS_SERVER": str(wrapper)}
    up = cli.run("up", **env)
    assert up.returncode == 0, up.stderr
    status = cli.run("status", "--json", **env)
    assert status.returncode == 0, status.stdout + status.stderr
    redis_status = next(s for s in json.loads(status.stdout) if s["service"] == "redis")
    assert redis_status["health"] == "ok" and "stale" not in (redis_status["detail"] or "")
    # The recorded process is the server itself, whatever started it.
    pid = cli.pids()["redis"]
    assert psutil.Process(pid).name().startswith(("valkey", "redis"))
    again = cli.run("up", **env)
    assert again.returncode == 0 and "stale" not in again.stderr, again.stderr
    port = int(cli.env["DEVCTL_REDIS_PORT"])
    down = cli.run("down", **env)
    assert down.returncode == 0 and "redis: stopped" in down.stdout, down.stdout + down.stderr
    assert _gone(pid) and port_is_free(port)
    assert cli.run("up", **env).returncode == 0


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare (user + mount namespaces)")
def test_down_stops_the_servers_of_a_read_only_data_dir(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up").returncode == 0
    pids = cli.pids()
    data = str(cli.data_dir)
    # A read-only bind mount of the data dir, seen only by this one `devctl down`.
    script = f'mount --bind -o ro "{data}" "{data}" && exec "$0" -m devctl down'
    down = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, sys.executable],
        cwd=cli.cwd,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "internal error" not in down.stderr and "Traceback" not in down.stderr, down.stderr
    assert down.returncode == 0, down.stderr
    assert "redis: stopped" in down.stdout and "kafka: stopped" in down.stdout
    assert "Read-only file system" in down.stderr  # the leftovers it could not remove
    assert all(_gone(pid) for pid in pids.values())
    # The pidfiles it could not remove are recognised as stale.
    up = cli.run("up")
    assert up.returncode == 0, up.stderr


def test_a_lock_that_cannot_be_taken_is_a_clear_error(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up").returncode == 0
    pids = cli.pids()
    lock = cli.data_dir / "run" / "lock"
    lock.unlink()
    lock.mkdir()  # something unusable where the lock file belongs
    up = cli.run("up")
    assert up.returncode == 2, up.stderr
    assert str(lock) in up.stderr and "internal error" not in up.stderr
    # Stopping does not depend on the lock.
    down = cli.run("down")
    assert down.returncode == 0, down.stderr
    assert "redis: stopped" in down.stdout and "kafka: stopped" in down.stdout
    assert all(_gone(pid) for pid in pids.values())
    lock.rmdir()


def test_a_crashed_server_comes_back_on_the_port_it_last_ran_on(cli) -> None:  # type: ignore[no-untyped-def]
    moved = free_port()
    first = cli.run("up", "--json", "--redis-port", str(moved))
    assert first.returncode == 0, first.stderr
    url = json.loads(first.stdout)["endpoints"]["REDIS_URL"]
    assert _redis_port(url) == moved
    _kill9(cli.pids()["redis"])

    status = cli.run("status", "--json")
    redis_status = next(s for s in json.loads(status.stdout) if s["service"] == "redis")
    assert redis_status["health"] == "stopped"
    assert redis_status["address"].endswith(f":{moved}/0")
    doctor = cli.run("doctor", "--json")
    port_check = next(c for c in json.loads(doctor.stdout) if c["name"] == "redis port")
    assert port_check["detail"].startswith(f"{moved}:"), port_check

    # No flag now: the configured port differs, but the stack keeps its address.
    again = cli.run("up", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["endpoints"]["REDIS_URL"] == url

    # If that port was taken meanwhile, `up` says which address changed.
    _kill9(cli.pids()["redis"])
    # Valkey's AOF rewrite child may hold the listening socket a moment after a
    # kill -9 of the server; squat the port once it lets go.
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
    deadline = time.monotonic() + 20
    while True:
        try:
            squatter.bind(("127.0.0.1", moved))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    squatter.listen()
    try:
        third = cli.run("up", "--json")
    finally:
        squatter.close()
    assert third.returncode == 0, third.stderr
    new_url = json.loads(third.stdout)["endpoints"]["REDIS_URL"]
    assert _redis_port(new_url) == int(cli.env["DEVCTL_REDIS_PORT"])
    notes = " ".join(json.loads(third.stdout)["notes"])
    assert f"127.0.0.1:{moved}" in notes and f"127.0.0.1:{_redis_port(new_url)}" in notes
    assert "REDIS_URL" in third.stderr


def test_status_uses_the_password_recorded_at_up(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up", DEVCTL_REDIS_PASSWORD="s3cret pw").returncode == 0
    status = cli.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "s3cret" not in status.stdout
    doctor = cli.run("doctor")
    assert "s3cret" not in doctor.stdout
    assert cli.run("sessions", "count").returncode == 0
    # A crashed server restarts with the recorded password, so REDIS_URL stays valid.
    _kill9(cli.pids()["redis"])
    assert cli.run("up").returncode == 0
    assert cli.run("status").returncode == 0
    assert cli.run("test", "--group", "redis").returncode == 0


def test_status_and_doctor_state_the_high_watermark_limit(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli.run("up").returncode == 0
    status = cli.run("status", "--json")
    services = {s["service"]: s for s in json.loads(status.stdout)}
    assert services["redis"]["limitations"] == []
    (limit,) = services["kafka"]["limitations"]
    assert limit["id"] == "tansu-high-watermark"
    assert "idempotent" in limit["remedy"] and "external" in limit["remedy"]
    human = cli.run("status")
    assert "high watermark" in human.stdout + human.stderr
    doctor = cli.run("doctor", "--json")
    check = next(c for c in json.loads(doctor.stdout) if c["name"] == "kafka high watermark")
    assert check["ok"] is False and check["required"] is False and "idempotent" in check["fix"]
    human_doctor = cli.run("doctor")
    assert "high watermark" in human_doctor.stdout and "warn" in human_doctor.stdout
