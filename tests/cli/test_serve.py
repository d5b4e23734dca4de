"""devctl serve, and status / logs / down with a serve running, as a user runs them.

The first tests need no API: usage errors, a taken port, and the other commands
facing a detached supervisor of test children (tests/supervisor/child.py) in the
data dir. The end-to-end tests run the real API (python -m devctl.api) and are
skipped while devctl/api/__main__.py does not exist.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devctl.errors import EXIT_INTERRUPTED, EXIT_NOT_RUNNING, EXIT_USAGE
from devctl.processes import free_port
from devctl.supervisor.control import stop_serve
from devctl.supervisor.daemon import detach
from devctl.supervisor.plan import ServePlan
from devctl.supervisor.runstate import ServeState, read_state
from tests.cli.conftest import Cli
from tests.conftest import running
from tests.supervisor.conftest import FAST, child, gone, kill_pids, wait_until

needs_api = pytest.mark.skipif(
    importlib.util.find_spec("devctl.api.__main__") is None,
    reason="devctl/api/__main__.py (the API instance, written in parallel) does not exist yet",
)


def _stack_started(cli: Cli) -> bool:
    return any((cli.data_dir / "run").glob("*.pid"))


def _servers_of(cli: Cli) -> list[str]:
    """Processes working in the CLI's data dir (the local engine's servers run there)."""
    found = []
    for proc in psutil.process_iter(["cwd", "cmdline", "status"]):
        cwd = proc.info["cwd"]
        live = proc.info["status"] != psutil.STATUS_ZOMBIE
        if cwd and live and Path(cwd).is_relative_to(cli.data_dir):
            found.append(" ".join(proc.info["cmdline"] or []))
    return found


def _alive(pid: int) -> bool:
    return not gone(pid)


def _free_ports(count: int) -> int:
    """A first port with ``count`` free ports from it."""
    from devctl.processes import port_is_free

    for _ in range(50):
        first = free_port()
        if first + count <= 65535 and all(port_is_free(first + i) for i in range(count)):
            return first
    raise AssertionError("no run of free ports")


def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else {}
    finally:
        connection.close()


# --- without the API --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--reload", "--instances", "2"], "reloading runs one API instance, not 2"),
        (["--consumers", "nope"], "unknown consumer 'nope'"),
        (["--consumers", "a", "--no-consumers"], "choose the consumers or none of them"),
        (["--instances", "0"], "Invalid value for '--instances'"),
    ],
)
def test_usage_errors_start_nothing(cli: Cli, args: list[str], expected: str) -> None:
    result = cli.run("serve", *args)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not _stack_started(cli)


def test_an_unknown_consumer_lists_the_registered_ones(cli: Cli) -> None:
    from devctl.consumers import CONSUMERS

    result = cli.run("serve", "--consumers", "nope")
    assert result.returncode == EXIT_USAGE
    assert f"registered consumers: {', '.join(CONSUMERS) or 'none yet'}" in result.stderr


def test_a_taken_port_is_named_before_anything_starts(cli: Cli) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = cli.run("serve", "--port", str(port), "--no-consumers")
    assert result.returncode == EXIT_USAGE, result.stderr
    assert f"port {port} for api-1 is already in use" in result.stderr
    assert not _stack_started(cli)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("bogus.invalid", "name or service not known"),
        ("192.0.2.1", "not an address of this machine"),  # TEST-NET-1: nobody's
        ("2001:db8::1", "not an address of this machine"),  # the IPv6 documentation range
    ],
)
def test_a_host_nothing_can_listen_on_is_a_usage_error(cli: Cli, host: str, reason: str) -> None:
    result = cli.run("serve", "--host", host, "--no-consumers")
    assert result.returncode == EXIT_USAGE, result.stderr
    assert result.stderr.startswith(f"error: --host: cannot listen on {host}: ")
    if host != "bogus.invalid":  # the resolver's words vary
        assert f"cannot listen on {host}: {reason}\n" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert not _stack_started(cli)
    assert not (cli.data_dir / "logs").exists()


def test_logs_of_a_serve_that_never_ran(cli: Cli) -> None:
    result = cli.run("logs", "api")
    assert result.returncode == EXIT_NOT_RUNNING
    assert "no api log" in result.stderr and "devctl serve" in result.stderr
    unknown = cli.run("logs", "nope")
    assert unknown.returncode == EXIT_USAGE
    assert "unknown service 'nope'" in unknown.stderr
    assert "redis, kafka, api" in unknown.stderr


@pytest.fixture
def test_serve(cli: Cli) -> Iterator[tuple[ServePlan, ServeState]]:
    """The stack up and a detached supervisor of test children in the CLI's data dir."""
    assert cli.run("up").returncode == 0
    ports = [free_port(), free_port()]
    children = [
        child(
            f"api-{n}",
            "server",
            port,
            role="api",
            port=port,
            health_url=f"http://127.0.0.1:{port}/healthz",
            ready_url=f"http://127.0.0.1:{port}/readyz",
            stop_timeout=5,
        )
        for n, port in enumerate(ports, start=1)
    ]
    children.append(child("worker", "lines", 2, role="consumer", stop_phase=1, essential=False))
    plan = ServePlan(tuple(children), cli.data_dir, FAST)
    state = None
    try:
        state = detach(plan, cwd=cli.cwd, timeout=30)
        yield plan, state
    finally:
        stop_serve(cli.data_dir, timeout=10)
        if state is not None:
            kill_pids([c.pid for c in state.children if c.pid])


