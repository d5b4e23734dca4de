"""A serve's files and its detached supervisor, with test children instead of the API:
the state file, the lock, status from /readyz, stopping, and no orphans on SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devctl.errors import ServiceStartError, UsageError
from devctl.processes import free_port
from devctl.supervisor.control import serve_status, stop_serve
from devctl.supervisor.daemon import detach
from devctl.supervisor.logs import api_log_names, log_path, tail_logs
from devctl.supervisor.plan import ServePlan, plan_path
from devctl.supervisor.runstate import ServeState, ensure_not_serving, read_state, running_serve
from tests.supervisor.conftest import FAST, child, gone, kill_pids, wait_until


def _plan(
    data_dir: Path, *, ready: int = 200, ready_delay: float = 0.0, consumer: bool = True
) -> ServePlan:
    port = free_port()
    children = [
        child(
            "api-1",
            "server",
            port,
            ready,
            ready_delay,
            role="api",
            port=port,
            health_url=f"http://127.0.0.1:{port}/healthz",
            ready_url=f"http://127.0.0.1:{port}/readyz",
            stop_timeout=5,
        )
    ]
    if consumer:
        children.append(child("worker", "lines", 2, role="consumer", stop_phase=1, essential=False))
    return ServePlan(tuple(children), data_dir, FAST)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServePlan, ServeState]]:
    """A detached supervisor of a test server and a worker; stopped afterwards."""
    plan = _plan(tmp_path / "data")
    state = None
    try:
        state = detach(plan, cwd=tmp_path, timeout=30)
        yield plan, state
    finally:
        stop_serve(plan.data_dir, timeout=10)
        if state is not None:
            kill_pids([c.pid for c in state.children if c.pid])
            with contextlib.suppress(psutil.Error):
                psutil.Process(state.supervisor.pid).kill()


def test_detach_returns_once_up_and_down_stops_it_in_order(
    served: tuple[ServePlan, ServeState],
) -> None:
    plan, state = served
    assert state.ready and state.mode == "detached"
    daemon = psutil.Process(state.supervisor.pid)
    assert os.getsid(daemon.pid) == daemon.pid  # a session of its own, like `up`'s servers
    children = {c.name: c for c in state.children}
    assert set(children) == {"api-1", "worker"}
    assert all(psutil.Process(c.pid).ppid() == daemon.pid for c in children.values() if c.pid)
    assert plan_path(plan.data_dir).is_file()

    with pytest.raises(UsageError) as refused:
        ensure_not_serving(plan.data_dir)
    assert f"already running in {plan.data_dir} (pid {daemon.pid}, detached" in str(refused.value)

    serving, statuses = serve_status(plan.data_dir)
    assert serving is not None and serving.supervisor.pid == daemon.pid
    api = next(s for s in statuses if s.service == "api-1")
    assert api.health == "ok" and api.kind == "api" and api.port == children["api-1"].port
    assert api.latency_ms is not None and api.checks["redis"] == {"status": "ok"}
    assert api.uptime_s is not None and api.restarts == 0
    worker = next(s for s in statuses if s.service == "worker")
    assert worker.health == "ok" and worker.address == "-"

    wait_until(lambda: len(tail_logs(plan.data_dir, ["worker"], 10)) >= 3, what="the worker log")
    logged = [line for _, line in tail_logs(plan.data_dir, ["worker"], 10)]
    assert logged[0].startswith("--- devctl: worker started (pid ")
    assert logged[1:3] == ["line 0", "line 1"]
    assert api_log_names(plan.data_dir) == ["api-1"]

    line = stop_serve(plan.data_dir)
    assert line == f"serve: stopped (pid {daemon.pid}: api-1, worker)"
    assert gone(daemon.pid)
    assert all(gone(c.pid) for c in children.values() if c.pid)
    assert read_state(plan.data_dir) is None
    events = log_path(plan.data_dir, "serve").read_text()
    assert events.index("stopped: api-1 stopped") < events.index("stopping: stopping worker")
    assert "draining" in log_path(plan.data_dir, "api-1").read_text()
    assert stop_serve(plan.data_dir) is None


def test_children_die_when_the_supervisor_is_killed(
    served: tuple[ServePlan, ServeState],
) -> None:
    plan, state = served
    pids = [c.pid for c in state.children if c.pid]
    assert len(pids) == 2
    os.kill(state.supervisor.pid, signal.SIGKILL)
    wait_until(lambda: all(gone(pid) for pid in pids), timeout=5, what="the children's end")
    # The state file stays behind, stale: readers ignore it and stop_serve removes it.
    assert read_state(plan.data_dir) is not None
    assert running_serve(plan.data_dir) is None
    assert serve_status(plan.data_dir) == (None, [])
    assert stop_serve(plan.data_dir) == "serve: removed a stale state file (its supervisor is gone)"
    ensure_not_serving(plan.data_dir)  # the lock died with it


def test_a_degraded_instance_shows_its_failing_checks(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "data", ready=503, consumer=False)
    try:
        detach(plan, cwd=tmp_path, timeout=30)
        _serving, (api,) = serve_status(plan.data_dir)
        assert api.health == "degraded"
        assert api.detail is not None and api.detail.endswith("answered 503: database: down")
    finally:
        stop_serve(plan.data_dir, timeout=10)


def test_a_slow_degraded_answer_is_degraded_not_unreachable(tmp_path: Path) -> None:
    # A hung Redis or Kafka: /readyz answers 503 only once its per-dependency
    # timeout has passed. 2.5 s: longer than the 2 s the probe used to wait.
    plan = _plan(tmp_path / "data", ready=503, ready_delay=2.5, consumer=False)
    try:
        detach(plan, cwd=tmp_path, timeout=30)
        _serving, (api,) = serve_status(plan.data_dir)
        assert api.health == "degraded", api.detail
        assert api.detail is not None and api.detail.endswith("answered 503: database: down")
        assert api.checks["database"] == {"status": "error", "error": "down"}
        assert api.latency_ms is not None and api.latency_ms >= 2500
    finally:
        stop_serve(plan.data_dir, timeout=10)


def test_the_status_probe_outwaits_the_apis_own_readiness_timeout() -> None:
    from devctl.api.app import READY_TIMEOUT
    from devctl.supervisor.control import PROBE_TIMEOUT_S

    # The API answers 503 after READY_TIMEOUT; the probe must still be listening.
    assert PROBE_TIMEOUT_S - READY_TIMEOUT >= 1.5


def test_detach_reports_a_supervisor_that_gives_up(tmp_path: Path) -> None:
    port = free_port()
    crashing = child(
        "api-1", "exit", 4, role="api", port=port, health_url=f"http://127.0.0.1:{port}/healthz"
    )
    plan = ServePlan((crashing,), tmp_path / "data", FAST)
    seen: list[str] = []
    with pytest.raises(ServiceStartError) as failed:
        detach(plan, cwd=tmp_path, timeout=30, progress=seen.append)
    message = str(failed.value)
    assert "devctl serve stopped while starting (exit code 1)" in message
    assert "api-1 crashed 4 times within 30s (last: exit code 4); giving up" in message
    assert any("gave-up: api-1 crashed" in line for line in seen)
    assert running_serve(plan.data_dir) is None


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    import socket

    plan = _plan(tmp_path / "data", consumer=False)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", plan.children[0].port or 0))
        holder.listen()
        with pytest.raises(ServiceStartError) as failed:
            detach(plan, cwd=tmp_path, timeout=30)
    message = str(failed.value)
    assert "(exit code 2)" in message
    assert f"port {plan.children[0].port} for api-1 is already in use" in message
    assert not log_path(plan.data_dir, "api-1").exists()


def test_sigterm_stops_a_detached_supervisor_gracefully(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "data")
    path = plan.write()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devctl.supervisor", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: (s := read_state(plan.data_dir)) is not None and s.ready, what="ready")
        state = read_state(plan.data_dir)
        assert state is not None
        pids = [c.pid for c in state.children if c.pid]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "shutdown: stopping (on SIGTERM)" in out
    assert all(gone(pid) for pid in pids)
    assert read_state(plan.data_dir) is None


def test_a_started_serve_reads_back_from_its_state_file(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "data", consumer=False)
    started = time.time()
    try:
        state = detach(plan, cwd=tmp_path, timeout=30)
        again = read_state(plan.data_dir)
        assert again is not None
        assert again.supervisor == state.supervisor
        assert again.started_at >= started - 1
        assert again.shutdown_timeout == plan.shutdown_timeout == 5 + 5
    finally:
        stop_serve(plan.data_dir, timeout=10)
