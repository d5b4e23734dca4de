"""Start detached processes, tell whether a recorded one is still ours, stop it.

Never signal a process that is not ours: every signal goes through a record whose
start time and executable were checked against the live process first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from devctl.processes.records import ProcessRecord, read_pidfile

# Start times from psutil are rounded; a real match is within milliseconds.
_START_TIME_TOLERANCE_S = 1.0


def is_ours(record: ProcessRecord) -> bool:
    """True if the recorded process still runs and is the one we started."""
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            _reap(record.pid)
            return False
        if abs(proc.create_time() - record.create_time) > _START_TIME_TOLERANCE_S:
            return False
        expected = {Path(record.executable).name, record.process_name} - {""}
        names = {proc.name()}
        with contextlib.suppress(psutil.Error, IndexError):
            names.add(Path(proc.cmdline()[0]).name)
        # Linux truncates process names to 15 characters.
        return any(n == e or e.startswith(n) for n in names if n for e in expected)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def live_record(path: Path, *, clean: bool = False) -> tuple[ProcessRecord | None, bool]:
    """(record, stale): the live record or None; stale is True for a dead or garbled pidfile.

    Only ``clean=True`` (a caller that owns the pidfile, under its lock) removes a
    stale pidfile; read-only callers leave it for the owner to report.
    """
    record = read_pidfile(path)
    if record is not None and is_ours(record):
        return record, False
    stale = path.exists()
    if stale and clean:
        path.unlink(missing_ok=True)
    return None, stale


def spawn(
    argv: Sequence[str],
    log_path: Path,
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a detached process (own session, no terminal) logging to log_path.

    Returns the process and the log offset where this run's output begins. Keep
    the Popen while waiting for start-up: it holds the exit status if the process
    dies (once dropped, the subprocess module may reap the child silently).
    ``env`` replaces the environment (None: this process's).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- devctl: starting {' '.join(argv)} at {time.ctime()}\n".encode())
        log.flush()
        offset = log.tell()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else dict(env),
            start_new_session=True,
            close_fds=True,
        )
    return popen, offset


def has_exited(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def describe_returncode(returncode: int) -> str:
    """'exit code N' or 'killed by SIGX', as Popen.returncode reports it."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def stop(record: ProcessRecord, timeout: float) -> str:
    """SIGTERM, then SIGKILL after ``timeout``; only if the process is still ours."""
    if not is_ours(record):
        return "not running"
    group = record.pgid or record.pid
    _signal_group(record.pid, group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if has_exited(record.pid):
            return "stopped"
        time.sleep(0.05)
    if is_ours(record):
        _signal_group(record.pid, group, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not has_exited(record.pid):
            time.sleep(0.05)
        return f"killed (did not stop within {timeout:g}s of SIGTERM)"
    return "stopped"


def stop_spawned(child: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a process this process spawned, and its group, whatever it exec'd into.

    Works where ``stop`` cannot tell the process is ours (a wrapper script that
    exec'd the program under another name): an unreaped child's pid cannot be reused.
    """
    if child.poll() is None:
        _signal_group(child.pid, child.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not has_exited(child.pid):
            time.sleep(0.05)
    # Also whatever the child forked into its group (a wrapper's server), before
    # the child is reaped: a live group id is never handed to a new process.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _signal_group(pid: int, group: int, sig: signal.Signals) -> None:
    # The process runs in the session devctl started for it (start_new_session):
    # signalling that group also reaches a wrapper around it or a helper it forked.
    try:
        if os.getpgid(pid) == group:
            os.killpg(group, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    # Only possible when the process is our child (tests that start engines
    # in-process); for detached processes init reaps them.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
