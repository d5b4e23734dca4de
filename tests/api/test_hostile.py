"""Hostile input: Schemathesis against the OpenAPI document of a real instance.

Property-based requests (wrong types, unknown fields, missing fields, huge and odd
Unicode values, every operation with and without a session): no answer may be a
5xx, and every answer must match the document (status codes, content types,
bodies). Run on SQLite; the database backend does not change request handling.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import STRONG_PASSWORD, ApiServer, start_api, stop_api
from tests.conftest import Stack

pytestmark = pytest.mark.slow

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)


@pytest.fixture(scope="module")
def hostile_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("hostile")
    server = start_api(
        stack,
        f"sqlite:///{root / 'hostile.db'}",
        root / "api.log",
        extra_env={"DEVCTL_API_BODY_TIMEOUT": "1.5"},
    )
    try:
        yield server
    finally:
        stop_api(server)


def _schemathesis(api: ApiServer, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{api.url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        "15",
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "20261201",
        "--no-color",
        "--workers",
        "2",
        "--generation-database",
        "none",
        "--report-dir",
        str(tmp_path),
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_no_5xx_and_no_schema_violation_with_a_session(
    hostile_api: ApiServer, tmp_path: Path
) -> None:
    client = hostile_api.client()
    answer = client.post(
        "/signup",
        json={
            "firstName": "Fuzz",
            "emailId": f"f{uuid.uuid4().hex[:10]}@example.com",
            "password": STRONG_PASSWORD,
        },
    )
    assert answer.status_code == 200
    token = client.cookies["token"]
    # Logging out (or changing the password) would end the session the run uses.
    result = _schemathesis(
        hostile_api,
        tmp_path,
        "--header",
        f"Authorization: Bearer {token}",
        "--exclude-path",
        "/logout",
        "--exclude-path",
        "/profile/password",
    )
    assert result.returncode == 0, (
        result.stdout[-6000:] + result.stderr[-2000:] + hostile_api.log()[-2000:]
    )
    assert "passed" in result.stdout.lower()


def test_no_5xx_and_no_schema_violation_without_a_session(
    hostile_api: ApiServer, tmp_path: Path
) -> None:
    result = _schemathesis(hostile_api, tmp_path)
    assert result.returncode == 0, (
        result.stdout[-6000:] + result.stderr[-2000:] + hostile_api.log()[-2000:]
    )


def test_a_body_that_stops_arriving_gets_408(hostile_api: ApiServer) -> None:
    host, port = hostile_api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"emailId":'
        )
        started = time.monotonic()
        answer = ""
        while "timeout" not in answer:
            chunk = conn.recv(65536).decode("latin-1")
            if not chunk:
                break
            answer += chunk
    assert answer.startswith("HTTP/1.1 408"), answer
    assert time.monotonic() - started < 8
    assert '"code":"timeout"' in answer
