"""Detached server processes, their pidfiles and ports.

A pidfile records the pid *and* the process's start time and executable, so a
pid reused by another program after a crash or reboot is recognised as stale
and never signalled.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

# Start times from psutil are rounded; a real match is within milliseconds.
_START_TIME_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class PidRecord:
    pid: int
    create_time: float
    executable: str
    port: int
    version: str
    argv: list[str]
    # The name the OS gives the recorded process: a wrapper script that execs the
    # server runs under the server's name, not the configured executable's.
    process_name: str = ""
    # The process group devctl started (the session of the spawned child); the
    # recorded server may be a member rather than its leader (a wrapper that forks).
    pgid: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_pidfile(path: Path) -> PidRecord | None:
    try:
        data = json.loads(path.read_text())
        return PidRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_pidfile(path: Path, record: PidRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record.to_json(), indent=2))
    tmp.replace(path)


def is_ours(record: PidRecord) -> bool:
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


def live_record(path: Path, *, clean: bool = False) -> tuple[PidRecord | None, bool]:
    """(record, stale): the live record or None; stale is True for a dead or garbled pidfile.

    Only ``clean=True`` (up and down, under the data dir's lock) removes a stale
    pidfile; read-only commands leave it for them to report.
    """
    record = read_pidfile(path)
    if record is not None and is_ours(record):
        return record, False
    stale = path.exists()
    if stale and clean:
        path.unlink(missing_ok=True)
    return None, stale


def spawn(argv: Sequence[str], log_path: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start a detached process (own session, no terminal) logging to log_path.

    Returns the process and the log offset where this run's output begins. Keep
    the Popen while waiting for start-up: it holds the exit status if the server
    dies (once dropped, the subprocess module may reap the child silently).
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


def stop(record: PidRecord, timeout: float) -> str:
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
    exec'd the server under another name): an unreaped child's pid cannot be reused.
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
    # The server runs in the session devctl started for it (start_new_session):
    # signalling that group also reaches a wrapper around it or a helper it forked.
    try:
        if os.getpgid(pid) == group:
            os.killpg(group, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def listener(root_pid: int, port: int) -> psutil.Process | None:
    """The process of root_pid's session that listens on port: the server itself,
    also when a wrapper script started it (as root_pid, or as its child)."""

    def listens(conns: list[Any]) -> bool:
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns
        )

    try:
        root = psutil.Process(root_pid)
        candidates = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    for proc in candidates:
        with contextlib.suppress(psutil.Error):
            if listens(proc.net_connections(kind="tcp")):
                return proc
    # A server that left the process tree (daemonised) is still in the session.
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        with contextlib.suppress(psutil.Error, OSError):
            if conn.pid and listens([conn]) and os.getsid(conn.pid) == root_pid:
                return psutil.Process(conn.pid)
    return None


def _reap(pid: int) -> None:
    # Only possible when the process is our child (tests that start engines
    # in-process); for detached servers init reaps them.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR mirrors what servers set, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_owner(port: int) -> str | None:
    """'name (pid N)' of the process listening on port, where it can be found."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            if conn.pid is None:
                return None
            try:
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return None


def free_port() -> int:
    """A port the OS considers free right now (used by tests and --redis-port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail_file(path: Path, lines: int, *, start: int = 0, end: int | None = None) -> list[str]:
    """The last ``lines`` lines of a text file between byte offsets start and end.

    Reads backwards from the end in blocks, so a large log is not read whole.
    """
    if lines <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell() if end is None else min(end, handle.tell())
            block = 8192
            data = b""
            position = size
            while position > start and data.count(b"\n") <= lines:
                step = min(block, position - start)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    return text[-lines:]
