"""HTTP probes of a child's health and readiness URLs.

http.client rather than urllib: urllib honours http_proxy, and a proxy in the
environment must never stand between devctl and a process on this machine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    """What a URL answered: status and JSON body (None if not JSON), or why it did not."""

    status: int | None
    latency_ms: float | None = None
    body: Any = None
    error: str | None = None
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200


def get(url: str, timeout: float = 2.0) -> Answer:
    """GET ``url``; never raises: a refused connection or a timeout is an Answer with error."""
    # Here, not at the top: http.client costs ~14 ms to import, and `devctl status`
    # imports this module whether or not a serve runs.
    import http.client

    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        raw = response.read()
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        return Answer(None, error=_reason(exc))
    finally:
        connection.close()
    latency = (time.perf_counter() - started) * 1000
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    checks = body.get("checks") if isinstance(body, dict) else None
    return Answer(status, latency, body, checks=checks if isinstance(checks, dict) else {})


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "no answer (timed out)"
    return str(exc) or type(exc).__name__


def connect_host(host: str) -> str:
    """The address to reach a server listening on ``host`` (a wildcard is reached on loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def url(host: str, port: int, path: str = "") -> str:
    """http://host:port/path, with an IPv6 address in brackets."""
    address = connect_host(host)
    if ":" in address:
        address = f"[{address}]"
    return f"http://{address}:{port}{path}"
