"""``GET /profile/view`` served by a lean ASGI handler in front of the router.

Every page of DevConnect's web client asks this route first (its answer, or a 401,
is how a page learns who is logged in), so it is the API's hottest path. Through
FastAPI's router and dependency machinery it cost about as much again as the Redis
round trip it needs; here it is one header scan, one HMAC, one Redis round trip
(the session and the cached user) and one JSON encoding. The semantics are the
route's own (it stays declared in routes.py, for the OpenAPI document): the same
workflow (``accounts.authenticate``), the same cookie and Bearer rules, the same
errors through ``errors.error_response``. It sits inside the metrics, CORS and
body-limit middleware (app.py), so those apply unchanged. tests/api run every case through it.
"""

from __future__ import annotations

import json

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from devctl.api import accounts
from devctl.api.errors import error_response
from devctl.api.security import CookieSigner, session_token
from devctl.errors import DevctlError, Unauthenticated

PATH = "/profile/view"
_JSON_HEADERS = [(b"content-type", b"application/json")]


class _Route:
    """What the metrics middleware reads of a matched route: its template."""

    path = PATH


_ROUTE = _Route()


class ProfileViewFastPath:
    def __init__(self, app: ASGIApp, *, cookie: str):
        self.app = app
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        scope["route"] = _ROUTE
        app_state = scope["app"].state
        try:
            token = self._token(scope, app_state.signer)
            if token is None:
                raise Unauthenticated("Please log in")
            me = await accounts.authenticate(app_state.backend, token)
        except DevctlError as exc:
            await error_response(exc)(scope, receive, send)
            return
        body = json.dumps(me.user, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _token(self, scope: Scope, signer: CookieSigner) -> str | None:
        cookie_header = authorization = None
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie_header = value
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        cookie = _cookie_value(cookie_header, self.cookie) if cookie_header else None
        return session_token(cookie, authorization, signer)


def _cookie_value(header: bytes, name: str) -> str | None:
    text = header.decode("latin-1")
    # The common case, one plain cookie, without the general parser.
    prefix = name + "="
    if text.startswith(prefix) and ";" not in text and '"' not in text:
        return text[len(prefix) :].strip() or None
    return cookie_parser(text).get(name) or None  # exactly as Request.cookies parses it
