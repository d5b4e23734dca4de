"""Prometheus metrics of one API instance, and the ASGI middleware that counts requests.

Requests are labelled by route template (``/request/send/{status}/{toUserId}``), never
by raw path, so a scan of random URLs cannot grow the series without bound (all
unmatched paths are ``route="unmatched"``). The outbox, cache and producer numbers
are read when scraped, not kept up to date on every request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Milliseconds matter here: the targets are a few ms at p99.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "devconnect_http_requests",
            "HTTP requests answered, by method, route template and status",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "devconnect_http_request_duration_seconds",
            "Time from request start to the last byte of the answer",
            ("method", "route"),
            buckets=_BUCKETS,
            registry=self.registry,
        )

        self.outbox_delivery = Histogram(
            "devconnect_outbox_delivery_seconds",
            "Time from an event's commit (outbox row) to the broker's acknowledgement",
            buckets=(
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1.0,
                2.5,
                5.0,
                10.0,
                30.0,
                60.0,
                300.0,
            ),
            registry=self.registry,
        )

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)


class SnapshotCollector(Collector):
    """Gauges read at scrape time from a callable returning {name: (help, value)}."""

    def __init__(self, read: Callable[[], dict[str, tuple[str, float | None]]]):
        self._read = read

    def collect(self) -> Any:
        for name, (help_text, value) in self._read().items():
            if value is None:
                continue
            family = GaugeMetricFamily(name, help_text)
            family.add_metric([], float(value))
            yield family


class RequestMetrics:
    """Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before reading them whole."""

    def __init__(self, app: ASGIApp, limit: int, body_timeout: float = 15.0):
        self.app = app
        self.limit = limit
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        seen = 0
        complete = False

        async def counting_receive() -> Message:
            # A body without Content-Length (chunked) is counted as it arrives; FastAPI
            # passes an HTTPException from here through to the error handlers. A body
            # that stops arriving would hold the connection for ever: it gets 408.
            nonlocal seen, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                raise HTTPException(408, "the request body did not arrive in time") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, f"the request body is larger than {self.limit} bytes")
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, counting_receive, send)


async def _too_large(send: Send, limit: int) -> None:
    import json

    message = f"the request body is larger than {limit} bytes"
    body = json.dumps({"message": message, "error": {"code": "too-large", "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
