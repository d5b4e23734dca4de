"""A running serve seen from outside: its processes' status, and stopping it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from devctl.supervisor import health
from devctl.supervisor.runstate import ServeState, read_state, running_serve, state_path
from devctl.supervisor.spec import UP, ChildState

# Longer than the API takes to say it is degraded: /readyz waits up to
# devctl.api.app.READY_TIMEOUT (1.5 s) for its slowest dependency, then answers 503
# naming it. A shorter probe would show a degraded instance as unreachable.
PROBE_TIMEOUT_S = 3.5


@dataclass
class ProcessStatus:
    """One process of a serve, with the keys of a stack service's status (``--json``)."""

    service: str  # the child's name: api-1, api-2, a consumer
    kind: str  # its role: "api" | "consumer"
    address: str
    running: bool
    # ok | degraded (/readyz 503) | unreachable | starting | backoff | gave-up | stopping | stopped
    health: str
    engine: str = "serve"
    pid: int | None = None
    port: int | None = None
    uptime_s: float | None = None
    restarts: int = 0
    latency_ms: float | None = None
    detail: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    supervisor_pid: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def serve_status(data_dir: Path) -> tuple[ServeState | None, list[ProcessStatus]]:
    """The running serve (None: none runs) and its processes, API health from /readyz."""
    state = running_serve(data_dir)
    if state is None:
        return None, []
    from concurrent.futures import ThreadPoolExecutor

    children = state.children
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(children)))) as pool:
        statuses = list(pool.map(lambda c: _status_of(c, state), children))
    return state, statuses


def _status_of(child: ChildState, state: ServeState) -> ProcessStatus:
    running = child.pid is not None
    status = ProcessStatus(
        service=child.name,
        kind=child.role,
        address=_address(child),
        running=running,
        health=child.state,
        pid=child.pid,
        port=child.port,
        uptime_s=max(0.0, time.time() - child.started_at) if child.started_at else None,
        restarts=child.restarts,
        supervisor_pid=state.supervisor.pid,
    )
    if child.last_exit and child.state != UP:
        status.detail = f"last exit: {child.last_exit}"
    if child.state != UP:
        return status
    if child.ready_url is None:
        status.health = "ok"  # a worker without a URL: up is all there is to know
        return status
    answer = health.get(child.ready_url, timeout=PROBE_TIMEOUT_S)
    status.latency_ms = answer.latency_ms
    status.checks = answer.checks
    if answer.status == 200:
        status.health = "ok"
    elif answer.status is None:
        status.health = "unreachable"
        status.detail = f"{child.ready_url}: {answer.error}"
    else:
        status.health = "degraded"
        failing = _failing_checks(answer.checks)
        status.detail = f"{child.ready_url} answered {answer.status}" + (
            f": {failing}" if failing else ""
        )
    return status


def _address(child: ChildState) -> str:
    if child.ready_url:
        return child.ready_url.rsplit("/", 1)[0]
    return "-"


def _failing_checks(checks: dict[str, Any]) -> str:
    out = []
    for name, check in checks.items():
        if isinstance(check, dict):
            state = check.get("status")
            if state in ("ok", "up", True):
                continue
            reason = check.get("error") or check.get("detail") or state
            out.append(f"{name}: {reason}")
        elif check not in ("ok", "up", True):
            out.append(f"{name}: {check}")
    return "; ".join(out)


def stop_serve(data_dir: Path, timeout: float | None = None) -> str | None:
    """Stop the serve running in ``data_dir``; a line saying what was done, None if none ran.

    SIGTERM to the supervisor alone (a foreground serve shares its process group
    with the shell's job), which stops its children in order; if it has not exited
    within its own shutdown budget, SIGKILL: its children die with it (PDEATHSIG),
    and any of them still alive is killed here too.
    """
    state = running_serve(data_dir)
    if state is None:
        stale = read_state(data_dir)
        if stale is not None:
            with contextlib.suppress(OSError):
                state_path(data_dir).unlink()
            return "serve: removed a stale state file (its supervisor is gone)"
        return None
    pid = state.supervisor.pid
    names = ", ".join(c.name for c in state.children) or "no children"
    budget = state.shutdown_timeout if timeout is None else timeout
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(state, budget):
        outcome = "stopped"
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(state, 5.0)
        outcome = f"killed (did not stop within {budget:g}s of SIGTERM)"
    for child in state.children:
        _kill_if_same(child)
    with contextlib.suppress(OSError):
        if read_state(data_dir) is not None and running_serve(data_dir) is None:
            state_path(data_dir).unlink()
    return f"serve: {outcome} (pid {pid}: {names})"


def _wait_gone(state: ServeState, timeout: float) -> bool:
    from devctl.processes import is_ours

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_ours(state.supervisor):
            return True
        time.sleep(0.05)
    return not is_ours(state.supervisor)


def _kill_if_same(child: ChildState) -> None:
    # Belt and braces where PDEATHSIG does not exist: only the very process recorded.
    if child.pid is None or child.create_time is None:
        return
    try:
        proc = psutil.Process(child.pid)
        if abs(proc.create_time() - child.create_time) < 1.0:
            proc.kill()
    except psutil.Error:
        pass
