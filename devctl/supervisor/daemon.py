"""A serve in the background: the supervisor as a detached process, like `up`'s servers.

``detach`` writes the plan to run/serve-plan.json (no secrets: the children get
those from the environment the daemon inherits), starts
``python -m devctl.supervisor run/serve-plan.json`` in a session of its own with
its output in logs/serve.log, and returns once every API instance answered its
health URL; if the daemon exits or does not get there in time, it is stopped and
the error carries the end of its log.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devctl import processes
from devctl.errors import ServiceStartError
from devctl.supervisor.logs import LOG_DIR, SUPERVISOR_LOG
from devctl.supervisor.plan import ServePlan
from devctl.supervisor.runstate import ServeState, read_state

_TAIL_LINES = 20


def detach(
    plan: ServePlan,
    *,
    cwd: Path,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> ServeState:
    """Start the plan's supervisor in the background; its state once every instance is up.

    ``progress`` gets the daemon's log lines (its events) while it starts.
    ``timeout`` defaults to the policy's ready timeout plus the time five
    crashes' backoff takes, so that a crash loop ends in the daemon's give-up.
    """
    path = plan.write()
    log = plan.data_dir / LOG_DIR / SUPERVISOR_LOG
    argv = [sys.executable, "-m", "devctl.supervisor", str(path)]
    daemon, offset = processes.spawn(argv, log, cwd=cwd)
    policy = plan.policy
    limit = timeout if timeout is not None else policy.ready_timeout + policy.window
    deadline = time.monotonic() + limit
    seen = offset
    try:
        while True:
            seen = _relay(log, seen, progress)
            returncode = daemon.poll()
            if returncode is not None:
                seen = _relay(log, seen, progress)
                raise _failure(
                    f"devctl serve stopped while starting "
                    f"({processes.describe_returncode(returncode)})",
                    log,
                    offset,
                )
            state = read_state(plan.data_dir)
            if state is not None and state.supervisor.pid == daemon.pid and state.ready:
                return state
            if time.monotonic() > deadline:
                _stop(daemon, plan.shutdown_timeout)
                raise _failure(
                    f"devctl serve did not get every API instance up within {limit:g}s",
                    log,
                    offset,
                )
            time.sleep(0.1)
    except BaseException:
        # Ctrl-C while waiting, or any error above: never leave it half started.
        if daemon.poll() is None:
            _stop(daemon, plan.shutdown_timeout)
        raise


def _relay(log: Path, offset: int, progress: Callable[[str], None] | None) -> int:
    """Hand the complete lines written to ``log`` since ``offset`` to progress."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return offset
    complete = data.rpartition(b"\n")[0]
    if not complete:
        return offset
    if progress is not None:
        for line in complete.decode("utf-8", errors="replace").splitlines():
            progress(line)
    return offset + len(complete) + 1


def _stop(daemon: subprocess.Popen[bytes], timeout: float) -> None:
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout)
    except subprocess.TimeoutExpired:
        # Its children die with it (PR_SET_PDEATHSIG).
        with contextlib.suppress(ProcessLookupError):
            daemon.kill()
        daemon.wait()


def _failure(summary: str, log: Path, offset: int) -> ServiceStartError:
    tail = processes.tail_file(log, _TAIL_LINES, start=offset)
    shown = "\n".join(f"    {line}" for line in tail) or "    (nothing logged)"
    return ServiceStartError(
        f"{summary}\nlast lines of {log}:\n{shown}",
        hint="`devctl logs api` shows what the instances printed",
    )
