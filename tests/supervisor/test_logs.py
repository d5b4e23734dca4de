"""Per-child log files: written by the supervisor's sink, read back by `devctl logs`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from devctl.supervisor.logs import (
    ChildLogs,
    api_log_names,
    follow_logs,
    log_names,
    log_path,
    tail_logs,
)
from devctl.supervisor.spec import Event


def test_lines_and_events_land_in_each_childs_file(tmp_path: Path) -> None:
    logs = ChildLogs(tmp_path)
    for name in ("api-10", "api-2", "notifications"):
        logs.line(name, f"hello from {name}")
    logs.event(Event("exited", "api-2", "api-2 exited (exit code 1) after 0.2s"))
    logs.event(Event("shutdown", None, "stopping"))  # not about a child: in no child's file
    logs.close()
    assert log_names(tmp_path) == ["api-10", "api-2", "notifications"]
    assert api_log_names(tmp_path) == ["api-2", "api-10"]  # by instance number
    lines = log_path(tmp_path, "api-2").read_text().splitlines()
    assert lines[0] == "hello from api-2"
    assert lines[1].startswith("--- devctl: api-2 exited (exit code 1) after 0.2s at ")
    assert tail_logs(tmp_path, ["api-2", "api-10"], 1)[1] == ("api-10", "hello from api-10")


def test_follow_gives_the_last_lines_then_new_ones_whole(tmp_path: Path) -> None:
    logs = ChildLogs(tmp_path)
    logs.line("api-1", "old 1")
    logs.line("api-1", "old 2")
    logs.line("api-2", "old 3")
    got: list[tuple[str, str]] = []
    done = threading.Event()

    def read() -> None:
        for item in follow_logs(tmp_path, ["api-1", "api-2"], 1, poll=0.02):
            got.append(item)
            if len(got) == 4:
                done.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.2)
    with open(log_path(tmp_path, "api-2"), "a") as handle:
        handle.write("half")  # caught mid-write: not a line yet
        handle.flush()
        time.sleep(0.1)
        handle.write(" and half\n")
    logs.line("api-1", "new")
    assert done.wait(5), got
    logs.close()
    assert got[:2] == [("api-1", "old 2"), ("api-2", "old 3")]
    assert sorted(got[2:]) == [("api-1", "new"), ("api-2", "half and half")]
