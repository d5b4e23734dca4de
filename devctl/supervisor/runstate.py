"""The files a running supervisor keeps under the data dir, and reading them back.

    run/serve.lock   held (flock) by the supervisor for as long as it runs: one per data dir
    run/serve.json   the supervisor's record and a snapshot of its children, rewritten
                     on every change; removed when it stops
    run/serve-plan.json  what a detached supervisor runs (devctl.supervisor.daemon)
    logs/serve.log   a detached supervisor's own output (its events)

A state file whose supervisor is gone is stale: its children died with it (see
``devctl.supervisor.child``), so readers report nothing rather than old pids.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from devctl.errors import UsageError
from devctl.processes import ProcessRecord, is_ours
from devctl.supervisor.spec import ChildState

RUN_DIR = "run"
STATE_FILE = "serve.json"
LOCK_FILE = "serve.lock"
FORMAT = 1


def state_path(data_dir: Path) -> Path:
    return data_dir / RUN_DIR / STATE_FILE


def lock_path(data_dir: Path) -> Path:
    return data_dir / RUN_DIR / LOCK_FILE


@dataclass
class ServeState:
    """What run/serve.json holds: who supervises, how, and its children."""

    supervisor: ProcessRecord
    mode: str  # "foreground" | "detached"
    started_at: float
    ready: bool = False  # every API instance answered its health URL once
    stopping: bool = False
    shutdown_timeout: float = 30.0  # how long its graceful stop may take
    children: list[ChildState] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "supervisor": self.supervisor.to_json(),
            "mode": self.mode,
            "started_at": self.started_at,
            "ready": self.ready,
            "stopping": self.stopping,
            "shutdown_timeout": self.shutdown_timeout,
            "children": [c.to_json() for c in self.children],
        }

    @classmethod
    def from_json(cls, data: Any) -> ServeState | None:
        if not isinstance(data, dict) or not isinstance(data.get("supervisor"), dict):
            return None
        record = ProcessRecord.from_json(data["supervisor"])
        if record is None:
            return None
        try:
            children = [ChildState(**c) for c in data.get("children", [])]
            return cls(
                supervisor=record,
                mode=str(data.get("mode", "foreground")),
                started_at=float(data.get("started_at", record.create_time)),
                ready=bool(data.get("ready")),
                stopping=bool(data.get("stopping")),
                shutdown_timeout=float(data.get("shutdown_timeout", 30.0)),
                children=children,
            )
        except (TypeError, ValueError):
            return None


def self_record(name: str = "serve") -> ProcessRecord:
    """The record of this process, as the supervisor of a serve."""
    import sys

    me = psutil.Process()
    with me.oneshot():
        return ProcessRecord(
            name=name,
            pid=me.pid,
            create_time=me.create_time(),
            executable=sys.executable,
            argv=me.cmdline(),
            process_name=me.name(),
            pgid=os.getpgid(0),
        )


class StateFile:
    """Keeps run/serve.json current: pass ``update`` as the supervisor's on_change."""

    def __init__(self, data_dir: Path, mode: str, *, shutdown_timeout: float) -> None:
        self.path = state_path(data_dir)
        self.state = ServeState(
            supervisor=self_record(),
            mode=mode,
            started_at=time.time(),
            shutdown_timeout=shutdown_timeout,
        )

    def update(self, children: list[ChildState], ready: bool) -> None:
        self.state.children = children
        self.state.ready = ready
        self.write()

    def mark_stopping(self) -> None:
        self.state.stopping = True
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.state.to_json(), indent=2))
        tmp.replace(self.path)

    def remove(self) -> None:
        # Only our own: a later supervisor may have written the file since.
        current = read_state(self.path.parent.parent)
        if current is None or current.supervisor.pid == self.state.supervisor.pid:
            self.path.unlink(missing_ok=True)


def read_state(data_dir: Path) -> ServeState | None:
    """The state file as written, live or stale; None if missing or not a state file."""
    try:
        data = json.loads(state_path(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return ServeState.from_json(data)


def running_serve(data_dir: Path) -> ServeState | None:
    """The state of the serve running in this data dir, or None (also for a stale file)."""
    state = read_state(data_dir)
    if state is None or not is_ours(state.supervisor):
        return None
    return state


@contextlib.contextmanager
def serve_lock(data_dir: Path) -> Iterator[None]:
    """Hold run/serve.lock: refuse (UsageError naming its pid) if a serve already runs."""
    handle = _try_lock(data_dir)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def ensure_not_serving(data_dir: Path) -> None:
    """Raise the UsageError ``serve_lock`` would, without keeping the lock."""
    with serve_lock(data_dir):
        pass


def _try_lock(data_dir: Path) -> IO[str]:
    path = lock_path(data_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError as exc:
        raise UsageError(
            f"cannot create {path}: {exc.strerror}",
            hint="the data dir must be a writable directory",
            field="data_dir",
        ) from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        state = read_state(data_dir)
        who = (
            f" (pid {state.supervisor.pid}, {state.mode}, since {time.ctime(state.started_at)})"
            if state is not None
            else ""
        )
        raise UsageError(
            f"devctl serve is already running in {data_dir}{who}",
            hint="stop it first (Ctrl-C where it runs, or `devctl down`), "
            "or serve from another data dir",
            field="data_dir",
            data={"pid": state.supervisor.pid if state else None},
        ) from None
    return handle
