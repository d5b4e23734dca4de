"""DevConnect's Socket.IO events, with the names and shapes its web client uses.

- connect: the session is the ``token`` cookie of the handshake (or ``auth.token``,
  the same signed value); no valid session, no connection. The socket joins its
  user's room and is recorded in presence.
- ``register``: accepted and ignored; the session already says who it is.
- ``private-message`` ``{toUserId, message}``: the sender is the session's user
  (a ``fromUserId`` in the payload is ignored), rate-limited by ``chat_message``,
  persisted with its event, then delivered as ``private-message``
  ``{message, fromUserId, ts, _id, toUserId}`` to both users' rooms.
- ``presence:query`` ``{userId}`` -> ``presence:state`` ``{userId, online}``, for
  oneself and one's connections only.
- ``private-message`` and ``presence:query`` check the session again (one Redis round
  trip): a socket whose session was logged out, revoked or expired gets ``error``
  ``{code: "unauthenticated"}`` and is disconnected.
- failures -> ``error`` ``{code, message, field?}`` to the emitting socket (and as the
  acknowledgement, for clients that ask for one); a handler never raises into
  python-socketio, so a bad payload never costs the connection.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any

import socketio

from devctl.api import accounts, chat
from devctl.api.backend import Backend
from devctl.api.connections import check_id
from devctl.api.errors import public_message
from devctl.api.security import CookieSigner, session_token
from devctl.errors import DevctlError, InvalidInput, TooManyConnections, Unauthenticated
from devctl.realtime.liveness import Presence
from devctl.realtime.push import user_room

log = logging.getLogger("devctl.realtime")

COOKIE = "token"
CHAT_POLICY = "chat_message"
# Tabs of one user one instance holds: far beyond a person's, short of what lets one
# account hold an instance's memory (about 85 KiB a connection, docs/benchmarks.md).
MAX_SOCKETS_PER_USER = 100

Handler = Callable[[str, Any], Awaitable[Any]]


class SessionEnded(Unauthenticated):
    """The socket's session was logged out, revoked or expired: the socket is closed."""


def handshake_token(environ: dict[str, Any], auth: Any, signer: CookieSigner) -> str | None:
    """The session token of a handshake: the ``token`` cookie, else ``auth.token``."""
    cookie_value = None
    raw = environ.get("HTTP_COOKIE")
    if raw:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            jar = SimpleCookie()
        if COOKIE in jar:
            cookie_value = jar[COOKIE].value
    if not cookie_value and isinstance(auth, dict) and isinstance(auth.get("token"), str):
        cookie_value = auth["token"]
    return session_token(cookie_value, None, signer)


def error_payload(exc: DevctlError) -> dict[str, Any]:
    """``{code, message, field?, retryAfter?}``; an outage in general words, as over HTTP."""
    body: dict[str, Any] = {"code": exc.error_code, "message": public_message(exc)}
    if exc.field:
        body["field"] = exc.field
    retry = (exc.data or {}).get("retry_after")
    if retry is not None:
        body["retryAfter"] = retry
    return body


def _refused(exc: DevctlError) -> socketio.exceptions.ConnectionRefusedError:
    """The handshake's refusal: ``connect_error`` with ``message`` and ``data``
    ``{code, message}`` (a JavaScript client reads ``err.message`` and ``err.data``)."""
    payload = error_payload(exc)
    return socketio.exceptions.ConnectionRefusedError(payload["message"], payload)


