"""Fixtures of the Redis-domain tests.

``state`` gives the services on the shared session stack under a key prefix of
their own, so tests never see each other's keys and nothing is flushed globally.
``private_redis`` is a Valkey of a test's own, for stopping, pausing and restarting
it; it is always killed at the end. ``round_trips`` counts what a block of code
sends to Redis, by wrapping (not replacing) the connection's send method.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from devctl.clients.endpoints import Endpoints
from devctl.clients.redis_client import make_redis
from devctl.config.loader import Settings, load_settings
from devctl.engines.local import find_binary
from devctl.engines.processes import free_port
from devctl.state import StateServices, from_settings


@pytest.fixture
def prefix(unique: str) -> str:
    return f"t{unique}:"


@pytest.fixture
def state(stack: Any, prefix: str) -> Iterator[StateServices]:
    services = from_settings(stack.settings, stack.endpoints, prefix=prefix)
    try:
        yield services
    finally:
        _purge(services.client, prefix)
        services.close()


def _purge(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def make_state(stack: Any, prefix: str) -> Iterator[Callable[..., StateServices]]:
    """Services with other state.* settings (same prefix as ``state``)."""
    made: list[StateServices] = []

    def make(**state_values: Any) -> StateServices:
        flags = {f"state.{k}": (v, k) for k, v in state_values.items()}
        flags.update(
            {k: (v, k) for k, v in stack.settings.values.items() if k.startswith("redis.")}
        )
        settings = load_settings(flags=flags, cwd=stack.settings.cwd, environ={})
        services = from_settings(settings, stack.endpoints, prefix=prefix)
        made.append(services)
        return services

    try:
        yield make
    finally:
        for services in made:
            _purge(services.client, prefix)
            services.close()


@dataclass
class PrivateRedis:
    """A Valkey server owned by one test."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    binary: str = field(default_factory=lambda: find_binary("redis", None).path)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.workdir / "valkey.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 10
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.2)
        try:
            while True:
                try:
                    probe.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError("private valkey did not start") from None
                    time.sleep(0.02)
        finally:
            probe.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.paused:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.paused = False
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def settings(self, cwd: Path, **values: Any) -> Settings:
        flags = {k: (v, k) for k, v in values.items()}
        flags["redis.url"] = (self.url, "redis.url")
        flags["engine"] = ("external", "--engine")
        return load_settings(flags=flags, cwd=cwd, environ={})

    def endpoints(self) -> Endpoints:
        return Endpoints("external", self.url, "127.0.0.1:1")

    def services(self, cwd: Path, **values: Any) -> StateServices:
        return from_settings(self.settings(cwd, **values), self.endpoints())

    def client(self, cwd: Path) -> redis.Redis:
        return make_redis(self.endpoints(), self.settings(cwd))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@dataclass
class Sent:
    round_trips: int = 0
    commands: list[str] = field(default_factory=list)


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Callable[[], Any]:
    """``with round_trips() as sent:`` counts sends (round trips) and commands of this thread."""
    original = redis.connection.AbstractConnection.send_packed_command
    active: dict[int, Sent] = {}

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent = active.get(threading.get_ident())
        if sent is not None:
            chunks = command if isinstance(command, list) else [command]
            raw = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
            parts = raw.decode("utf-8", "replace").split("\r\n")
            # RESP arrays: *N, $len, NAME, ... -> every command name follows a '*' line.
            names = [parts[i + 2].upper() for i, p in enumerate(parts[:-2]) if p.startswith("*")]
            if names != ["PING"]:  # the client's own periodic health check
                sent.round_trips += 1
                sent.commands.extend(names)
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)

    @contextmanager
    def measure() -> Iterator[Sent]:
        sent = Sent()
        active[threading.get_ident()] = sent
        try:
            yield sent
        finally:
            active.pop(threading.get_ident(), None)

    return measure
