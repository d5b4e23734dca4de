"""Fixtures of the consumer tests: a registered consumer as a real process on the test stack.

    proc = consumer_process("notifications", group="g-" + unique)
    proc.wait_joined()               # its group has its partitions
    ...publish, wait for effects...
    proc.stop()                      # SIGTERM, as `devctl serve` stops it; returns the status
    proc.kill()                      # SIGKILL, as a crash

Each process runs ``python -m devctl.consumers NAME`` with an environment pointing
at the session stack, its own Kafka group id (``DEVCTL_KAFKA_GROUP_ID``) and info
logs in a file. Before the first start, the consumer's group is committed at the
current end of its topics (``start_at_end``): the shared topics hold what other tests
published, which a new group would otherwise read from the beginning. Every process
is killed at teardown, whatever happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from devctl.clients.kafka_client import common_conf
from devctl.events.producer import EventProducer
from devctl.streams.offsets import end_offsets
from tests.conftest import Stack


@dataclass
class ConsumerProcess:
    """One ``python -m devctl.consumers NAME`` process and its log."""

    name: str
    group: str  # the Kafka consumer group it joins
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[str] | None = None
    starts: int = 0
    logs: list[str] = field(default_factory=list)  # of earlier runs

    def start(self) -> ConsumerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self.proc is not None:
            self.logs.append(self.log())
        self.starts += 1
        with self.log_path.open("w") as handle:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def all_logs(self) -> str:
        return "\n".join([*self.logs, self.log()])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if not self.running():
                raise AssertionError(f"{self.name} exited before {text!r}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {text!r} in {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def wait_joined(self, timeout: float = 60) -> None:
        """Until the group assigned it partitions (the runtime logs ``<group>: assigned``)."""
        self.wait_for_log(f"{self.group}: assigned", timeout)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"{self.name} did not stop on SIGTERM:\n{self.log()}"
                ) from None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (its whole session) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def commit_offsets(stack: Stack, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit ``offsets`` for ``group`` (which must have no members) without joining it."""
    conf = common_conf(stack.endpoints, stack.settings)
    conf.update({"group.id": group, "enable.auto.commit": False})
    committer = Consumer(conf)
    try:
        committer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )
    finally:
        committer.close()


def committed(
    stack: Stack, group: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The offsets ``group`` committed (negative: none)."""
    conf = common_conf(stack.endpoints, stack.settings)
    conf.update({"group.id": group, "enable.auto.commit": False})
    reader = Consumer(conf)
    try:
        found = reader.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
    finally:
        reader.close()
    return {(tp.topic, tp.partition): tp.offset for tp in found}


def topic_ends(stack: Stack, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """The true end offset of every partition of ``topics``."""
    partitions_of = {spec.name: spec.partitions for spec in stack.settings.topics}
    wanted = [(topic, p) for topic in topics for p in range(partitions_of[topic])]
    ends = end_offsets(stack.endpoints, stack.settings, wanted)
    return {tp: found.high for tp, found in ends.items()}


def caught_up(stack: Stack, group: str, ends: dict[tuple[str, int], int]) -> bool:
    """Whether ``group`` committed at least ``ends`` on every partition."""
    done = committed(stack, group, ends)
    return all(done[tp] >= end for tp, end in ends.items())


def start_at_end(stack: Stack, group: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """Commit ``group`` at the true end of every partition of ``topics``; the offsets."""
    ends = topic_ends(stack, topics)
    commit_offsets(stack, group, ends)
    return ends


@pytest.fixture
def consumer_process(stack: Stack, tmp_path: Path) -> Iterator[Callable[..., ConsumerProcess]]:
    """Start a registered consumer (see the module docstring); all are killed at teardown.

    ``consumer_process(name, group_id=..., topics=[...], env={...}, config={...})``:
    ``config`` is written as the process's config file (DEVCTL_CONFIG); ``group_id`` is
    the Kafka group id setting the consumer derives its group from, ``group`` the group it
    joins (default ``<group_id>.<name>``), ``topics`` the topics to start at the end of
    (none: start where the group is).
    """
    made: list[ConsumerProcess] = []

    def start(
        name: str,
        *,
        group_id: str,
        group: str | None = None,
        topics: Iterable[str] = (),
        env: dict[str, str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> ConsumerProcess:
        group = group or f"{group_id}.{name}"
        topics = list(topics)
        if topics:
            start_at_end(stack, group, topics)
        full_env = dict(stack.env)
        full_env.update(DEVCTL_KAFKA_GROUP_ID=group_id, DEVCTL_LOG_LEVEL="info")
        if config:  # keys that have no environment name (e.g. events.consumer_batch_size)
            path = tmp_path / f"{name}-{len(made)}.yaml"
            path.write_text(yaml.safe_dump(config))
            full_env["DEVCTL_CONFIG"] = str(path)
        full_env.update(env or {})
        process = ConsumerProcess(
            name,
            group,
            [sys.executable, "-m", "devctl.consumers", name],
            full_env,
            tmp_path / f"{name}-{len(made)}.log",
        )
        made.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in made:
            process.kill()


@pytest.fixture
def event_producer(stack: Stack) -> Iterator[EventProducer]:
    """A producer on the test stack, closed afterwards."""
    events = EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 5})
    try:
        yield events
    finally:
        events.close(5)


def wait_until(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
