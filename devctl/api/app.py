"""The ASGI application: wiring, start-up and shutdown of one API instance.

Start-up applies pending migrations (safe with several instances starting at
once), opens the database, the Redis domain's asyncio face and the producer,
and starts the outbox relay. None of the servers has to answer for the instance
to start: a dead Redis or Kafka shows in ``/readyz`` and requests that need it
answer 503 quickly; the instance recovers by itself when the server returns.

Shutdown (uvicorn on SIGTERM/SIGINT: stop accepting, drain in-flight requests)
then flushes the relay and the producer within ``api.drain_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from devctl import __version__
from devctl.api import errors
from devctl.api.backend import Backend
from devctl.api.fastpath import ProfileViewFastPath
from devctl.api.metrics import ApiMetrics, BodyLimit, RequestMetrics, SnapshotCollector
from devctl.api.notification_routes import router as notification_router
from devctl.api.relay import OutboxRelay
from devctl.api.routes import COOKIE, router
from devctl.api.security import CookieSigner, load_secret
from devctl.config.loader import Settings

log = logging.getLogger("devctl.api")

EVENT_SOURCE = "/devconnect/api"
BODY_LIMIT = 1024 * 1024  # bytes; the largest real body (a profile) is a few KB
READY_TIMEOUT = 1.5  # seconds per dependency in /readyz (checked together)


def origins(settings: Settings) -> list[str]:
    return [o.strip().rstrip("/") for o in settings.api.frontend_url.split(",") if o.strip()]


def create_asgi(settings: Settings, *, instance: str = "api") -> Any:
    """The instance as uvicorn serves it: Socket.IO on ``/socket.io/``, the API elsewhere."""
    from devctl.realtime.server import asgi_app

    app = create_app(settings, instance=instance)
    return asgi_app(app.state.sio, app)


def create_app(settings: Settings, *, instance: str = "api") -> FastAPI:
    """One API instance on the stack ``settings`` point at (servers opened at start-up)."""
    from devctl.engines import select_engine
    from devctl.realtime.handlers import ChatEvents
    from devctl.realtime.liveness import Presence, new_instance_id
    from devctl.realtime.server import create_server

    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _running_backend(settings, app, metrics, instance):
            await presence.start()
            try:
                yield
            finally:
                await presence.stop()
                await sio.manager.close()

    app = FastAPI(
        title="DevConnect API (devctl)",
        version=__version__,
        description="The embedded DevConnect backend started by `devctl serve`. "
        "Errors: JSON `{message, error: {code, message, field?, hint?}}`.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.signer = CookieSigner(load_secret(settings.api.secret, settings.data_dir))
    app.state.instance = instance
    # The Socket.IO server exists before the backend (the lifespan opens that): its
    # handlers look the backend up when an event arrives.
    endpoints = select_engine(settings).endpoints(())
    sio = create_server(endpoints, settings, origins(settings))
    backend_now = lambda: getattr(app.state, "backend", None)  # noqa: E731
    presence = Presence(sio, backend_now, new_instance_id(instance))
    ChatEvents(sio, backend_now, app.state.signer, presence)
    app.state.sio = sio
    app.state.presence = presence
    errors.install(app)
    app.include_router(router)
    app.include_router(notification_router)
    _ops_routes(app, metrics)
    # Each add_middleware wraps what is there: the last added runs first. Outside in:
    # metrics (every answer counted), CORS (on every answer, the fast path's and a
    # 413 included), the body limit, the /profile/view fast path, the router.
    app.add_middleware(ProfileViewFastPath, cookie=COOKIE)
    app.add_middleware(BodyLimit, limit=BODY_LIMIT, body_timeout=settings.api.body_timeout)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins(settings),
        allow_credentials=True,
        allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization"],
        max_age=600,
    )
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


@contextlib.asynccontextmanager
async def _running_backend(
    settings: Settings, app: FastAPI, metrics: ApiMetrics, instance: str
) -> AsyncIterator[Backend]:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from devctl.db.engine import BEGIN_OPTION, database_url, make_engine
    from devctl.db.migrate import upgrade_async
    from devctl.engines import select_engine
    from devctl.events.producer import EventProducer
    from devctl.state.aio import async_from_settings

    url = database_url(settings)
    await upgrade_async(url)
    endpoints = select_engine(settings).endpoints(())
    # Request-sized timeouts: a hung PostgreSQL fails the request in seconds (503), not
    # after the 30 s the migrations may take.
    engine = make_engine(url, connect_timeout=3.0, pool_timeout=3.0, statement_timeout=3.0)
    state = await async_from_settings(settings, endpoints)
    producer = EventProducer(endpoints, settings, source=EVENT_SOURCE)
    relay = OutboxRelay(
        engine,
        producer,
        batch_size=settings.api.outbox_batch_size,
        lease=settings.api.outbox_lease,
        retention=settings.api.outbox_retention,
        owner=f"{instance}:{id(app):x}",
        on_delivered=metrics.outbox_delivery.observe,
    )
    backend = Backend(
        settings=settings,
        engine=engine,
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        # Reads begin DEFERRED on SQLite: in WAL mode they then never wait for a writer.
        read_sessions=async_sessionmaker(
            engine.execution_options(**{BEGIN_OPTION: "DEFERRED"}), expire_on_commit=False
        ),
        state=state,
        source=EVENT_SOURCE,
        wake_relay=relay.wake,
    )
    app.state.backend = backend
    app.state.relay = relay
    app.state.producer = producer
    metrics.add_collector(SnapshotCollector(lambda: _snapshot(app)))
    relay.start()
    _tune_gc()
    log.info("%s ready", instance)
    try:
        yield backend
    finally:
        # The whole stop fits in api.drain_timeout (the supervisor kills after that
        # plus a margin): half of it went to in-flight requests (uvicorn), the rest to
        # the relay and the producer.
        budget = shutdown_budget(settings.api.drain_timeout)
        await relay.stop(timeout=budget.relay)
        left = await asyncio.to_thread(producer.close, budget.producer)
        if left:
            log.error("%d events were not confirmed by Kafka; their outbox rows stay unsent", left)
        await state.close()
        await engine.dispose()


@dataclass(frozen=True)
class ShutdownBudget:
    requests: float  # uvicorn's graceful wait for in-flight requests
    relay: float  # the relay publishes what is committed
    producer: float  # the producer flushes what the relay handed it


def shutdown_budget(drain_timeout: float) -> ShutdownBudget:
    """Shares of ``api.drain_timeout``; together they stay within it."""
    return ShutdownBudget(
        requests=drain_timeout * 0.5,
        relay=drain_timeout * 0.3,
        producer=max(drain_timeout * 0.15, 0.1),
    )


def _tune_gc() -> None:
    """Keep the collector's pauses out of the request latency.

    Measured (docs/benchmarks.md): with the defaults, full collections walked every
    object the imports made (SQLAlchemy, pydantic, FastAPI, confluent-kafka) a few
    times a second under load, stalling all requests in flight for 50-100 ms (p99
    70 ms on a route whose median is 5 ms). Freezing what start-up made moves it out of
    the collector's sight; the larger first threshold makes young collections rarer.
    Reference cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _snapshot(app: FastAPI) -> dict[str, tuple[str, float | None]]:
    relay: OutboxRelay = app.state.relay
    backend: Backend = app.state.backend
    hits, misses = backend.user_cache_hits, backend.user_cache_misses
    backlog = getattr(app.state, "outbox_backlog", (None, None))
    producer = app.state.producer
    presence = app.state.presence
    return {
        "devconnect_socketio_connections": (
            "Socket.IO connections this instance holds",
            len(presence.sockets),
        ),
        "devconnect_socketio_users": (
            "Distinct users with a Socket.IO connection on this instance",
            len(set(presence.sockets.values())),
        ),
        "devconnect_presence_transitions_total": (
            "Presence transitions (online/offline) this instance announced",
            presence.announced,
        ),
        "devconnect_outbox_backlog": (
            "Outbox rows not yet published (at the last scrape)",
            backlog[0],
        ),
        "devconnect_outbox_oldest_age_seconds": (
            "Age of the oldest unpublished outbox row",
            backlog[1] or 0.0,
        ),
        "devconnect_outbox_published_total": (
            "Outbox rows this instance published",
            relay.stats.published,
        ),
        "devconnect_outbox_failed_rounds_total": (
            "Relay rounds that could not deliver everything",
            relay.stats.failed_rounds,
        ),
        "devconnect_user_cache_hits_total": ("Sessions whose user was cached", hits),
        "devconnect_user_cache_misses_total": ("Sessions whose user had to be loaded", misses),
        "devconnect_user_cache_hit_ratio": (
            "Share of authenticated requests answered from the user cache",
            hits / (hits + misses) if hits + misses else None,
        ),
        "devconnect_producer_queue": (
            "Events queued in the producer, not yet acknowledged",
            producer.stats.in_flight,
        ),
        "devconnect_database_queries_total": (
            "Database queries made by the workflows",
            backend.queries,
        ),
        "devconnect_redis_round_trips_total": (
            "Redis round trips made through the domain's asyncio face",
            backend.state.executor.round_trips,
        ),
    }


