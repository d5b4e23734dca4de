"""Per-child log files (``<data_dir>/logs/<child>.log``): writing them, reading them back.

The supervisor appends every output line of a child to its file, and its own
events about that child as ``--- devctl: ...`` lines, so `devctl logs api-1`
shows why an instance restarted next to what it printed.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from devctl.processes import tail_file

if TYPE_CHECKING:
    from devctl.supervisor.spec import Event

LOG_DIR = "logs"
SUPERVISOR_LOG = "serve.log"
_API_LOG = re.compile(r"^api-\d+$")


def log_path(data_dir: Path, name: str) -> Path:
    return data_dir / LOG_DIR / f"{name}.log"


class ChildLogs:
    """The files sink: pass ``line`` as on_line and ``event`` inside on_event."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._files: dict[str, IO[str]] = {}

    def _file(self, name: str) -> IO[str]:
        handle = self._files.get(name)
        if handle is None:
            path = log_path(self.data_dir, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            self._files[name] = handle
        return handle

    def line(self, name: str, line: str) -> None:
        handle = self._file(name)
        handle.write(line + "\n")
        handle.flush()

    def event(self, event: Event) -> None:
        if event.child is None:
            return
        self.line(event.child, f"--- devctl: {event.message} at {time.ctime()}")

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def log_names(data_dir: Path) -> list[str]:
    """The children that left a log in this data dir (api-1, api-2, consumers...)."""
    directory = data_dir / LOG_DIR
    if not directory.is_dir():
        return []
    return sorted(
        path.stem
        for path in directory.glob("*.log")
        if path.name != SUPERVISOR_LOG and not path.name.startswith(".")
    )


def api_log_names(data_dir: Path) -> list[str]:
    return sorted((n for n in log_names(data_dir) if _API_LOG.match(n)), key=_instance_number)


def _instance_number(name: str) -> int:
    return int(name.rpartition("-")[2])


def tail_logs(data_dir: Path, names: Iterable[str], lines: int) -> list[tuple[str, str]]:
    """The last ``lines`` lines of each child's log, one child after the other."""
    return [(name, line) for name in names for line in tail_file(log_path(data_dir, name), lines)]


def follow_logs(
    data_dir: Path, names: list[str], lines: int, *, poll: float = 0.2
) -> Iterator[tuple[str, str]]:
    """The last lines of each log, then new lines of any of them as they are written.

    A log that is replaced (a purge, then a new serve) is reopened.
    """
    handles: dict[str, IO[str]] = {}
    partial: dict[str, str] = {}
    try:
        for name in names:
            path = log_path(data_dir, name)
            try:
                handle: IO[str] = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
            except FileNotFoundError:
                continue
            size = os.fstat(handle.fileno()).st_size
            for line in tail_file(path, lines, end=size):
                yield name, line
            handle.seek(size)
            handles[name] = handle
        while True:
            quiet = True
            for name in names:
                handle_or_none = handles.get(name)
                if handle_or_none is None or _replaced(log_path(data_dir, name), handle_or_none):
                    if handle_or_none is not None:
                        handle_or_none.close()
                    try:
                        handles[name] = open(  # noqa: SIM115
                            log_path(data_dir, name), encoding="utf-8", errors="replace"
                        )
                    except FileNotFoundError:
                        handles.pop(name, None)
                        continue
                chunk = handles[name].readline()
                while chunk:
                    quiet = False
                    if not chunk.endswith("\n"):
                        # Caught mid-write: the rest of the line comes with the next read.
                        partial[name] = partial.get(name, "") + chunk
                        break
                    yield name, (partial.pop(name, "") + chunk).rstrip("\n")
                    chunk = handles[name].readline()
            if quiet:
                time.sleep(poll)
    finally:
        for handle in handles.values():
            handle.close()


def _replaced(path: Path, handle: IO[str]) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False
