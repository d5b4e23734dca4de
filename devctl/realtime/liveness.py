"""One instance's presence: its lease, its sockets, and the transitions it announces.

The Redis domain (devctl.state.presence) decides every transition exactly once,
whichever instance or tab causes it: the instance whose write (connect,
disconnect, sweep, resync) reports "went online/offline" is the one that announces
it, with a ``user.online``/``user.offline`` event through the outbox and a
``presence`` ``{userId, online}`` emit to the rooms of the user's connections.

The lease: a heartbeat every third of ``state.presence_instance_ttl``. A heartbeat
that finds the lease lapsed (the process was paused, Redis lost it) or a presence
write that failed (Redis was away) leads to a ``resync`` with the sockets this
instance really holds. Every instance sweeps every half TTL; the sweep is safe to
run concurrently (each user's change is one script), so a dead instance's users
go offline within about 1.5 TTL, announced once.

Instance ids are unique per process start (name, pid, random suffix): a restarted
instance must not inherit the lease of the connections its previous life held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from devctl.errors import DevctlError

if TYPE_CHECKING:
    import socketio

    from devctl.api.backend import Backend

log = logging.getLogger("devctl.realtime")


def new_instance_id(name: str) -> str:
    return f"{name}-{os.getpid()}-{secrets.token_hex(3)}"


class Presence:
    def __init__(
        self,
        sio: socketio.AsyncServer,
        backend: Callable[[], Backend | None],
        instance_id: str,
    ) -> None:
        self.sio = sio
        self._backend = backend
        self.instance_id = instance_id
        self.sockets: dict[str, str] = {}  # socket id -> user id, on this instance
        self._per_user: dict[str, int] = {}  # user id -> sockets on this instance
        self._dirty = False  # a presence write failed: resync at the next heartbeat
        self._tasks: list[asyncio.Task[None]] = []
        self.announced = 0  # transitions announced by this instance (for /metrics)

    def backend(self) -> Backend:
        backend = self._backend()
        if backend is None:
            raise DevctlError("the API is starting")
        return backend

    def user_of(self, sid: str) -> str | None:
        return self.sockets.get(sid)

    def sockets_of(self, user_id: str) -> int:
        """How many sockets of ``user_id`` this instance holds."""
        return self._per_user.get(user_id, 0)

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Take the lease (before the first socket), then heartbeat and sweep in tasks."""
        ttl = self.backend().state.presence.instance_ttl
        try:
            await self.backend().state.presence.heartbeat(self.instance_id)
        except DevctlError as exc:
            log.warning("presence lease not taken yet (%s); retrying", exc)
        self._tasks = [
            asyncio.create_task(self._every(ttl / 3, self.heartbeat), name="presence-heartbeat"),
            asyncio.create_task(self._every(ttl / 2, self.sweep), name="presence-sweep"),
        ]

    async def stop(self) -> None:
        """End the lease and take this instance's users offline now (graceful stop)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            result = await self.backend().state.presence.retire(self.instance_id)
        except DevctlError as exc:
            log.warning("presence not retired (%s); the sweep of another instance will", exc)
            return
        for user_id in result.went_offline:
            await self.announce(user_id, online=False)

    @staticmethod
    async def _every(interval: float, tick: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await tick()
            except DevctlError as exc:
                log.warning("presence %s failed: %s", getattr(tick, "__name__", "tick"), exc)
            except Exception:  # a bug must not end the loop: presence would rot
                log.exception("presence tick failed")

    async def heartbeat(self) -> None:
        presence = self.backend().state.presence
        held = await presence.heartbeat(self.instance_id)
        if held and not self._dirty:
            return
        self._dirty = False
        try:
            result = await presence.resync(self.instance_id, dict(self.sockets))
        except DevctlError:
            self._dirty = True
            raise
        for user_id in result.went_offline:
            await self.announce(user_id, online=False)
        for user_id in result.went_online:
            await self.announce(user_id, online=True)

    async def sweep(self) -> None:
        result = await self.backend().state.presence.sweep()
        for user_id in result.went_offline:
            await self.announce(user_id, online=False)

    # --- sockets ------------------------------------------------------------

    async def connected(self, user_id: str, sid: str) -> None:
        self.sockets[sid] = user_id
        self._per_user[user_id] = self._per_user.get(user_id, 0) + 1
        try:
            result = await self.backend().state.presence.connect(user_id, sid, self.instance_id)
        except DevctlError as exc:
            log.warning("presence of %s not recorded (%s); resync later", user_id, exc)
            self._dirty = True
            return
        if not result.recorded:
            self._dirty = True
        if result.went_offline:
            await self.announce(user_id, online=False)
        if result.went_online:
            await self.announce(user_id, online=True)

    async def disconnected(self, user_id: str, sid: str) -> None:
        if self.sockets.pop(sid, None) is not None:
            left = self._per_user.get(user_id, 1) - 1
            if left > 0:
                self._per_user[user_id] = left
            else:
                self._per_user.pop(user_id, None)
        try:
            went_offline = await self.backend().state.presence.disconnect(
                user_id, sid, self.instance_id
            )
        except DevctlError as exc:
            log.warning("disconnect of %s not recorded (%s); resync later", user_id, exc)
            self._dirty = True
            return
        if went_offline:
            await self.announce(user_id, online=False)

    async def is_online(self, user_id: str) -> bool:
        status = await self.backend().state.presence.status(user_id)
        return bool(status.online)

    # --- announcing ---------------------------------------------------------

    async def announce(self, user_id: str, *, online: bool) -> None:
        """The event (outbox) and the ``presence`` emit of one transition; never raises."""
        from devctl.api.connections import connection_ids

        self.announced += 1
        backend = self.backend()
        event: dict[str, Any] = {"userId": user_id}
        if online:
            event["connections"] = 1
        else:
            event["lastSeen"] = datetime.now(UTC)
        try:
            async with backend.transaction() as tx:
                tx.emit("devconnect.user.online" if online else "devconnect.user.offline", event)
        except DevctlError as exc:
            log.error(
                "user %s went %s; its event was not written: %s",
                user_id,
                "online" if online else "offline",
                exc,
            )
        except Exception:
            log.exception("presence event of %s not written", user_id)
        try:
            peers = await connection_ids(backend, user_id)
            if peers:
                from devctl.realtime.push import user_room

                await self.sio.emit(
                    "presence",
                    {"userId": user_id, "online": online},
                    room=[user_room(peer) for peer in peers],
                )
        except DevctlError as exc:
            log.warning("presence of %s not broadcast: %s", user_id, exc)
        except Exception:
            log.exception("presence of %s not broadcast", user_id)


__all__ = ["Presence", "new_instance_id"]