def test_status_logs_and_down_with_a_serve_running(
    cli: Cli, test_serve: tuple[ServePlan, ServeState]
) -> None:
    _plan, state = test_serve
    pid = state.supervisor.pid
    children = {c.name: c for c in state.children}

    again = cli.run("serve", "--no-consumers")
    assert again.returncode == EXIT_USAGE
    assert f"devctl serve is already running in {cli.data_dir} (pid {pid}, detached" in again.stderr

    status = cli.run("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    entries = {e["service"]: e for e in json.loads(status.stdout)}
    assert list(entries) == ["redis", "kafka", "api-1", "api-2", "worker"]
    api = entries["api-1"]
    assert api["engine"] == "serve" and api["kind"] == "api"
    assert api["pid"] == children["api-1"].pid and api["port"] == children["api-1"].port
    assert api["health"] == "ok" and api["restarts"] == 0 and api["supervisor_pid"] == pid
    assert api["address"] == f"http://127.0.0.1:{children['api-1'].port}"
    assert entries["worker"]["health"] == "ok" and entries["worker"]["kind"] == "consumer"

    table = cli.run("status")
    assert table.returncode == 0
    assert f"devctl serve (pid {pid}, detached)" in table.stdout
    assert "api-2" in table.stdout and "worker" in table.stdout

    wait_until(lambda: "line 1" in cli.run("logs", "worker").stdout, what="the worker's log")
    both = cli.run("logs", "api", "-n", "50")
    assert both.returncode == 0, both.stderr
    assert "api-1 | listening on" in both.stdout and "api-2 | listening on" in both.stdout
    one = cli.run("logs", "api-2", "-n", "50")
    assert one.returncode == 0 and one.stdout.splitlines()[1].startswith("listening on")

    down = cli.run("down")
    assert down.returncode == 0, down.stderr
    lines = down.stdout.splitlines()
    assert lines[0] == f"serve: stopped (pid {pid}: api-1, api-2, worker)"
    assert lines[1].startswith("redis: stopped") and lines[2].startswith("kafka: stopped")
    assert gone(pid) and all(gone(c.pid) for c in children.values() if c.pid)
    assert read_state(cli.data_dir) is None


def test_status_exits_1_when_an_instance_is_degraded(cli: Cli) -> None:
    assert cli.run("up").returncode == 0
    port = free_port()
    degraded = child(
        "api-1",
        "server",
        port,
        503,
        role="api",
        port=port,
        health_url=f"http://127.0.0.1:{port}/healthz",
        ready_url=f"http://127.0.0.1:{port}/readyz",
    )
    try:
        detach(ServePlan((degraded,), cli.data_dir, FAST), cwd=cli.cwd, timeout=30)
        status = cli.run("status")
        assert status.returncode == 1
        assert "api-1: " in status.stderr and "answered 503: database: down" in status.stderr
    finally:
        stop_serve(cli.data_dir, timeout=10)


# --- with the API ---------------------------------------------------------------------


@needs_api
def test_serve_detach_from_nothing_to_a_running_backend_and_down(cli: Cli) -> None:
    port = _free_ports(2)
    result = cli.run(
        "serve", "--detach", "--instances", "2", "--port", str(port), "--no-consumers", timeout=120
    )
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "the local stack was not running: started it (redis, kafka)" in result.stderr
        assert "database: " in result.stderr
        state = read_state(cli.data_dir)
        assert state is not None and state.ready
        assert f"devctl serve runs in the background (pid {state.supervisor.pid})" in result.stdout
        assert f"http://127.0.0.1:{port}" in result.stdout
        assert f"http://127.0.0.1:{port + 1}" in result.stdout
        for instance_port in (port, port + 1):
            assert _get(instance_port, "/healthz")[0] == 200

        status = cli.run("status", "--json")
        entries = {e["service"]: e for e in json.loads(status.stdout)}
        assert {"api-1", "api-2"} <= set(entries)
        assert entries["api-2"]["port"] == port + 1
        assert entries["api-1"]["health"] in ("ok", "degraded"), entries["api-1"]

        again = cli.run("serve", "--port", str(port + 5))
        assert again.returncode == EXIT_USAGE
        assert f"(pid {state.supervisor.pid}, detached" in again.stderr

        assert cli.run("logs", "api").returncode == 0
    finally:
        down = cli.run("down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert down.stdout.startswith(f"serve: stopped (pid {state.supervisor.pid}: api-1, api-2)")
    assert all(gone(c.pid) for c in state.children if c.pid)


class _Foreground:
    """A foreground `devctl serve`, its stderr read line by line."""

    def __init__(self, cli: Cli, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devctl", "serve", *args],
            cwd=cli.cwd,
            env=cli.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err: list[str] = []
        self.out: list[str] = []
        for stream, sink in ((self.proc.stderr, self.err), (self.proc.stdout, self.out)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line)

    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in:\n{self.stderr()}")
            time.sleep(0.05)

    def children(self) -> list[int]:
        with contextlib.suppress(psutil.Error):
            return [p.pid for p in psutil.Process(self.proc.pid).children()]
        return []


@needs_api
@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, 0)], ids=["int", "term"]
)
def test_serve_in_the_foreground_stops_gracefully_on_a_signal(
    cli: Cli, sig: signal.Signals, code: int
) -> None:
    assert cli.run("up").returncode == 0
    port = _free_ports(1)
    serving = _Foreground(cli, "--port", str(port), "--no-consumers")
    with running(serving.proc):  # type: ignore[arg-type]
        serving.wait_for(f"api-1: DevConnect API on http://127.0.0.1:{port}")
        assert "using the running local stack" in serving.stderr()
        assert _get(port, "/healthz")[0] == 200
        children = serving.children()
        assert len(children) == 1
        stack = cli.pids()
        serving.proc.send_signal(sig)
        serving.proc.wait(60)
    assert serving.proc.returncode == code, serving.stderr()
    time.sleep(0.2)  # the pump threads take the last lines
    err = serving.stderr()
    assert f"stopping (on {sig.name})" in err
    # uvicorn re-raises the SIGTERM it handled once drained (since 0.29): a graceful
    # stop shows as exit code 0 or as that SIGTERM, never as the SIGKILL fallback.
    assert "api-1 stopped (exit code 0)" in err or "api-1 stopped (on SIGTERM)" in err
    assert "did not stop within" not in err
    assert all(gone(pid) for pid in children)
    assert read_state(cli.data_dir) is None
    logged = cli.run("logs", "api-1", "-n", "100").stdout
    assert "--- devctl: api-1 started" in logged
    # The stack ran before serve: it still runs, untouched.
    assert "stopping the local stack" not in err
    assert stack and all(_alive(pid) for pid in stack.values())
    assert cli.run("status").returncode == 0


