"""Run devctl the way a user does: as a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from devctl.engines.processes import PidRecord, free_port, read_pidfile, stop


@dataclass
class Cli:
    cwd: Path
    data_dir: Path
    env: dict[str, str]
    # Every server seen in a pidfile, so teardown can stop it even if the data
    # dir was removed meanwhile (pytest prunes old temp dirs of concurrent runs).
    seen: dict[int, PidRecord] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        try:
            return self._run(args, timeout, env)
        finally:
            self.remember()

    def remember(self) -> None:
        for service in ("redis", "kafka"):
            record = read_pidfile(self.data_dir / "run" / f"{service}.pid")
            if record is not None:
                self.seen[record.pid] = record

    def _run(
        self, args: tuple[str, ...], timeout: float, env: dict[str, str]
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devctl", *args],
            cwd=self.cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def pids(self) -> dict[str, int]:
        out = {}
        for service in ("redis", "kafka"):
            record = read_pidfile(self.data_dir / "run" / f"{service}.pid")
            if record is not None:
                out[service] = record.pid
        return out


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """A private data dir and ports; whatever it started is stopped afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))}
    env.update(
        DEVCTL_DATA_DIR=str(tmp_path / "data"),
        DEVCTL_REDIS_PORT=str(free_port()),
        DEVCTL_KAFKA_PORT=str(free_port()),
        COLUMNS="200",
    )
    runner = Cli(tmp_path, tmp_path / "data", env)
    try:
        yield runner
    finally:
        runner.run("down")
        # Belt and braces: if `down` failed, stop whatever was seen running
        # (stop() checks each process is still the one recorded).
        for record in runner.seen.values():
            stop(record, 5)
        _stop_strays(tmp_path)


def _stop_strays(root: Path) -> None:
    """Kill any process still working inside the test's directory.

    The servers run with their cwd in the data dir; one that no pidfile names
    (a bug under test, e.g. a server behind a wrapper script) must not outlive
    the test.
    """
    for proc in psutil.process_iter():
        try:
            if Path(proc.cwd()).is_relative_to(root):
                proc.kill()
                proc.wait(5)
        except (psutil.Error, OSError):
            continue
