"""Fixtures of the events tests: private topics on the shared stack, the CLI as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic

from devctl.clients.kafka_client import make_admin
from devctl.events.producer import EventProducer

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
