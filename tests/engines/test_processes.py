"""Pidfiles, identity checks and stopping: never signal a process that is not ours."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path

import psutil

from devctl.processes import (
    ProcessRecord,
    free_port,
    is_ours,
    live_record,
    port_is_free,
    port_owner,
    read_pidfile,
    spawn,
    stop,
    tail_file,
    write_pidfile,
)


def _spawn(argv: list[str], tmp_path: Path) -> psutil.Process:
    popen, _offset = spawn(argv, tmp_path / "log", tmp_path)
    return psutil.Process(popen.pid)


def _record(proc: psutil.Process, executable: str) -> ProcessRecord:
    return ProcessRecord("test", proc.pid, proc.create_time(), executable)


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
        reused = ProcessRecord("test", proc.pid, proc.create_time() - 100, "/usr/bin/sleep")
        assert not is_ours(reused)  # same pid, started at another time: a stranger
        other_binary = _record(proc, "/usr/bin/valkey-server")
        assert not is_ours(other_binary)
        assert stop(other_binary, timeout=1) == "not running"
        assert proc.is_running()
    finally:
        proc.kill()


def test_live_record_removes_stale_and_garbage_pidfiles(tmp_path: Path) -> None:
    path = tmp_path / "run" / "x.pid"
    write_pidfile(path, ProcessRecord("x", 2**22 + 11, 0.0, "/bin/none"))
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


def test_a_pidfile_round_trips_with_optional_and_extra_fields(tmp_path: Path) -> None:
    worker = ProcessRecord("consumer-analytics", 4242, 1.5, "/usr/bin/python3", ["python3", "-m"])
    server = ProcessRecord(
        "api", 4243, 2.5, "/usr/bin/python3", port=8000, version="1.0", extra={"workers": 2}
    )
    for record in (worker, server):
        path = tmp_path / f"{record.name}.pid"
        write_pidfile(path, record)
        assert read_pidfile(path) == record
    assert json.loads((tmp_path / "api.pid").read_text())["format"] == 2


def test_a_pidfile_in_the_old_format_is_still_recognised(tmp_path: Path) -> None:
    """What `devctl up` wrote before the general record: no format, no name."""
    proc = _spawn(["sleep", "30"], tmp_path)
    path = tmp_path / "run" / "redis.pid"
    path.parent.mkdir()
    old = {
        "pid": proc.pid,
        "create_time": proc.create_time(),
        "executable": "/usr/bin/sleep",
        "port": 6399,
        "version": "valkey 8.1.1",
        "argv": ["/usr/bin/sleep", "30"],
        "process_name": "sleep",
        "pgid": proc.pid,
    }
    path.write_text(json.dumps(old, indent=2))
    try:
        record, stale = live_record(path)
        assert not stale and record is not None
        assert (record.name, record.pid, record.port, record.version) == (
            "redis",
            proc.pid,
            6399,
            "valkey 8.1.1",
        )
        assert (record.pgid, record.process_name, record.extra) == (proc.pid, "sleep", {})
        assert stop(record, timeout=5) == "stopped"
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def test_garbled_pidfiles_are_no_records(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    good = {"pid": 5, "create_time": 1.0, "executable": "/bin/x"}
    for bad in (
        [],
        {**good, "pid": "5"},
        {**good, "pid": True},
        {**good, "pid": 0},
        {**good, "create_time": None},
        {**good, "executable": 3},
        {**good, "argv": "sleep 30"},
        {**good, "port": 70000},
        {**good, "extra": []},
    ):
        path.write_text(json.dumps(bad))
        assert read_pidfile(path) is None, bad
    path.write_text(json.dumps(good))
    assert read_pidfile(path) == ProcessRecord("x", 5, 1.0, "/bin/x")


def test_the_old_module_still_exports_the_helpers(tmp_path: Path) -> None:
    from devctl.engines import processes as old

    record = old.PidRecord(7, 1.0, "/usr/bin/tansu", 9092, "tansu 0.6", ["tansu"])
    path = tmp_path / "kafka.pid"
    old.write_pidfile(path, record)
    loaded = old.read_pidfile(path)
    assert loaded is not None and (loaded.name, loaded.port) == ("kafka", 9092)
    assert old.free_port is free_port
