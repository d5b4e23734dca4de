"""Rows as the web client reads them: the user, its public projection, requests, messages.

The user dict is also what the Redis user cache holds (``user_json``), so a warm
authenticated request is answered from one Redis round trip with no database query.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from devctl.api.schemas import DEFAULT_ABOUT, DEFAULT_PHOTO_URL
from devctl.db.models import ConnectionRequest, Message, User

SAFE_FIELDS = (
    "_id",
    "firstName",
    "lastName",
    "photoUrl",
    "age",
    "gender",
    "about",
    "skills",
    "isPremium",
    "membershipTier",
)


def iso(moment: datetime) -> str:
    """UTC with milliseconds and Z, as JavaScript's Date.toISOString writes it."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user_json(user: User) -> dict[str, Any]:
    return {
        "_id": user.id,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "emailId": user.email,
        "age": user.age,
        "gender": user.gender,
        "photoUrl": user.photo_url or DEFAULT_PHOTO_URL,
        "about": user.about if user.about is not None else DEFAULT_ABOUT,
        "skills": list(user.skills or []),
        "isPremium": bool(user.is_premium),
        "membershipTier": user.membership_tier,
        "createdAt": iso(user.created_at),
        "updatedAt": iso(user.updated_at),
    }


def safe_user(user: Mapping[str, Any]) -> dict[str, Any]:
    return {name: user.get(name) for name in SAFE_FIELDS}


def request_json(request: ConnectionRequest) -> dict[str, Any]:
    return {
        "_id": request.id,
        "fromUserId": request.from_user_id,
        "toUserId": request.to_user_id,
        "status": request.status,
        "createdAt": iso(request.created_at),
        "updatedAt": iso(request.updated_at),
    }


def message_json(message: Message) -> dict[str, Any]:
    return {
        "_id": message.id,
        "fromUserId": message.from_user_id,
        "toUserId": message.to_user_id,
        "text": message.text,
        "ts": iso(message.ts),
        "readAt": iso(message.read_at) if message.read_at is not None else None,
    }