def _ops_routes(app: FastAPI, metrics: ApiMetrics) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """The process is alive and serving (no dependency is checked)."""
        return JSONResponse({"status": "ok", "instance": app.state.instance})

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "degraded"}})
    async def readyz(request: Request) -> JSONResponse:
        """Redis, Kafka and the database, each ok or degraded with its latency."""
        backend: Backend = request.app.state.backend
        names = ("redis", "kafka", "database")
        results = await asyncio.gather(
            _timed(backend.state.ping()),
            _timed(asyncio.to_thread(request.app.state.producer.warm_up, READY_TIMEOUT)),
            _timed(_database_ping(backend)),
        )
        checks = dict(zip(names, results, strict=True))
        ok = all(c["status"] == "ok" for c in checks.values())
        body = {
            "status": "ok" if ok else "degraded",
            "instance": app.state.instance,
            "checks": checks,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def prometheus(request: Request) -> PlainTextResponse:
        """Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from devctl.db import outbox

        backend: Backend = request.app.state.backend
        with contextlib.suppress(Exception):  # a dead database must not hide the other numbers
            request.app.state.outbox_backlog = await asyncio.wait_for(
                outbox.backlog(backend.engine), READY_TIMEOUT
            )
        return PlainTextResponse(
            generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


async def _database_ping(backend: Backend) -> None:
    async with backend.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _timed(check: Any) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(check, READY_TIMEOUT)
    except Exception as exc:  # any failure is "degraded", said in words
        reason = str(exc).strip() or type(exc).__name__
        return {
            "status": "degraded",
            "latency_ms": round((time.perf_counter() - start) * 1000, 2),
            "error": reason.splitlines()[0][:200],
        }
    return {"status": "ok", "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
