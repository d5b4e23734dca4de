"""`devctl top` as a user runs it: piped (one snapshot), --json, and live in a terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devctl.errors import EXIT_INTERRUPTED, EXIT_USAGE
from tests.api.conftest import ApiServer, start_api, stop_api
from tests.conftest import Stack


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("top-api")
    server = start_api(stack, f"sqlite:///{root / 'api.db'}", root / "api.log")
    try:
        yield server
    finally:
        stop_api(server)


def _top(stack: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devctl", "top", *args],
        env={**stack.env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_piped_it_prints_one_plain_snapshot(stack: Stack, api: ApiServer) -> None:
    started = time.monotonic()
    result = _top(stack, "--api-url", api.url, "--interval", "0.5")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b" not in out  # no ANSI
    for heading in ("Topics: ok", "Consumer groups: ok", "Presence: ok", "Last events: ok"):
        assert heading in out, out
    assert f"API: ok ({api.url} " in out
    assert "GET /metrics" in out  # its own first scrape, seen by the second
    assert "user-events" in out
    assert took < 20


def test_json_is_one_snapshot_with_stable_keys(stack: Stack, api: ApiServer) -> None:
    result = _top(stack, "--json", "--api-url", api.url, "--interval", "0.3")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == 1
    assert list(data) == [
        "format",
        "time",
        "interval_s",
        "kafka",
        "groups",
        "presence",
        "api",
        "outbox",
        "redis",
        "events",
    ]
    assert data["interval_s"] >= 0.3
    assert data["kafka"]["status"] == "ok"
    assert {t["topic"] for t in data["kafka"]["topics"]} >= {"user-events", "message-events"}
    assert data["api"]["instances"][0]["status"] == "ok"
    assert data["redis"]["status"] == "ok"


def test_once_with_every_server_gone_still_prints_and_exits_0(tmp_path: Path) -> None:
    from devctl.engines.processes import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))}
    env.update(
        DEVCTL_DATA_DIR=str(tmp_path / "data"),
        DEVCTL_REDIS_PORT=str(free_port()),
        DEVCTL_KAFKA_PORT=str(free_port()),
    )
    result = subprocess.run(
        [sys.executable, "-m", "devctl", "top", "--once", "--interval", "0.2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "Topics: down: the local stack is not running" in result.stdout
    assert "Redis: down: the local stack is not running" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--api-url", "localhost:3000"], "--api-url wants an http(s) URL"),
        (["--api-url", "http://127.0.0.1:99999"], "--api-url wants an http(s) URL"),
        (["--interval", "0"], "Invalid value for '--interval'"),
    ],
)
def test_bad_input_is_a_usage_error(stack: Stack, args: list[str], expected: str) -> None:
    result = _top(stack, *args)
    assert result.returncode == EXIT_USAGE
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


# --- live, in a pseudo-terminal --------------------------------------------------------


class Terminal:
    """`devctl top` on the slave side of a pty, its screen read from the master."""

    def __init__(self, stack: Stack, *args: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes devctl
            os.environ.clear()
            os.environ.update(stack.env)
            os.environ.update(TERM="xterm-256color", COLUMNS="160", LINES="48")
            os.execv(sys.executable, [sys.executable, "-m", "devctl", "top", *args])
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
        self.screen = b""
        self.status: int | None = None

    def read_until(self, needle: bytes, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while needle not in self.screen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.fd, 65536)
                except OSError:
                    break
        return needle in self.screen

    def lflags(self) -> int:
        return int(termios.tcgetattr(self.fd)[3])

    def wait(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
            self.read_until(b"\x00never", 0.1)  # keep draining the screen
        raise AssertionError(f"devctl top did not exit in {timeout}s")

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except ProcessLookupError:
                pass
        os.close(self.fd)


@pytest.fixture
def terminal(stack: Stack) -> Iterator[type[Terminal]]:
    made: list[Terminal] = []

    class Made(Terminal):
        def __init__(self, stack_: Stack, *args: str) -> None:
            super().__init__(stack_, *args)
            made.append(self)

    yield Made
    for term in made:
        term.close()


def _cooked(flags: int) -> bool:
    return bool(flags & termios.ICANON) and bool(flags & termios.ECHO)


def test_live_renders_and_q_leaves_with_the_terminal_restored(
    stack: Stack, api: ApiServer, terminal: type[Terminal]
) -> None:
    term = terminal(stack, "--api-url", api.url, "--interval", "0.3")
    assert _cooked(term.lflags())  # how the terminal was before
    assert term.read_until(b"q or Ctrl-C to leave"), term.screen[-2000:]
    assert term.read_until(b"Consumer groups") and term.read_until(b"Last events")
    assert term.read_until(b"\x1b[?1049h")  # the alternate screen
    assert not _cooked(term.lflags())  # cbreak while it runs
    # It keeps refreshing: a second frame with another time arrives.
    frames = term.screen.count(b"devctl top")
    assert term.read_until(b"devctl top", 5)
    time.sleep(1)
    term.read_until(b"\x00never", 0.3)
    assert term.screen.count(b"devctl top") > frames
    os.write(term.fd, b"q")
    assert term.wait() == 0
    assert b"\x1b[?1049l" in term.screen  # back from the alternate screen
    assert _cooked(term.lflags())


def test_ctrl_c_leaves_with_130_and_the_terminal_restored(
    stack: Stack, terminal: type[Terminal]
) -> None:
    term = terminal(stack, "--interval", "0.3")
    assert term.read_until(b"Last events"), term.screen[-2000:]
    assert not _cooked(term.lflags())
    os.kill(term.pid, signal.SIGINT)
    assert term.wait() == EXIT_INTERRUPTED
    assert _cooked(term.lflags())
    assert b"Traceback" not in term.screen


def test_sigterm_leaves_quietly_with_the_terminal_restored(
    stack: Stack, terminal: type[Terminal]
) -> None:
    term = terminal(stack, "--interval", "0.3")
    assert term.read_until(b"Last events"), term.screen[-2000:]
    os.kill(term.pid, signal.SIGTERM)
    assert term.wait() == 0
    assert _cooked(term.lflags())
    assert b"Traceback" not in term.screen
