"""Fixtures of the events tests: private topics on the shared stack, the CLI as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import make_admin
from devctl.config.loader import Settings
from devctl.engines.local import LocalEngine
from devctl.events.producer import EventProducer
from tests.conftest import stack_settings

DEVCTL = [sys.executable, "-m", "devctl"]


@pytest.fixture
def make_topic(stack: Any, unique: str) -> Iterator[Callable[..., str]]:
    """Create topics of this test (optionally with their .dlq); all are deleted afterwards."""
    admin = make_admin(stack.endpoints, stack.settings)
    made: list[str] = []

    def make(name: str = "t", partitions: int = 3, dead_letter: bool = False) -> str:
        topic = f"ev-{name}-{unique}"
        wanted = [topic] + ([f"{topic}.dlq"] if dead_letter else [])
        futures = admin.create_topics([NewTopic(t, partitions, 1) for t in wanted])
        for t in wanted:
            futures[t].result(timeout=10)
            made.append(t)
        return topic

    yield make
    if made:
        for future in admin.delete_topics(made, request_timeout=10).values():
            future.result(timeout=20)


@pytest.fixture
def producer(stack: Any) -> Iterator[EventProducer]:
    events = EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 20})
    try:
        yield events
    finally:
        events.close(5)


@pytest.fixture
def devctl(stack: Any) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the devctl CLI against the session stack; returns the completed process."""

    def run(
        *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*DEVCTL, *args],
            env={**stack.env, "COLUMNS": "200", "NO_COLOR": "1"},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


@dataclass
class OwnStack:
    """A stack of one test's own, on fixed ports, to stop and start under a producer."""

    engine: LocalEngine
    settings: Settings
    endpoints: Endpoints
    topic: str
    producers: list[EventProducer] = field(default_factory=list)

    def create_topic(self) -> None:
        # Also after every restart: the embedded broker keeps topics in memory only.
        admin = make_admin(self.endpoints, self.settings)
        admin.create_topics([NewTopic(self.topic, 1, 1)])[self.topic].result(timeout=10)

    def kill_broker(self) -> None:
        """SIGKILL the broker (as a crash would) and wait until it is gone."""
        from devctl.engines.processes import has_exited, read_pidfile

        record = read_pidfile(self.engine.pidfile("kafka"))
        assert record is not None
        os.kill(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not has_exited(record.pid):
            assert time.monotonic() < deadline, "the killed broker did not exit"
            time.sleep(0.05)

    def start_again(self) -> None:
        """`up` on the same ports, once the kernel lets the killed broker's port go."""
        from devctl.errors import PortInUse

        deadline = time.monotonic() + 15
        while True:
            try:
                self.engine.up()
                return
            except PortInUse:
                assert time.monotonic() < deadline, "the broker's port was not released"
                time.sleep(0.2)

    def producer(self, **kwargs: Any) -> EventProducer:
        """A producer that reconnects fast; closed before the stack stops."""
        overrides = {"reconnect.backoff.max.ms": 200, "linger.ms": 5}
        made = EventProducer(self.endpoints, self.settings, **kwargs, **overrides)
        self.producers.append(made)
        return made


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Callable[..., OwnStack]]:
    """Start a stack of this test's own with one topic; producers and stack always stop."""
    started: list[OwnStack] = []

    def start(topic: str, delivery_timeout_ms: int) -> OwnStack:
        settings = stack_settings(
            tmp_path / "data",
            tmp_path,
            # Tansu waits for connected clients on SIGTERM; a short grace stops it like a crash.
            **{"events.delivery_timeout_ms": delivery_timeout_ms, "local.stop_timeout": 0.5},
        )
        engine = LocalEngine(settings)
        stack = OwnStack(engine, settings, engine.up().endpoints, topic)
        started.append(stack)
        stack.create_topic()
        return stack

    yield start
    for stack in started:
        for made in stack.producers:
            made.close(1)
        stack.engine.down()
