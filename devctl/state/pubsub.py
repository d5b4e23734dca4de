"""Typed pub/sub channels with JSON payloads, and a subscriber that survives restarts.

Channels (names owned by ``KeySchema``):
    <prefix>presence        PresenceChange  {"type":"presence","userId","online","instance","ts"}
    <prefix>notify:<user>   Notification    {"type":"notification","userId","kind","data","ts"}

Pub/sub is fire-and-forget: a subscriber that was disconnected misses what was
published meanwhile. ``Subscriber`` reconnects with backoff, re-subscribes and
calls ``on_reconnect`` so the caller can reload the state it may have missed. If
that reload fails too (Redis answers pub/sub but is still loading its data, or
goes away again) the subscriber stays ``stale`` and retries it with backoff.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis

from devctl.errors import RedisUnavailable
from devctl.state._redis import redis_operation
from devctl.state.keys import KeySchema
from devctl.state.validate import InvalidArgument

T = TypeVar("T")


@dataclass(frozen=True)
class PresenceChange:
    user_id: str
    online: bool
    instance: str
    ts: float

    def to_payload(self) -> dict[str, Any]:
        return {
            "type": "presence",
            "userId": self.user_id,
            "online": self.online,
            "instance": self.instance,
            "ts": self.ts,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> PresenceChange:
        return cls(
            str(data["userId"]),
            bool(data["online"]),
            str(data.get("instance", "")),
            float(data.get("ts", 0)),
        )


@dataclass(frozen=True)
class Notification:
    user_id: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = 0.0

    def to_payload(self) -> dict[str, Any]:
        return {
            "type": "notification",
            "userId": self.user_id,
            "kind": self.kind,
            "data": self.data,
            "ts": self.ts,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Notification:
        return cls(
            str(data["userId"]),
            str(data["kind"]),
            dict(data.get("data") or {}),
            float(data.get("ts", 0)),
        )


@dataclass(frozen=True)
class Channel(Generic[T]):
    """A channel name (or glob pattern) and the payload type it carries."""

    name: str
    decode: Callable[[dict[str, Any]], T]
    pattern: bool = False


@dataclass(frozen=True)
class Received(Generic[T]):
    channel: str  # the concrete channel the message came on
    message: T | None  # None if the payload did not decode
    raw: str
    error: str | None = None


class Subscriber:
    """Messages from some channels; reconnects and re-subscribes after Redis restarts.

    ``get(timeout)`` never raises for a lost connection: it retries with backoff
    until ``timeout`` and returns None. ``reconnects`` counts successful reconnects.
    ``on_reconnect`` runs after each reconnect (and after ``resync_later``); if it
    raises ``RedisUnavailable`` (or a Redis connection error) the subscriber is
    ``stale`` until a retry of it succeeds.
    """

    def __init__(
        self,
        client: redis.Redis,
        channels: Sequence[Channel[Any]],
        *,
        on_reconnect: Callable[[], None] | None = None,
        max_backoff: float = 1.0,
    ):
        self.client = client
        self.channels = {c.name: c for c in channels if not c.pattern}
        self.patterns = {c.name: c for c in channels if c.pattern}
        self.on_reconnect = on_reconnect
        self.max_backoff = max_backoff
        self.reconnects = 0
        self.last_error: str | None = None
        self._pubsub: Any = None
        self._ever_connected = False
        self._backoff = 0.05
        self._stale = False
        self._resync_at = 0.0
        self._resync_backoff = 0.05

    def connect(self) -> bool:
        """Subscribe now; False (and ``last_error`` set) if Redis is not reachable."""
        pubsub: Any = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            if self.channels:
                pubsub.subscribe(*self.channels)
            if self.patterns:
                pubsub.psubscribe(*self.patterns)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self.last_error = str(exc)
            _close_quietly(pubsub)
            return False
        self._pubsub = pubsub
        self._backoff = 0.05
        if self._ever_connected:
            self.reconnects += 1
            self.resync_later()
        self._ever_connected = True
        self._resync()
        return True

    def resync_later(self) -> None:
        """Run ``on_reconnect`` again as soon as Redis answers (the caller's view is stale)."""
        if self.on_reconnect is not None:
            self._stale = True
            self._resync_at = 0.0

    @property
    def stale(self) -> bool:
        """True while ``on_reconnect`` has not succeeded since a reconnect (or resync_later)."""
        return self._stale

    def _resync(self) -> None:
        if not self._stale or self.on_reconnect is None or time.monotonic() < self._resync_at:
            return
        try:
            self.on_reconnect()
        except (RedisUnavailable, redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self.last_error = str(exc)
            self._resync_at = time.monotonic() + self._resync_backoff
            self._resync_backoff = min(self._resync_backoff * 2, self.max_backoff)
            return
        self._stale = False
        self._resync_backoff = 0.05

    def get(self, timeout: float = 1.0) -> Received[Any] | None:
        """The next message within ``timeout`` seconds, else None."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if self._pubsub is None and not self.connect():
                if left <= 0:
                    return None
                time.sleep(min(self._backoff, max(left, 0)))
                self._backoff = min(self._backoff * 2, self.max_backoff)
                continue
            self._resync()
            wait = max(left, 0)
            if self._stale:  # wake up for the next retry of on_reconnect
                wait = min(wait, max(self._resync_at - time.monotonic(), 0))
            try:
                raw = self._pubsub.get_message(timeout=wait)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self.last_error = str(exc)
                _close_quietly(self._pubsub)
                self._pubsub = None
                continue
            if raw is not None and raw.get("type") in ("message", "pmessage"):
                return self._decode(raw)
            if time.monotonic() >= deadline:
                return None

    def _decode(self, raw: dict[str, Any]) -> Received[Any]:
        channel = str(raw["channel"])
        source = self.patterns.get(str(raw["pattern"])) if raw.get("pattern") else None
        source = source or self.channels.get(channel)
        data = raw["data"]
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        if source is None:
            return Received(channel, None, text, "message on an unknown channel")
        try:
            return Received(channel, source.decode(json.loads(text)), text)
        except (ValueError, KeyError, TypeError) as exc:
            return Received(channel, None, text, f"undecodable payload: {exc}")

    @property
    def connected(self) -> bool:
        return self._pubsub is not None

    def close(self) -> None:
        if self._pubsub is not None:
            _close_quietly(self._pubsub)
            self._pubsub = None

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_quietly(pubsub: Any) -> None:
    # Closing a broken connection may fail; there is nothing left to do then.
    with contextlib.suppress(Exception):
        pubsub.close()


class PubSub:
    """Publish typed messages and subscribe to typed channels."""

    def __init__(self, client: redis.Redis, keys: KeySchema):
        self.client = client
        self.keys = keys

    def presence_channel(self) -> Channel[PresenceChange]:
        """Presence changes (published by ``Presence`` from inside its Lua scripts)."""
        return Channel(self.keys.presence_channel(), PresenceChange.from_payload)

    def notification_channel(self, user_id: str) -> Channel[Notification]:
        return Channel(self.keys.notification_channel(user_id), Notification.from_payload)

    def all_notifications(self) -> Channel[Notification]:
        return Channel(self.keys.notification_pattern(), Notification.from_payload, pattern=True)

    @redis_operation
    def publish(self, channel: Channel[Any], message: PresenceChange | Notification) -> int:
        """Publish a typed message; return how many subscribers received it."""
        if channel.pattern:
            raise InvalidArgument("cannot publish to a pattern")
        return int(self.client.publish(channel.name, json.dumps(message.to_payload())))

    def notify(self, user_id: str, kind: str, data: dict[str, Any] | None = None) -> int:
        """Publish a notification to one user's channel."""
        note = Notification(user_id, kind, data or {}, time.time())
        return self.publish(self.notification_channel(user_id), note)

    def subscribe(
        self,
        channels: Sequence[Channel[Any]],
        *,
        on_reconnect: Callable[[], None] | None = None,
    ) -> Subscriber:
        """A connected subscriber (it keeps retrying if Redis is down right now)."""
        subscriber = Subscriber(self.client, channels, on_reconnect=on_reconnect)
        subscriber.connect()
        return subscriber

    @redis_operation
    def subscribers(self, channel: Channel[Any]) -> int:
        """How many clients are subscribed to a channel (PUBSUB NUMSUB)."""
        return int(self.client.pubsub_numsub(channel.name)[0][1])
