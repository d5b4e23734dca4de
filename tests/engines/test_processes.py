"""Pidfiles, identity checks and stopping: never signal a process that is not ours."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psutil

from devctl.engines.processes import (
    PidRecord,
    is_ours,
    live_record,
    port_is_free,
    port_owner,
    spawn,
    stop,
    tail_file,
    write_pidfile,
)


def _spawn(argv: list[str], tmp_path: Path) -> psutil.Process:
    popen, _offset = spawn(argv, tmp_path / "log", tmp_path)
    return psutil.Process(popen.pid)


def _record(proc: psutil.Process, executable: str) -> PidRecord:
    return PidRecord(proc.pid, proc.create_time(), executable, 0, "test", [])


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    proc = _spawn(["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"], tmp_path)
    record = _record(proc, "/bin/sh")
    time.sleep(0.2)  # let the trap be installed
    started = time.monotonic()
    outcome = stop(record, timeout=0.5)
    assert outcome.startswith("killed")
    assert time.monotonic() - started < 5
    assert not is_ours(record)


def test_stop_with_sigterm(tmp_path: Path) -> None:
    proc = _spawn(["sleep", "30"], tmp_path)
    record = _record(proc, "/usr/bin/sleep")
    assert is_ours(record)
    assert stop(record, timeout=5) == "stopped"
    assert stop(record, timeout=5) == "not running"


def test_identity_needs_matching_start_time_and_executable(tmp_path: Path) -> None:
    proc = _spawn(["sleep", "30"], tmp_path)
    try:
        assert is_ours(_record(proc, "/usr/bin/sleep"))
        reused = PidRecord(proc.pid, proc.create_time() - 100, "/usr/bin/sleep", 0, "", [])
        assert not is_ours(reused)  # same pid, started at another time: a stranger
        other_binary = _record(proc, "/usr/bin/valkey-server")
        assert not is_ours(other_binary)
        assert stop(other_binary, timeout=1) == "not running"
        assert proc.is_running()
    finally:
        proc.kill()


def test_live_record_removes_stale_and_garbage_pidfiles(tmp_path: Path) -> None:
    path = tmp_path / "run" / "x.pid"
    write_pidfile(path, PidRecord(2**22 + 11, 0.0, "/bin/none", 1, "", []))
    assert live_record(path) == (None, True)
    assert path.exists(), "read-only callers leave the stale pidfile for up/down to report"
    assert live_record(path, clean=True) == (None, True)
    assert not path.exists()
    path.write_text("not json")
    assert live_record(path, clean=True) == (None, True)
    assert live_record(path, clean=True) == (None, False)


def test_port_helpers_name_the_owner() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        assert not port_is_free(port)
        owner = port_owner(port)
        assert owner is not None and f"pid {psutil.Process().pid}" in owner
    finally:
        sock.close()
    assert port_is_free(port)


def test_tail_file_reads_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i}\n" for i in range(20000)))
    assert tail_file(path, 3) == ["line 19997", "line 19998", "line 19999"]
    assert tail_file(path, 0) == []
    assert tail_file(tmp_path / "missing.log", 5) == []