@needs_api
@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, 0)], ids=["int", "term"]
)
def test_a_foreground_serve_stops_the_stack_it_started(
    cli: Cli, sig: signal.Signals, code: int
) -> None:
    port = _free_ports(1)
    serving = _Foreground(cli, "--port", str(port), "--no-consumers")
    with running(serving.proc):  # type: ignore[arg-type]
        serving.wait_for(f"api-1: DevConnect API on http://127.0.0.1:{port}", timeout=120)
        assert (
            "the local stack was not running: started it (redis, kafka)" in serving.stderr()
            and "serve stops it when it ends" in serving.stderr()
        )
        stack = cli.pids()
        cli.remember()  # the fixture stops them if this test fails
        assert set(stack) == {"redis", "kafka"} and all(_alive(p) for p in stack.values())
        serving.proc.send_signal(sig)
        serving.proc.wait(60)
    assert serving.proc.returncode == code, serving.stderr()
    time.sleep(0.2)  # the pump threads take the last lines
    err = serving.stderr()
    stopping = err.index("stopping the local stack serve started (redis, kafka)")
    assert err.index("api-1 stopped") < stopping  # after its children
    assert f"redis: stopped (pid {stack['redis']})" in err[stopping:]
    assert f"kafka: stopped (pid {stack['kafka']})" in err[stopping:]
    assert not any(_alive(pid) for pid in stack.values())
    assert _servers_of(cli) == []
    assert cli.pids() == {}


