"""Redis stopped or hung mid-test: every operation raises RedisUnavailable, promptly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devctl.errors import EXIT_NOT_RUNNING, RedisUnavailable
from devctl.state import StateServices
from devctl.state.ratelimit import Policy

OPERATIONS: dict[str, Callable[[StateServices], Any]] = {
    "sessions.create": lambda s: s.sessions.create("42"),
    "sessions.validate": lambda s: s.sessions.validate("dc1." + "A" * 43 + ".NDI"),
    "sessions.list_for_user": lambda s: s.sessions.list_for_user("42"),
    "sessions.revoke_all": lambda s: s.sessions.revoke_all("42"),
    "user_cache.get": lambda s: s.user_cache.get("42", lambda _: {"_id": "42"}),
    "presence.connect": lambda s: s.presence.connect("42", "c", "api-1"),
    "presence.bulk_status": lambda s: s.presence.bulk_status(["42", "43"]),
    "presence.sweep": lambda s: s.presence.sweep(),
    "ratelimits.check": lambda s: s.ratelimits.check(Policy("p", 5, 60), "k"),
    "messages.append": lambda s: s.messages.append("a", "b", {"text": "hi"}),
    "messages.recent": lambda s: s.messages.recent("a", "b", loader=lambda *_: []),
    "pubsub.notify": lambda s: s.pubsub.notify("42", "x"),
}


def test_stopped_redis_raises_the_documented_error(private_redis: Any, tmp_path: Path) -> None:
    services = private_redis.services(tmp_path)
    token = services.sessions.create("42").token
    assert services.sessions.validate(token) is not None  # works while the server is up
    private_redis.kill()
    try:
        for name, operation in OPERATIONS.items():
            started = time.monotonic()
            with pytest.raises(RedisUnavailable, match="not reachable") as caught:
                operation(services)
            assert time.monotonic() - started < 2.0, name
            assert caught.value.exit_code == EXIT_NOT_RUNNING
    finally:
        services.close()


def test_hung_redis_times_out_instead_of_hanging(private_redis: Any, tmp_path: Path) -> None:
    services = private_redis.services(
        tmp_path, **{"redis.socket_timeout": 0.3, "redis.connect_timeout": 0.3}
    )
    token = services.sessions.create("42").token
    private_redis.pause()  # SIGSTOP: the socket accepts nothing and answers nothing
    try:
        for operation in (
            lambda: services.sessions.validate(token),
            lambda: services.presence.bulk_status(["42"]),
            lambda: services.ratelimits.check("login_ip", "1.2.3.4"),
        ):
            started = time.monotonic()
            with pytest.raises(RedisUnavailable):
                operation()
            assert time.monotonic() - started < 1.5
    finally:
        private_redis.resume()
        services.close()
    again = private_redis.services(tmp_path)
    assert again.sessions.validate(token) is not None  # and recovers once Redis answers
    again.close()


def test_cli_reports_unreachable_redis_with_exit_3(private_redis: Any, tmp_path: Path) -> None:
    url = private_redis.url
    private_redis.kill()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))}
    env.update(
        DEVCTL_ENGINE="external",
        REDIS_URL=url,
        KAFKA_BROKERS="127.0.0.1:1",
        DEVCTL_REDIS_CONNECT_TIMEOUT="0.5",
        DEVCTL_REDIS_SOCKET_TIMEOUT="0.5",
    )
    result = subprocess.run(
        [sys.executable, "-m", "devctl", "sessions", "count"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == EXIT_NOT_RUNNING, result.stderr
    assert "Redis is not reachable" in result.stderr
    assert "Traceback" not in result.stderr


def _sessions(tmp_path: Path, url: str, command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))}
    env.update(DEVCTL_ENGINE="external", REDIS_URL=url, KAFKA_BROKERS="127.0.0.1:1")
    return subprocess.run(
        [sys.executable, "-m", "devctl", "sessions", command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("command", ["count", "list"])
def test_a_database_the_server_lacks_is_a_config_error(
    stack: Any, tmp_path: Path, command: str
) -> None:
    url = stack.endpoints.redis_url.rsplit("/", 1)[0] + "/99"
    result = _sessions(tmp_path, url, command)
    assert result.returncode == 2, result.stderr  # the URL is wrong, not the server
    assert "key 'redis.url'" in result.stderr and "no such database" in result.stderr
    assert "internal error" not in result.stderr


@pytest.mark.parametrize("command", ["count", "list"])
def test_a_server_that_is_not_redis_is_unreachable(tmp_path: Path, command: str) -> None:
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_like_http() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer_like_http, daemon=True).start()
    try:
        result = _sessions(tmp_path, f"redis://127.0.0.1:{port}/0", command)
    finally:
        listener.close()
    assert result.returncode == EXIT_NOT_RUNNING, result.stderr
    assert "Redis is not reachable" in result.stderr and "internal error" not in result.stderr
