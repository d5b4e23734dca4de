"""GET /notifications and POST /notifications/read: the logged-in user's notifications.

The notifications consumer writes them (docs/notifications.md); these routes read
them and mark them read through the Redis domain's asyncio face
(``devctl.state.notifications``), on the API's Redis client. Authentication and
error answers are the other routes' (``Me``, ``devctl.api.errors``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from devctl.api.backend import Backend
from devctl.api.routes import Me, TheBackend
from devctl.api.schemas import ErrorAnswer
from devctl.state.notifications import ID_MAX, AsyncNotifications

LIST_DEFAULT, LIST_MAX = 50, 100
IDS_MAX = 1000  # the largest list a user can hold (state.notifications_max)

NotificationId = Annotated[
    str, StringConstraints(min_length=1, max_length=ID_MAX, pattern=r"^[A-Za-z0-9_-]+$")
]


class ReadBody(BaseModel):
    """``{"ids": [...]}`` marks those; ``{}`` (or no ``ids``, or no body) marks all."""

    model_config = ConfigDict(extra="forbid")

    ids: Annotated[list[NotificationId], Field(max_length=IDS_MAX)] | None = None


class NotificationOut(BaseModel):
    id: str
    type: str
    userId: str
    fromUserId: str | None = None
    text: str
    data: dict[str, Any]
    createdAt: str
    read: bool


class NotificationsAnswer(BaseModel):
    data: list[NotificationOut]
    unread: int


class UnreadAnswer(BaseModel):
    unread: int


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorAnswer, "description": "invalid input"},
    401: {"model": ErrorAnswer, "description": "not logged in"},
    503: {"model": ErrorAnswer, "description": "Redis is unavailable"},
}

router = APIRouter()


def _notifications(backend: Backend) -> AsyncNotifications:
    # On the API's own client and executor, so /metrics counts these round trips too.
    state = backend.state
    return AsyncNotifications(
        state.client,
        state.keys,
        max_items=backend.settings.state.notifications_max,
        ttl=backend.settings.state.notifications_ttl,
        executor=state.executor,
    )


@router.get(
    "/notifications",
    responses={200: {"model": NotificationsAnswer}, **_ERRORS},
    tags=["notifications"],
)
async def list_notifications(
    me: Me,
    backend: TheBackend,
    limit: Annotated[int, Query(ge=1, le=LIST_MAX)] = LIST_DEFAULT,
    unread: Annotated[bool, Query()] = False,
) -> JSONResponse:
    """My notifications, newest first (``unread=true``: only unread ones), and my unread count."""
    page = await _notifications(backend).list(str(me.user["_id"]), limit=limit, unread_only=unread)
    return JSONResponse({"data": page.items, "unread": page.unread})


@router.post(
    "/notifications/read",
    responses={200: {"model": UnreadAnswer}, **_ERRORS},
    tags=["notifications"],
)
async def read_notifications(
    me: Me,
    backend: TheBackend,
    body: Annotated[ReadBody | None, Body()] = None,
) -> JSONResponse:
    """Mark notifications read: the given ``ids``, or all of them; answers my unread count."""
    ids = None if body is None else body.ids
    result = await _notifications(backend).mark_read(str(me.user["_id"]), ids)
    return JSONResponse({"unread": result.unread})
