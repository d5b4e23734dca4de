"""Chat: a conversation's history and sending a message.

The sender is always the authenticated user (never a field the client sends:
today's backend trusts ``fromUserId`` and lets anyone write as anyone). Only
connected users (an accepted request, either direction) may message each other.
A message and its ``message.sent`` event commit together; the conversation's
message cache is appended after the commit (best effort: a failed append only
costs a cache miss, the cache's version counter keeps a racing fill out).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devctl.api.accounts import now
from devctl.api.backend import Backend
from devctl.api.connections import check_id
from devctl.api.views import message_json
from devctl.db.ids import new_id
from devctl.db.models import ConnectionRequest, Message
from devctl.errors import Forbidden, InvalidInput, RedisUnavailable
from devctl.events.schemas import conversation_id

log = logging.getLogger("devctl.api.chat")

HISTORY_DEFAULT, HISTORY_MAX = 50, 200
TEXT_MAX = 5000


def history_limit(limit: int | None) -> int:
    if limit is None:
        return HISTORY_DEFAULT
    if limit < 1:
        raise InvalidInput("limit must be at least 1", field="limit")
    return min(limit, HISTORY_MAX)


async def history(
    backend: Backend, my_id: str, target_id: str, limit: int | None
) -> list[dict[str, Any]]:
    """The last ``limit`` messages between me and the target, oldest first."""
    check_id(target_id, "targetUserId")
    count = history_limit(limit)
    query = (
        select(Message)
        .where(Message.conversation_id == conversation_id(my_id, target_id))
        .order_by(Message.ts.desc(), Message.id.desc())
        .limit(count)
    )
    async with backend.reading() as session:
        backend.queries += 1
        rows = (await session.execute(query)).scalars().all()
    return [message_json(m) for m in reversed(rows)]


async def are_connected(session: AsyncSession, user_a: str, user_b: str) -> bool:
    """True iff the two users have an accepted request between them (one indexed row)."""
    low, high = sorted((user_a, user_b))
    status = await session.scalar(
        select(ConnectionRequest.status).where(
            ConnectionRequest.user_low == low, ConnectionRequest.user_high == high
        )
    )
    return status == "accepted"


async def check_connected(backend: Backend, my_id: str, other_id: str) -> None:
    """Forbidden unless ``other_id`` is me or one of my connections."""
    if other_id == my_id:
        return
    async with backend.reading() as session:
        backend.queries += 1
        if not await are_connected(session, my_id, other_id):
            raise Forbidden("you can only see the presence of your connections", field="userId")


async def send_message(
    backend: Backend, sender_id: str, to_user_id: Any, text: Any
) -> dict[str, Any]:
    """Persist a message (with its event) from the session's user to a connection.

    The caller spends the chat rate limit first and appends to the cache after
    (``cache_message``), once the message is on its way to the recipient.
    """
    if not isinstance(to_user_id, str):
        raise InvalidInput("toUserId must be a user id", field="toUserId")
    check_id(to_user_id, "toUserId")
    if not isinstance(text, str):
        raise InvalidInput("message must be text", field="message")
    text = text.strip()
    if not text:
        raise InvalidInput("a message needs some text", field="message")
    if len(text) > TEXT_MAX:
        raise InvalidInput(f"a message holds at most {TEXT_MAX} characters", field="message")
    if to_user_id == sender_id:
        raise InvalidInput("you cannot message yourself", field="toUserId")
    moment = now()
    message = Message(
        id=new_id(),
        from_user_id=sender_id,
        to_user_id=to_user_id,
        conversation_id=conversation_id(sender_id, to_user_id),
        text=text,
        ts=moment,
    )
    async with backend.transaction() as tx:
        backend.queries += 1
        # An accepted request implies the user exists (requests cascade with users).
        if not await are_connected(tx.session, sender_id, to_user_id):
            raise Forbidden("you can only message your connections", field="toUserId")
        tx.session.add(message)
        # No flush of its own: the message and its outbox row go in the commit's one flush.
        tx.emit(
            "devconnect.message.sent",
            {
                "fromUserId": sender_id,
                "toUserId": to_user_id,
                "messageId": message.id,
                "text": text,
                "ts": moment,
            },
        )
    return message_json(message)


async def cache_message(backend: Backend, stored: dict[str, Any]) -> None:
    """Append a committed message to its conversation's cache (best effort)."""
    try:
        await backend.state.messages.append(stored["fromUserId"], stored["toUserId"], stored)
    except RedisUnavailable as exc:
        log.warning("message cache not appended (%s); the next history read refills it", exc)
