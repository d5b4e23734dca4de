"""DevConnect's REST routes: parse the request, call one workflow, shape the answer.

Paths, bodies and answers are the ones DevConnect's web client uses
(see docs/api.md and the fact sheet it cites). Answers are built as plain dicts and
sent as JSONResponse: the shapes are declared for the OpenAPI document
(``responses=``) and checked against it by the Schemathesis run in the tests.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from devctl.api import accounts, chat, connections, security
from devctl.api.accounts import Authenticated, Client
from devctl.api.backend import Backend
from devctl.api.schemas import (
    ConnectionsAnswer,
    ErrorAnswer,
    FeedAnswer,
    HistoryAnswer,
    LoginBody,
    MessageOut,
    PasswordBody,
    ProfileEditBody,
    ProfileEditOut,
    ReceivedAnswer,
    RequestAnswer,
    RespondBody,
    SignupBody,
    UserOut,
)
from devctl.errors import Forbidden, Unauthenticated

COOKIE = "token"
ID_PATTERN = "^[0-9a-f]{24}$"  # the ids the database hands out (devctl.db.ids)
PAGE_MAX = 100_000  # beyond any real feed; keeps OFFSET arithmetic small

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorAnswer, "description": text}
    for status, text in (
        (400, "invalid input"),
        (401, "not logged in"),
        (403, "not allowed"),
        (404, "not found"),
        (409, "conflicts with existing data"),
        (413, "body too large"),
        (429, "rate limited"),
        (503, "Redis, Kafka or the database is unavailable"),
    )
}


def _answers(model: Any) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model}, **_ERRORS}


router = APIRouter()


def backend_of(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def client_of(request: Request) -> Client:
    ua = request.headers.get("user-agent")
    return Client(ip=request.client.host if request.client else "unknown", user_agent=ua)


def session_token(request: Request) -> str | None:
    """The token from the cookie, else from ``Authorization: Bearer``; None if absent or forged."""
    return security.session_token(
        request.cookies.get(COOKIE),
        request.headers.get("authorization"),
        request.app.state.signer,
    )


async def current_user(request: Request) -> Authenticated:
    token = session_token(request)
    if token is None:
        raise Unauthenticated("Please log in")
    return await accounts.authenticate(backend_of(request), token)


Me = Annotated[Authenticated, Depends(current_user)]
TheBackend = Annotated[Backend, Depends(backend_of)]


def _with_session(request: Request, body: Any, auth: Authenticated) -> JSONResponse:
    response = JSONResponse(body)
    settings = backend_of(request).settings
    response.set_cookie(
        COOKIE,
        request.app.state.signer.sign(auth.token),
        max_age=int(settings.state.session_ttl),
        httponly=True,
        samesite="lax",
        secure=settings.api.cookie_secure,
        path="/",
    )
    return response


@router.post("/signup", responses=_answers(UserOut), tags=["auth"])
async def signup(request: Request, body: SignupBody, backend: TheBackend) -> JSONResponse:
    """Create an account and log in: the user object at the top level; sets the cookie."""
    auth = await accounts.signup(backend, body, client_of(request))
    return _with_session(request, auth.user, auth)


@router.post("/login", responses=_answers(UserOut), tags=["auth"])
async def login(request: Request, body: LoginBody, backend: TheBackend) -> JSONResponse:
    """Log in: the user object at the top level; sets the cookie."""
    auth = await accounts.login(backend, body.emailId, body.password, client_of(request))
    return _with_session(request, auth.user, auth)


@router.post("/logout", responses=_answers(MessageOut), tags=["auth"])
async def logout(request: Request, backend: TheBackend) -> JSONResponse:
    """End the session (if any) and clear the cookie."""
    token = session_token(request)
    user_id = None
    if token is not None:
        from devctl.state.sessions import parse_token

        user_id = parse_token(token)
    await accounts.logout(backend, token, user_id)
    response = JSONResponse({"message": "Logged out"})
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax")
    return response


@router.get("/profile/view", responses=_answers(UserOut), tags=["profile"])
async def profile_view(request: Request) -> JSONResponse:
    """The logged-in user (401 when not logged in: the web client's login check)."""
    # The hottest route (every page load asks it): the session is read without the
    # dependency machinery, which costs as much as the Redis round trip itself.
    me = await current_user(request)
    return JSONResponse(me.user)


@router.patch("/profile/edit", responses=_answers(ProfileEditOut), tags=["profile"])
async def profile_edit(body: ProfileEditBody, me: Me, backend: TheBackend) -> JSONResponse:
    user = await accounts.edit_profile(backend, str(me.user["_id"]), body)
    return JSONResponse({"message": "Profile updated", "data": user})


@router.patch("/user/{userId}", responses=_answers(ProfileEditOut), tags=["profile"])
async def user_edit(
    userId: Annotated[str, Path(pattern=ID_PATTERN)],
    body: ProfileEditBody,
    me: Me,
    backend: TheBackend,
) -> JSONResponse:
    """The web client's edit page: only the logged-in user may be edited."""
    if userId != me.user["_id"]:
        raise Forbidden("you can only edit your own profile", field="userId")
    user = await accounts.edit_profile(backend, userId, body)
    return JSONResponse({"message": "Profile updated", "data": user})


@router.patch("/profile/password", responses=_answers(MessageOut), tags=["profile"])
async def profile_password(
    request: Request, body: PasswordBody, me: Me, backend: TheBackend
) -> JSONResponse:
    """Change the password; every other session ends, this one gets a fresh cookie."""
    auth = await accounts.change_password(backend, str(me.user["_id"]), body, client_of(request))
    return _with_session(request, {"message": "Password updated"}, auth)


@router.get("/feed", responses=_answers(FeedAnswer), tags=["connections"])
async def feed(
    me: Me,
    backend: TheBackend,
    page: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    ml: Annotated[str | None, Query(max_length=10)] = None,  # the client's flag; no ranking yet
) -> JSONResponse:
    """Users to discover; the page size is capped by tier (free 10, silver 100, gold 200)."""
    users, used_limit = await connections.feed(backend, me.user, page, limit)
    return JSONResponse({"data": users, "page": page, "limit": used_limit})


@router.post(
    "/request/send/{status}/{toUserId}", responses=_answers(RequestAnswer), tags=["connections"]
)
async def request_send(
    status: Annotated[Literal["interested", "ignored", "ignore"], Path()],
    toUserId: Annotated[str, Path(pattern=ID_PATTERN)],
    me: Me,
    backend: TheBackend,
) -> JSONResponse:
    """Send (interested) or pass (ignored, or ignore as the web client says)."""
    request = await connections.send_request(backend, me.user, status, toUserId)
    verb = "sent" if request["status"] == "interested" else "ignored"
    return JSONResponse({"message": f"Connection request {verb}", "data": request})


@router.post(
    "/request/review/{status}/{requestId}", responses=_answers(RequestAnswer), tags=["connections"]
)
async def request_review(
    status: Annotated[Literal["accepted", "rejected"], Path()],
    requestId: Annotated[str, Path(pattern=ID_PATTERN)],
    me: Me,
    backend: TheBackend,
) -> JSONResponse:
    request = await connections.review_request(backend, str(me.user["_id"]), status, requestId)
    return JSONResponse({"message": f"Connection request {request['status']}", "data": request})


@router.patch(
    "/user/requests/{requestId}/respond", responses=_answers(RequestAnswer), tags=["connections"]
)
async def request_respond(
    requestId: Annotated[str, Path(pattern=ID_PATTERN)],
    body: RespondBody,
    me: Me,
    backend: TheBackend,
) -> JSONResponse:
    """The web client's requests page: accept or reject."""
    request = await connections.respond(backend, str(me.user["_id"]), body.action, requestId)
    return JSONResponse({"message": f"Connection request {request['status']}", "data": request})


@router.get("/user/requests/received", responses=_answers(ReceivedAnswer), tags=["connections"])
async def requests_received(me: Me, backend: TheBackend) -> JSONResponse:
    """Pending requests to me, each sender populated."""
    data = await connections.received(backend, str(me.user["_id"]))
    return JSONResponse({"message": "Pending connection requests", "data": data})


@router.get("/user/connections", responses=_answers(ConnectionsAnswer), tags=["connections"])
async def user_connections(me: Me, backend: TheBackend) -> JSONResponse:
    data = await connections.connections(backend, str(me.user["_id"]))
    return JSONResponse({"message": "Connections", "data": data})


@router.get("/chat/{targetUserId}/history", responses=_answers(HistoryAnswer), tags=["chat"])
async def chat_history(
    targetUserId: Annotated[str, Path(pattern=ID_PATTERN)],
    me: Me,
    backend: TheBackend,
    limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
) -> JSONResponse:
    """The last messages with a user, oldest first (default 50, at most 200)."""
    data = await chat.history(backend, str(me.user["_id"]), targetUserId, limit)
    return JSONResponse({"data": data})


_NOT_HERE: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorAnswer, "description": "not part of this API"}
}


def _not_implemented(what: str) -> JSONResponse:
    message = f"{what} is not available in the embedded DevConnect API"
    return JSONResponse(
        {"message": message, "error": {"code": "not-implemented", "message": message}},
        status_code=404,  # DevConnect's client takes 404 or 501; a 5xx would read as an outage
    )


@router.get("/email-preferences", responses=_NOT_HERE, tags=["not implemented"])
async def email_preferences() -> JSONResponse:
    return _not_implemented("email preferences")


@router.patch("/email-preferences", responses=_NOT_HERE, tags=["not implemented"])
async def email_preferences_edit() -> JSONResponse:
    return _not_implemented("email preferences")


@router.post("/payments/phonepe/create", responses=_NOT_HERE, tags=["not implemented"])
async def payments() -> JSONResponse:
    return _not_implemented("payments")
