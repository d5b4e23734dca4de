"""The Socket.IO server inside each API instance, and the ASGI app that serves both.

python-socketio runs as an ASGI app in front of FastAPI: ``/socket.io/`` is
Socket.IO (long-polling first, then the websocket upgrade, as DevConnect's web
client does), everything else goes to the API. Its Redis manager shares emits and
rooms between instances on ``KeySchema.socketio_channel``, so a message reaches a
user's sockets on whatever instance they are connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import socketio

from devctl.state.keys import KeySchema

if TYPE_CHECKING:
    from devctl.clients.endpoints import Endpoints
    from devctl.config.loader import Settings

log = logging.getLogger("devctl.realtime")

# Socket.IO's defaults, written down: the client pings every 25 s and is dropped
# after 20 s more of silence; a frame larger than 64 KiB is refused (a 5,000-char
# message is ~20 KB as UTF-8 at worst).
PING_INTERVAL = 25.0
PING_TIMEOUT = 20.0
MAX_FRAME = 64 * 1024
LISTEN_RETRY_MAX = 2.0  # seconds between resubscribe attempts when Redis is away


class InstanceRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager on devctl's own Redis clients.

    Two clients: publishing uses the ordinary timeouts (a hung Redis fails an emit in
    seconds); the subscription has no read timeout (a quiet channel is not an
    error). Resubscribing after an outage retries every ``LISTEN_RETRY_MAX`` s at
    most, not the library's doubling to a minute: live delivery resumes as soon as
    Redis does.
    """

    def __init__(self, endpoints: Endpoints, settings: Settings, channel: str) -> None:
        self._endpoints = endpoints
        self._settings = settings
        self._publisher: Any = None
        self._listener: Any = None
        super().__init__(url=endpoints.redis_url, channel=channel, write_only=False)

    def _redis_connect(self) -> None:
        from devctl.clients.redis_client import make_async_redis

        if self._publisher is None:
            self._publisher = make_async_redis(self._endpoints, self._settings, decode=False)
            self._listener = make_async_redis(
                self._endpoints, self._settings, decode=False, listener=True
            )
        self.redis = self._publisher
        self.pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        delay = 0.1
        subscribed = False
        while True:
            try:
                if not subscribed:
                    self._redis_connect()
                    await self.pubsub.subscribe(self.channel)
                    subscribed = True
                    delay = 0.1
                async for message in self.pubsub.listen():
                    yield message
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any Redis or connection failure: resubscribe
                log.warning("Socket.IO channel lost (%s); resubscribing in %.1f s", exc, delay)
                subscribed = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX)

    async def close(self) -> None:
        """Stop listening, then close both clients (at the instance's shutdown)."""
        listening = getattr(self, "thread", None)  # the manager's listener task, if started
        if isinstance(listening, asyncio.Task):
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listening
        for client in (self._publisher, self._listener):
            if client is not None:
                await client.aclose()


class _ShieldedJson:
    """The JSON codec of Socket.IO packets, refusing what would crash the decoder.

    ``json.loads`` of a frame nested a few thousand levels deep raises RecursionError,
    which python-socketio does not expect: it escaped as "Exception in ASGI
    application" with a long traceback, for any unauthenticated client to repeat.
    As a ValueError it is one bad frame, dropped.
    """

    @staticmethod
    def dumps(value: Any, **kwargs: Any) -> str:
        return json.dumps(value, **kwargs)

    @staticmethod
    def loads(text: str | bytes, **kwargs: Any) -> Any:
        try:
            return json.loads(text, **kwargs)
        except RecursionError:
            raise ValueError("a Socket.IO packet nested too deeply") from None


class _OneLine(logging.Filter):
    """python-socketio and python-engineio log a client's malformed frame with a full
    traceback; one line naming the error says as much, and a client cannot flood the
    log with tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _library_logger(name: str) -> logging.Logger:
    """A logger of ours for the library: passing one keeps python-socketio from adding
    its own stream handler (each line was written twice, once outside our format)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())
    return logger


def create_server(
    endpoints: Endpoints, settings: Settings, allowed_origins: list[str]
) -> socketio.AsyncServer:
    """The Socket.IO server of one API instance (handlers are added by ``handlers``)."""
    keys = KeySchema(settings.redis.key_prefix)
    manager = InstanceRedisManager(endpoints, settings, keys.socketio_channel())
    return socketio.AsyncServer(
        async_mode="asgi",
        client_manager=manager,
        # The exact origins of FRONTEND_URL with credentials (the cookie), never '*'.
        cors_allowed_origins=allowed_origins,
        cors_credentials=True,
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
        max_http_buffer_size=MAX_FRAME,
        logger=_library_logger("devctl.realtime.socketio"),
        engineio_logger=_library_logger("devctl.realtime.engineio"),
        json=_ShieldedJson,
    )


def asgi_app(sio: socketio.AsyncServer, api: Any) -> socketio.ASGIApp:
    """``/socket.io/`` to Socket.IO, the rest (and the lifespan) to the API."""
    return socketio.ASGIApp(sio, other_asgi_app=api, socketio_path="socket.io")


__all__ = ["InstanceRedisManager", "asgi_app", "create_server"]
