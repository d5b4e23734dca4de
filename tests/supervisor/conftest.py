"""Helpers of the supervisor tests: child programs (child.py), a recorder, a running supervisor.

Every supervisor a test starts is stopped when the test ends, and every child pid
it reported is killed if still alive, even when the test fails.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from devctl.supervisor import ChildSpec, Event, Outcome, RestartPolicy, Supervisor

CHILD = Path(__file__).with_name("child.py")

# Short delays so that crash loops take a fraction of a second.
FAST = RestartPolicy(
    initial_delay=0.05,
    max_delay=0.4,
    factor=2.0,
    stable_after=5.0,
    max_crashes=4,
    window=30.0,
    ready_timeout=10.0,
)


def child(name: str, mode: str, *args: object, **spec: Any) -> ChildSpec:
    """A ChildSpec running tests/supervisor/child.py MODE ARGS."""
    return ChildSpec(name, (sys.executable, str(CHILD), mode, *map(str, args)), **spec)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


@dataclass
class Recorder:
    lines: list[tuple[str, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    changes: int = 0

    def line(self, name: str, line: str) -> None:
        self.lines.append((name, line))

    def event(self, event: Event) -> None:
        self.events.append(event)

    def change(self, _children: object, _ready: bool) -> None:
        self.changes += 1

    def kinds(self, child: str | None = None) -> list[str]:
        return [e.kind for e in self.events if child is None or e.child == child]

    def of(self, kind: str, child: str | None = None) -> list[Event]:
        return [e for e in self.events if e.kind == kind and (child is None or e.child == child)]

    def pids(self) -> list[int]:
        return [e.data["pid"] for e in self.events if e.kind == "started"]


@dataclass
class Running:
    supervisor: Supervisor
    recorder: Recorder
    thread: threading.Thread
    result: dict[str, Outcome]

    def outcome(self, timeout: float = 30.0) -> Outcome:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the supervisor did not return"
        return self.result["outcome"]

    def stop(self, timeout: float = 30.0) -> Outcome:
        self.supervisor.stop()
        return self.outcome(timeout)


@contextlib.contextmanager
def supervising(
    specs: list[ChildSpec], policy: RestartPolicy = FAST, **options: Any
) -> Iterator[Running]:
    """A Supervisor running in a thread (no signal handlers); stopped on the way out."""
    recorder = Recorder()
    supervisor = Supervisor(
        specs,
        policy,
        on_line=recorder.line,
        on_event=recorder.event,
        on_change=recorder.change,
        **options,
    )
    result: dict[str, Outcome] = {}

    def run() -> None:
        result["outcome"] = supervisor.run(handle_signals=False)

    thread = threading.Thread(target=run, name="test-supervisor")
    thread.start()
    try:
        yield Running(supervisor, recorder, thread, result)
    finally:
        supervisor.stop()
        thread.join(30)
        if thread.is_alive():
            supervisor.stop()  # the second request kills what is left
            thread.join(10)
        kill_pids(recorder.pids())


def kill_pids(pids: list[int]) -> None:
    """Kill whatever of these test children still runs (a failed test's leftovers)."""
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if str(CHILD) in " ".join(proc.cmdline()):
                proc.kill()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def counter(tmp_path: Path) -> Path:
    return tmp_path / "counter"
