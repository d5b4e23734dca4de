"""Run devctl the way a user does: as a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devctl.engines.processes import free_port, read_pidfile, stop


@dataclass
class Cli:
    cwd: Path
    data_dir: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
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
        # Belt and braces: if `down` itself failed, stop what the pidfiles name.
        for service in ("redis", "kafka"):
            record = read_pidfile(runner.data_dir / "run" / f"{service}.pid")
            if record is not None:
                stop(record, 5)