@needs_api
def test_a_sigterm_while_serve_starts_stops_the_stack_it_started(cli: Cli) -> None:
    port = _free_ports(1)
    serving = _Foreground(cli, "--port", str(port), "--no-consumers")
    with running(serving.proc):  # type: ignore[arg-type]
        serving.wait_for("the local stack was not running: started it (redis, kafka)", 120)
        cli.remember()  # the fixture stops them if this test fails
        # Migrations, or the supervisor starting: either way the stack must go.
        serving.proc.send_signal(signal.SIGTERM)
        serving.proc.wait(60)
    assert serving.proc.returncode in (0, EXIT_INTERRUPTED), serving.stderr()
    time.sleep(0.2)
    err = serving.stderr()
    assert "stopping the local stack serve started (redis, kafka)" in err
    assert "Traceback" not in err
    assert _servers_of(cli) == [] and cli.pids() == {}


def test_a_serve_that_fails_after_starting_the_stack_stops_it(cli: Cli) -> None:
    # Migrations fail: the database refuses connections.
    database = f"postgresql://devctl@127.0.0.1:{free_port()}/devconnect"
    result = cli.run("serve", "--no-consumers", timeout=120, DEVCTL_DATABASE_URL=database)
    assert result.returncode == EXIT_NOT_RUNNING, result.stderr
    err = result.stderr
    assert "the local stack was not running: started it (redis, kafka)" in err
    stopping = err.index("stopping the local stack serve started (redis, kafka)")
    assert "redis: stopped (pid" in err[stopping:] and "kafka: stopped (pid" in err[stopping:]
    assert err.index("error: ") > stopping  # the error that ended it comes last
    assert "Traceback" not in err
    assert _servers_of(cli) == [] and cli.pids() == {}
