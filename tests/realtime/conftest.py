"""Two real API instances (uvicorn subprocesses) on one database, and Socket.IO clients.

The instances share the test stack's Redis, so Socket.IO rooms and presence span
them exactly as under `devctl serve --instances 2`. The presence lease is short
(2 s) so that a killed instance is swept within seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.api.conftest import STRONG_PASSWORD, ApiServer, start_api, stop_api
from tests.conftest import Stack

LEASE_TTL = 2


@dataclass
class Pair:
    a: ApiServer
    b: ApiServer
    database_url: str
    root: Path
    stack: Stack

    def restart(self, which: str) -> ApiServer:
        old: ApiServer = getattr(self, which)
        stop_api(old)
        server = start_api(
            self.stack,
            self.database_url,
            self.root / f"{which}-again.log",
            name=f"api-{which}",
            extra_env=realtime_env(self.root),
        )
        setattr(self, which, server)
        return server


def realtime_env(root: Path) -> dict[str, str]:
    config = root / "devctl.yaml"
    config.write_text(f"state:\n  presence_instance_ttl: {LEASE_TTL}\n")
    return {"DEVCTL_CONFIG": str(config), "DEVCTL_API_FRONTEND_URL": "http://127.0.0.1:5173"}


@pytest.fixture(scope="module")
def pair(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("realtime")
    url = f"sqlite:///{root / 'devconnect.db'}"
    env = realtime_env(root)
    a = start_api(stack, url, root / "a.log", name="api-a", extra_env=env)
    try:
        b = start_api(stack, url, root / "b.log", name="api-b", extra_env=env)
    except BaseException:
        stop_api(a)
        raise
    servers = Pair(a, b, url, root, stack)
    try:
        yield servers
    finally:
        stop_api(servers.a)
        stop_api(servers.b)


@dataclass
class Person:
    """A signed-up user and the Socket.IO clients opened for them."""

    id: str
    email: str
    cookie: str
    http: Any
    events: list[tuple[str, Any]] = field(default_factory=list)


def make_person(api: ApiServer) -> Person:
    client = api.client()
    email = f"rt{uuid.uuid4().hex[:12]}@example.com"
    answer = client.post(
        "/signup",
        json={
            "firstName": "Grace",
            "lastName": "Hopper",
            "emailId": email,
            "password": STRONG_PASSWORD,
        },
    )
    assert answer.status_code == 200, answer.text
    return Person(str(answer.json()["_id"]), email, client.cookies["token"], client)


def connect_people(api: ApiServer, one: Person, other: Person) -> None:
    """An accepted connection between two people (request by one, accepted by the other)."""
    sent = one.http.post(f"/request/send/interested/{other.id}")
    assert sent.status_code == 200, sent.text
    request_id = sent.json()["data"]["_id"]
    reviewed = other.http.post(f"/request/review/accepted/{request_id}")
    assert reviewed.status_code == 200, reviewed.text


class Sock:
    """A python-socketio AsyncClient recording every event it receives."""

    def __init__(self, person: Person, url: str, *, transports: list[str] | None = None):
        self.person = person
        self.url = url
        self.transports = transports
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.client.on("*", self._record)
        self.client.on("connect_error", self._refused)

    async def _refused(self, data: Any = None) -> None:
        self.events.append(("connect_error", data))

    async def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))

    async def connect(self, *, cookie: str | None = None, auth: Any = None) -> None:
        headers = {"Cookie": f"token={cookie if cookie is not None else self.person.cookie}"}
        await self.client.connect(
            self.url,
            headers=headers,
            auth=auth,
            transports=self.transports,
            wait_timeout=10,
        )

    def of(self, name: str) -> list[Any]:
        return [data for event, data in self.events if event == name]

    async def wait_for(self, name: str, count: int = 1, timeout: float = 10) -> list[Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.of(name)) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{name!r} x{count} not received in {timeout}s: {self.events}")
            await asyncio.sleep(0.02)
        return self.of(name)

    async def close(self) -> None:
        if self.client.connected:
            try:
                # A long-polling client's disconnect waits for its pending poll, which
                # the server holds up to its ping interval (25 s): do not wait that long.
                await asyncio.wait_for(self.client.disconnect(), 3)
            except TimeoutError:
                await self.client.eio.disconnect(abort=True)
