"""Shared fixtures: one real local stack (Valkey + Tansu) for the whole test session.

The stack runs on free ports in a temporary data dir and is always stopped, even
when tests fail or the run is interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from devctl.clients.endpoints import Endpoints
from devctl.clients.redis_client import make_redis
from devctl.config.loader import Settings, load_settings
from devctl.engines.local import LocalEngine
from devctl.engines.processes import free_port, read_pidfile, stop


def pytest_configure(config: pytest.Config) -> None:
    """Keep the tests (and every devctl they start) away from the user's own contexts
    file (~/.config/devctl/contexts.yaml): an active protected context there would
    refuse the tests' destructive commands, and the help examples would edit it."""
    import tempfile

    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="devctl-tests-config-")
    os.environ.pop("DEVCTL_CONTEXTS_FILE", None)
    os.environ.pop("DEVCTL_CONTEXT", None)


# A test run started as a background job (`make test &`, nohup, a CI step without job
# control) inherits SIGINT ignored, and so would every devctl it starts: the Ctrl-C
# tests would wait for ever. A handled signal is reset to the default in a child, so
# handling it here gives the children a normal Ctrl-C.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def running(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """A devctl subprocess that is killed if the test leaves it running (e.g. fails)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def interrupt(proc: subprocess.Popen[str], timeout: float = 10) -> tuple[str, str]:
    """Ctrl-C a devctl subprocess; its stdout and stderr once it has exited."""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return out, err


@dataclass
class Stack:
    settings: Settings
    endpoints: Endpoints
    engine: LocalEngine
    data_dir: Path

    @property
    def env(self) -> dict[str, str]:
        """Environment that points a `devctl` subprocess at this stack."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))
        }
        env.update(
            DEVCTL_DATA_DIR=str(self.data_dir),
            DEVCTL_REDIS_PORT=str(self.settings.redis.port),
            DEVCTL_KAFKA_PORT=str(self.settings.kafka.port),
        )
        return env

    def redis(self, decode: bool = True) -> redis.Redis:
        return make_redis(self.endpoints, self.settings, decode=decode)


def stack_settings(data_dir: Path, cwd: Path, **extra: object) -> Settings:
    flags = {
        "data_dir": (str(data_dir), "--data-dir"),
        "redis.port": (free_port(), "--redis-port"),
        "kafka.port": (free_port(), "--kafka-port"),
    }
    flags.update({k: (v, k) for k, v in extra.items()})
    return load_settings(flags=flags, cwd=cwd, environ={})


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    settings = stack_settings(root / "data", root)
    engine = LocalEngine(settings)
    records = []
    try:
        result = engine.up()
        records = [
            r for s in ("redis", "kafka") if (r := read_pidfile(engine.pidfile(s))) is not None
        ]
        from devctl.streams.topics import TopicAdmin

        admin = TopicAdmin(result.endpoints, settings)
        admin.apply(admin.plan(settings.topics))
        yield Stack(settings, result.endpoints, engine, root / "data")
    finally:
        engine.down()
        # If the data dir vanished meanwhile, down() found no pidfiles: stop by record.
        for record in records:
            stop(record, 5)


@pytest.fixture
def unique() -> str:
    """A short unique name for keys, topics and groups of one test."""
    return uuid.uuid4().hex[:10]
