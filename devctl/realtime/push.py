"""Emit Socket.IO events to a user's sockets from any process, on any instance.

Every API instance's Socket.IO server shares its emits through python-socketio's
Redis manager on one channel (``KeySchema.socketio_channel``); each socket joins
its user's room (``user_room``) at connect. A process that is not a Socket.IO
server (a consumer) reaches a user's sockets by publishing on that channel through
a write-only manager: every instance delivers to the sockets it holds.

Delivery is live-only and best effort, as Socket.IO's is: a user with no socket
open gets nothing, which is why what must not be lost (notifications) is stored
first and pushed second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import socketio

from devctl.state.keys import KeySchema

if TYPE_CHECKING:
    from devctl.clients.endpoints import Endpoints
    from devctl.config.loader import Settings

ROOM_PREFIX = "user:"


def user_room(user_id: str) -> str:
    """The room every socket of one user joins."""
    return ROOM_PREFIX + user_id


class _ConfiguredRedisManager(socketio.RedisManager):  # type: ignore[misc]
    """python-socketio's sync Redis manager on devctl's own Redis client.

    The client comes from ``make_redis``, so the password, TLS, timeouts and client
    name are the ones every other devctl client uses (not a second URL parser).
    """

    def __init__(self, endpoints: Endpoints, settings: Settings, channel: str) -> None:
        self._endpoints = endpoints
        self._settings = settings
        super().__init__(url=endpoints.redis_url, channel=channel, write_only=True)

    def _redis_connect(self) -> None:
        from devctl.clients.redis_client import make_redis

        self.redis = make_redis(self._endpoints, self._settings, decode=False)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.connected = True


class Pusher:
    """Sends Socket.IO events to users' rooms from outside the API (write-only)."""

    def __init__(self, endpoints: Endpoints, settings: Settings) -> None:
        keys = KeySchema(settings.redis.key_prefix)
        self._manager = _ConfiguredRedisManager(endpoints, settings, keys.socketio_channel())

    def push(self, user_id: str, event: str, data: Any) -> None:
        """Emit ``event`` with ``data`` to every socket of ``user_id``, on any instance."""
        self._manager.emit(event, data, namespace="/", room=user_room(user_id))


__all__ = ["ROOM_PREFIX", "Pusher", "user_room"]
