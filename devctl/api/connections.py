"""Connection requests, reviews, the feed and the list of connections.

One request per pair of users, whichever direction: the database enforces it
(``connection_requests`` is unique on the sorted pair), so two racing requests
cannot both land. The daily allowance by tier (``connection_request`` policy:
free 10, silver 100, gold unlimited) counts ``interested`` requests only:
passing on a card in the feed is not a request anyone receives.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.exc import IntegrityError

from devctl.api.accounts import now
from devctl.api.backend import Backend
from devctl.api.views import request_json, safe_user, user_json
from devctl.db.ids import new_id
from devctl.db.models import ConnectionRequest, User
from devctl.errors import Conflict, InvalidInput, NotFound

ID_PATTERN = re.compile(r"^[0-9a-f]{24}$")
# The feed's page size is capped by membership tier.
FEED_LIMITS = {"free": 10, "silver": 100, "gold": 200}
SEND_STATUSES = {"interested": "interested", "ignored": "ignored", "ignore": "ignored"}
REVIEW_STATUSES = {"accepted": "accepted", "rejected": "rejected"}
RESPOND_ACTIONS = {"accept": "accepted", "reject": "rejected"}


def check_id(value: str, field: str) -> str:
    if not ID_PATTERN.match(value):
        raise InvalidInput(f"'{value[:40]}' is not a user or request id", field=field)
    return value


async def send_request(
    backend: Backend, me: dict[str, Any], status: str, to_user_id: str
) -> dict[str, Any]:
    stored = SEND_STATUSES.get(status)
    if stored is None:
        raise InvalidInput(
            f"status must be interested or ignored, not '{status[:40]}'", field="status"
        )
    check_id(to_user_id, "toUserId")
    my_id = str(me["_id"])
    if to_user_id == my_id:
        raise InvalidInput("you cannot send a connection request to yourself", field="toUserId")
    low, high = sorted((my_id, to_user_id))
    async with backend.reading() as session:
        backend.queries += 1
        target = await session.get(User, to_user_id)
        if target is None:
            raise NotFound("user not found", field="toUserId")
        existing = (
            await session.execute(
                select(ConnectionRequest.id).where(
                    ConnectionRequest.user_low == low, ConnectionRequest.user_high == high
                )
            )
        ).first()
    if existing is not None:
        raise Conflict("a connection request between you already exists")
    if stored == "interested":
        await _spend_daily_allowance(backend, my_id, str(me.get("membershipTier") or "free"))
    moment = now()
    request = ConnectionRequest(
        id=new_id(),
        from_user_id=my_id,
        to_user_id=to_user_id,
        user_low=low,
        user_high=high,
        status=stored,
        created_at=moment,
        updated_at=moment,
    )
    try:
        async with backend.transaction() as tx:
            tx.session.add(request)
            await tx.session.flush()
            tx.emit(
                "devconnect.connection.requested",
                {
                    "fromUserId": my_id,
                    "toUserId": to_user_id,
                    "requestId": request.id,
                    "status": stored,
                },
            )
    except IntegrityError:
        raise Conflict("a connection request between you already exists") from None
    return request_json(request)


async def _spend_daily_allowance(backend: Backend, user_id: str, tier: str) -> None:
    await backend.spend(
        "connection_request",
        user_id,
        f"Daily connection request limit reached for the {tier} tier ({{limit}} per day)",
        tier=tier,
    )


async def review_request(
    backend: Backend, my_id: str, status: str, request_id: str
) -> dict[str, Any]:
    """Accept or reject an ``interested`` request sent to me."""
    decided = REVIEW_STATUSES.get(status)
    if decided is None:
        raise InvalidInput(
            f"status must be accepted or rejected, not '{status[:40]}'", field="status"
        )
    return await _decide(backend, my_id, decided, request_id)


async def respond(backend: Backend, my_id: str, action: str, request_id: str) -> dict[str, Any]:
    return await _decide(backend, my_id, RESPOND_ACTIONS[action], request_id)


async def _decide(
    backend: Backend, my_id: str, decided: Literal["accepted", "rejected"] | str, request_id: str
) -> dict[str, Any]:
    check_id(request_id, "requestId")
    async with backend.transaction() as tx:
        request = (
            await tx.session.execute(
                select(ConnectionRequest)
                .where(
                    ConnectionRequest.id == request_id,
                    ConnectionRequest.to_user_id == my_id,
                    ConnectionRequest.status == "interested",
                )
                .with_for_update()
            )
        ).scalar_one_or_none()
        if request is None:
            # Also for someone else's request: do not confirm that it exists.
            raise NotFound("connection request not found", field="requestId")
        request.status = decided
        request.updated_at = now()
        tx.emit(
            f"devconnect.connection.{decided}",
            {
                "fromUserId": request.from_user_id,
                "toUserId": request.to_user_id,
                "requestId": request.id,
            },
        )
        return request_json(request)


async def received(backend: Backend, my_id: str) -> list[dict[str, Any]]:
    """Pending (``interested``) requests to me, newest first, senders populated."""
    async with backend.reading() as session:
        backend.queries += 1
        rows = (
            await session.execute(
                select(ConnectionRequest, User)
                .join(User, User.id == ConnectionRequest.from_user_id)
                .where(
                    ConnectionRequest.to_user_id == my_id,
                    ConnectionRequest.status == "interested",
                )
                .order_by(ConnectionRequest.created_at.desc(), ConnectionRequest.id.desc())
            )
        ).all()
    out = []
    for request, sender in rows:
        item = request_json(request)
        item["fromUserId"] = safe_user(user_json(sender))
        out.append(item)
    return out


async def connections(backend: Backend, my_id: str) -> list[dict[str, Any]]:
    """The users I am connected to (an accepted request, either direction)."""
    other = (
        select(ConnectionRequest.to_user_id.label("uid"))
        .where(ConnectionRequest.from_user_id == my_id, ConnectionRequest.status == "accepted")
        .union_all(
            select(ConnectionRequest.from_user_id.label("uid")).where(
                ConnectionRequest.to_user_id == my_id, ConnectionRequest.status == "accepted"
            )
        )
        .subquery()
    )
    async with backend.reading() as session:
        backend.queries += 1
        users = (
            (
                await session.execute(
                    select(User)
                    .join(other, User.id == other.c.uid)
                    .order_by(User.first_name, User.id)
                )
            )
            .scalars()
            .all()
        )
    return [safe_user(user_json(u)) for u in users]


def feed_limit(requested: int, tier: str) -> int:
    return max(1, min(requested, FEED_LIMITS.get(tier, FEED_LIMITS["free"])))


async def feed(
    backend: Backend, me: dict[str, Any], page: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """Users other than me with no request between us either way; the limit capped by tier."""
    my_id = str(me["_id"])
    limit = feed_limit(limit, str(me.get("membershipTier") or "free"))
    related = exists().where(
        or_(
            and_(ConnectionRequest.from_user_id == my_id, ConnectionRequest.to_user_id == User.id),
            and_(ConnectionRequest.to_user_id == my_id, ConnectionRequest.from_user_id == User.id),
        )
    )
    query = (
        select(User)
        .where(User.id != my_id, ~related)
        .order_by(User.created_at.desc(), User.id.desc())
        .offset((page - 1) * limit)
        .limit(limit)
    )
    async with backend.reading() as session:
        backend.queries += 1
        users = (await session.execute(query)).scalars().all()
    return [safe_user(user_json(u)) for u in users], limit


async def connection_ids(backend: Backend, my_id: str) -> list[str]:
    """The ids of the users I am connected to (who see my presence)."""
    query = (
        select(ConnectionRequest.to_user_id)
        .where(ConnectionRequest.from_user_id == my_id, ConnectionRequest.status == "accepted")
        .union_all(
            select(ConnectionRequest.from_user_id).where(
                ConnectionRequest.to_user_id == my_id, ConnectionRequest.status == "accepted"
            )
        )
    )
    async with backend.reading() as session:
        backend.queries += 1
        return [str(uid) for uid in (await session.execute(query)).scalars().all()]