class ChatEvents:
    """The event handlers of one instance's Socket.IO server.

    ``backend`` is read when an event arrives (the API's lifespan creates it after the
    server exists); ``sockets`` maps this instance's socket ids to their user.
    """

    def __init__(
        self,
        sio: socketio.AsyncServer,
        backend: Callable[[], Backend | None],
        signer: CookieSigner,
        presence: Presence,
    ) -> None:
        self.sio = sio
        self._backend = backend
        self.signer = signer
        self.presence = presence
        sio.on("connect", self.connect)
        sio.on("disconnect", self.disconnect)
        sio.on("register", self._guarded(self.register))
        sio.on("private-message", self._guarded(self.private_message))
        sio.on("presence:query", self._guarded(self.presence_query))

    def backend(self) -> Backend:
        backend = self._backend()
        if backend is None:
            raise DevctlError("the API is starting", hint="try again in a moment")
        return backend

    # --- connection lifecycle ------------------------------------------------

    def _is_event(self, sid: str) -> bool:
        """True when a ``connect``/``disconnect`` call is a client's EVENT of that name.

        python-socketio hands a client's event named "connect" or "disconnect" to the
        lifecycle handlers too: a connected client could then fake its own
        disconnect (presence offline while the socket lives) or flap presence at
        will. During the real ones the socket is pending, not connected.
        """
        return bool(self.sio.manager.is_connected(sid, "/"))

    async def connect(self, sid: str, environ: Any, auth: Any = None) -> None:
        if self._is_event(sid):
            return
        if not isinstance(environ, dict):
            environ = {}
        token = handshake_token(environ, auth, self.signer)
        if token is None:
            raise _refused(Unauthenticated("Please log in"))
        try:
            me = await accounts.authenticate(self.backend(), token)
        except DevctlError as exc:
            raise _refused(exc) from None
        user_id = str(me.user["_id"])
        if self.presence.sockets_of(user_id) >= MAX_SOCKETS_PER_USER:
            raise _refused(
                TooManyConnections(
                    f"at most {MAX_SOCKETS_PER_USER} connections per user on one server",
                    hint="close other tabs",
                )
            )
        await self.sio.save_session(sid, {"user": user_id, "token": token})
        await self.sio.enter_room(sid, user_room(user_id))
        await self.presence.connected(user_id, sid)

    async def disconnect(self, sid: str, *reason: Any) -> None:
        if self._is_event(sid):
            return
        user_id = self.presence.user_of(sid)
        if user_id is not None:
            await self.presence.disconnected(user_id, sid)

    async def user_of(self, sid: str) -> str:
        session = await self.sio.get_session(sid)
        user_id: str = session["user"]
        return user_id

    async def still_signed_in(self, sid: str) -> str:
        """The socket's user, if its session is still valid (one Redis round trip).

        Checked before every action that writes or reveals something: a socket opened
        before a logout (or a revocation, an expiry) must not go on acting as the
        user. A dead session ends the socket (``SessionEnded``).
        """
        session = await self.sio.get_session(sid)
        try:
            me = await accounts.authenticate(self.backend(), session["token"])
        except Unauthenticated as exc:
            raise SessionEnded(exc.message, hint=exc.hint) from None
        user_id = str(me.user["_id"])
        if user_id != session["user"]:  # cannot happen with our tokens; never trust it
            raise SessionEnded("Please log in")
        return user_id

    # --- events --------------------------------------------------------------

    def _guarded(self, handler: Handler) -> Handler:
        """Every failure becomes an ``error`` event (and the ack), never an exception."""

        @functools.wraps(handler)
        async def run(sid: str, data: Any = None, *extra: Any) -> Any:
            # Extra arguments (a client may send any number) are ignored, never a TypeError.
            try:
                return await handler(sid, data)
            except SessionEnded as exc:
                await self.sio.emit("error", error_payload(exc), to=sid)
                await self.sio.disconnect(sid)
                return {"ok": False, "error": error_payload(exc)}
            except DevctlError as exc:
                body = error_payload(exc)
            except Exception:
                log.exception("Socket.IO handler %s failed", handler.__name__)
                body = {"code": "internal", "message": "internal error"}
            await self.sio.emit("error", body, to=sid)
            return {"ok": False, "error": body}

        return run

    async def register(self, sid: str, data: Any) -> dict[str, Any]:
        return {"ok": True, "userId": await self.user_of(sid)}

    async def private_message(self, sid: str, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise InvalidInput("private-message takes {toUserId, message}")
        sender = await self.still_signed_in(sid)
        backend = self.backend()
        await backend.spend(
            CHAT_POLICY, sender, "Too many messages: at most {limit} a minute; wait {wait} s"
        )
        stored = await chat.send_message(backend, sender, data.get("toUserId"), data.get("message"))
        delivery = {
            "message": stored["text"],
            "fromUserId": sender,
            "toUserId": stored["toUserId"],
            "ts": stored["ts"],
            "_id": stored["_id"],
        }
        await self.sio.emit(
            "private-message", delivery, room=[user_room(sender), user_room(stored["toUserId"])]
        )
        await chat.cache_message(backend, stored)
        return {"ok": True, "_id": stored["_id"], "ts": stored["ts"]}

    async def presence_query(self, sid: str, data: Any) -> dict[str, Any]:
        target = data.get("userId") if isinstance(data, dict) else None
        if not isinstance(target, str):
            raise InvalidInput("presence:query takes {userId}", field="userId")
        check_id(target, "userId")
        me = await self.still_signed_in(sid)
        await chat.check_connected(self.backend(), me, target)
        state = {"userId": target, "online": await self.presence.is_online(target)}
        await self.sio.emit("presence:state", state, to=sid)
        return {"ok": True, **state}


__all__ = ["ChatEvents", "error_payload", "handshake_token"]
