"""Chat: a conversation's history and sending a message.

The sender is always the authenticated user (never a field the client sends:
today's backend trusts ``fromUserId`` and lets anyone write as anyone). A
message and its ``message.sent`` event commit together.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from devctl.api.accounts import now
from devctl.api.backend import Backend
from devctl.api.connections import check_id
from devctl.api.views import message_json
from devctl.db.ids import new_id
from devctl.db.models import Message, User
from devctl.errors import InvalidInput, NotFound
from devctl.events.schemas import conversation_id

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


async def send_message(
    backend: Backend, sender_id: str, to_user_id: str, text: str
) -> dict[str, Any]:
    check_id(to_user_id, "toUserId")
    text = text.strip() if isinstance(text, str) else ""
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
        if await tx.session.get(User, to_user_id) is None:
            raise NotFound("user not found", field="toUserId")
        tx.session.add(message)
        await tx.session.flush()
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
