"""A real API instance (uvicorn in a subprocess) on the test stack, per database backend.

Each test gets its own client bound to its own loopback source address
(127.x.y.z): the per-IP login limit then counts each test apart, as it would
count different users, without raising limits for the tests.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from devctl.engines.processes import free_port
from tests.conftest import Stack
from tests.db.postgres import postgres_server  # noqa: F401  (a fixture, used by name)

STRONG_PASSWORD = "Str0ng!pass"


@dataclass
class ApiServer:
    url: str
    proc: subprocess.Popen[str]
    log_path: Path
    database_url: str
    env: dict[str, str]
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, *, source: str | None = None, **kwargs: Any) -> httpx.Client:
        """An HTTP client from its own loopback address (see the module docstring)."""
        address = (
            source
            or f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        )
        transport = httpx.HTTPTransport(local_address=address)
        client = httpx.Client(base_url=self.url, transport=transport, timeout=30, **kwargs)
        self.clients.append(client)
        return client

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()


def start_api(
    stack: Stack,
    database_url: str,
    log_path: Path,
    *,
    name: str = "api-test",
    port: int | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 60,
) -> ApiServer:
    port = port or free_port()
    env = dict(stack.env)
    env.update(DEVCTL_DATABASE_URL=database_url, DEVCTL_LOG_LEVEL="info")
    env.update(extra_env or {})
    handle = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devctl.api",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--name",
            name,
        ],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    handle.close()
    server = ApiServer(f"http://127.0.0.1:{port}", proc, log_path, database_url, env)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_api(server)
            raise RuntimeError(f"the API did not answer /healthz in {timeout}s:\n{server.log()}")
        time.sleep(0.05)


def stop_api(server: ApiServer, timeout: float = 20) -> int:
    server.close_clients()
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
    return server.proc.returncode


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(
    request: pytest.FixtureRequest, stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """One API instance for a whole module, once on SQLite and once on PostgreSQL."""
    root = tmp_path_factory.mktemp(f"api-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'devconnect.db'}"
    else:
        postgres = request.getfixturevalue("postgres_server")
        url = postgres.create_database(f"api_{uuid.uuid4().hex[:10]}")
    server = start_api(stack, url, root / "api.log")
    try:
        yield server
    finally:
        stop_api(server)


@dataclass
class User:
    client: httpx.Client
    body: dict[str, Any]
    email: str
    password: str

    @property
    def id(self) -> str:
        return str(self.body["_id"])


@pytest.fixture
def signup(api: ApiServer) -> Callable[..., User]:
    """Make a new user, logged in on a client of its own."""

    def make(**fields: Any) -> User:
        client = api.client()
        email = f"u{uuid.uuid4().hex[:12]}@example.com"
        body = {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "emailId": email,
            "password": STRONG_PASSWORD,
        }
        body.update(fields)
        answer = client.post("/signup", json=body)
        assert answer.status_code == 200, answer.text
        return User(client, answer.json(), body["emailId"], body["password"])

    return make
