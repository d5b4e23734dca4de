"""A user's notifications: a capped list, newest first, and an exact unread count.

Keys (``KeySchema``): ``notifications(user)`` is a LIST of JSON notifications, newest
first, at most ``state.notifications_max``; ``notifications_unread(user)`` is a STRING
holding how many of them are unread. Both expire ``state.notifications_ttl`` seconds
after the last new notification (each add refreshes both, so they expire together).

A notification is ``{id, type, userId, fromUserId?, text, data, createdAt, read}``.
Its JSON is always written by ``encode`` (compact, ``id`` first, ``read`` last), so
the Lua scripts can find a notification by the prefix ``{"id":"<id>",`` and flip
``"read":false}`` to ``"read":true}`` without a JSON library: no re-encoding,
no reordering, byte-for-byte the same notification otherwise.

The unread count is recomputed from the list by every write (add, mark read) inside
one script, never adjusted by increments: it is exact whatever happened before
(a notification dropped by the cap while unread, a marked one marked again, a
counter lost), and never negative. An add of an id already in the list changes
nothing, so a replayed event cannot make two notifications.

``add_to(pipe, ...)`` queues an add on a pipeline the caller owns (the consumer's
``ctx.tx``, so the add runs exactly once with the idempotency marker); the other
operations are plans (``devctl.state.plan``), run by ``Notifications`` (sync) and
``AsyncNotifications`` (asyncio, for the API).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from devctl.state._redis import SyncExecutor, SyncFace, sync_op
from devctl.state.aio import AsyncExecutor, AsyncFace, async_op
from devctl.state.keys import KeySchema
from devctl.state.plan import Plan, Script, cmd, pipeline
from devctl.state.validate import InvalidArgument, check_id, ttl_ms

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    from devctl.config.schema import StateSettings

Kind = Literal["connection_request", "connection_accepted", "message"]
KINDS: tuple[str, ...] = ("connection_request", "connection_accepted", "message")
# Ids of notifications are what the API accepts in POST /notifications/read.
ID_MAX = 64
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
# uuid5(namespace, source event id): the id of the notification an event causes.
_NOTIFICATION_NAMESPACE = uuid.UUID("5b0c8e1e-8a4f-5c37-9d0e-2f6a7c1b4e90")
_UNREAD_TAIL = ',"read":false}'
_READ_TAIL = ',"read":true}'

# KEYS: list, unread. ARGV: notification json, its id prefix, max, ttl s.
# Returns the unread count after the add, or -1 when the id was there already.
_ADD = Script(
    """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local prefix = ARGV[2]
for i = 1, #items do
  if string.sub(items[i], 1, #prefix) == prefix then return -1 end
end
local max = tonumber(ARGV[3])
local unread = 1
for i = 1, math.min(#items, max - 1) do
  if string.sub(items[i], -14) == ',"read":false}' then unread = unread + 1 end
end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, max - 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], unread, 'EX', ARGV[4])
return unread
"""
)

# KEYS: list, unread. ARGV: "1" to mark all (else "0"), id prefixes to mark...
# Returns {marked now, unread after}.
_MARK_READ = Script(
    """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local all = ARGV[1] == '1'
local wanted = {}
for i = 2, #ARGV do wanted[ARGV[i]] = true end
local marked, unread = 0, 0
for i = 1, #items do
  local item = items[i]
  if string.sub(item, -14) == ',"read":false}' then
    local hit = all
    if not hit then
      local prefix = string.match(item, '^{"id":"[^"]*",')
      hit = prefix ~= nil and wanted[prefix] == true
    end
    if hit then
      redis.call('LSET', KEYS[1], i - 1, string.sub(item, 1, -15) .. ',"read":true}')
      marked = marked + 1
    else
      unread = unread + 1
    end
  end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[2], unread, 'PX', ttl)
elseif ttl == -1 then
  redis.call('SET', KEYS[2], unread)
else
  redis.call('DEL', KEYS[2])
end
return {marked, unread}
"""
)


def notification_id(source_event_id: str) -> str:
    """The id of the notification caused by the event ``source_event_id`` (32 hex digits).

    Deterministic, so handling the same event twice names the same notification.
    """
    return uuid.uuid5(_NOTIFICATION_NAMESPACE, source_event_id).hex


def valid_id(value: str) -> bool:
    """Whether ``value`` can be a notification id (what ``mark_read`` accepts)."""
    return 0 < len(value) <= ID_MAX and all(c in _ID_CHARS for c in value)


def new_notification(
    *,
    id: str,
    type: Kind,
    user_id: str,
    text: str,
    created_at: str,
    from_user_id: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An unread notification in its stored shape (key order is part of the format)."""
    if not valid_id(id):
        raise InvalidArgument(f"a notification id is 1-{ID_MAX} of [A-Za-z0-9_-], got {id!r}")
    if type not in KINDS:
        raise InvalidArgument(f"unknown notification type {type!r} (one of {', '.join(KINDS)})")
    note: dict[str, Any] = {"id": id, "type": type, "userId": check_id(user_id, "userId")}
    if from_user_id is not None:
        note["fromUserId"] = from_user_id
    note.update(text=text, data=dict(data or {}), createdAt=created_at, read=False)
    return note


def encode(notification: Mapping[str, Any]) -> str:
    """The stored JSON: ``id`` first, ``read`` last, compact (what the scripts rely on)."""
    rest = {k: v for k, v in notification.items() if k not in ("id", "read")}
    body = json.dumps(rest, separators=(",", ":"), ensure_ascii=True)
    head = json.dumps({"id": notification["id"]}, separators=(",", ":"))[:-1]
    tail = _READ_TAIL if notification.get("read") else _UNREAD_TAIL
    return head + ("," + body[1:-1] if len(body) > 2 else "") + tail


def _prefix(notification_id: str) -> str:
    return f'{{"id":"{notification_id}",'


@dataclass(frozen=True)
class NotificationPage:
    """What ``list`` returns: notifications newest first, and the user's unread count."""

    items: list[dict[str, Any]]
    unread: int


@dataclass(frozen=True)
class MarkResult:
    marked: int  # notifications that were unread and are read now
    unread: int  # unread notifications left


class NotificationOps:
    """Every notification operation as a plan; the faces run them."""

    def __init__(self, keys: KeySchema, *, max_items: int, ttl: int):
        ttl_ms(ttl, "notifications ttl")
        if max_items < 1:
            raise InvalidArgument(f"notifications max must be at least 1, got {max_items}")
        self.keys = keys
        self.max_items = max_items
        self.ttl = int(ttl)

    def _keys(self, user_id: str) -> list[str]:
        check_id(user_id, "user id")
        return [self.keys.notifications(user_id), self.keys.notifications_unread(user_id)]

    def add_args(self, notification: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
        """(keys, args) of the add script for ``notification`` (built by ``new_notification``)."""
        keys = self._keys(str(notification["userId"]))
        args = [encode(notification), _prefix(notification["id"]), self.max_items, self.ttl]
        return keys, args

    def add(self, notification: Mapping[str, Any]) -> Plan[int | None]:
        """Store a new notification; the unread count after, or None if its id was there."""
        keys, args = self.add_args(notification)
        unread = yield _ADD(keys, args)
        return None if int(unread) < 0 else int(unread)

    def list(
        self, user_id: str, *, limit: int = 50, unread_only: bool = False
    ) -> Plan[NotificationPage]:
        """Up to ``limit`` notifications, newest first (only unread ones if asked)."""
        if limit < 1:
            raise InvalidArgument(f"limit must be at least 1, got {limit}")
        key, unread_key = self._keys(user_id)
        stop = -1 if unread_only else limit - 1
        raw, unread = yield pipeline(cmd("lrange", key, 0, stop), cmd("get", unread_key))
        items: list[dict[str, Any]] = []
        for item in raw:
            if unread_only and not item.endswith(_UNREAD_TAIL):
                continue
            items.append(json.loads(item))
            if len(items) >= limit:
                break
        return NotificationPage(items, int(unread or 0))

    def mark_read(self, user_id: str, ids: Sequence[str] | None = None) -> Plan[MarkResult]:
        """Mark the given notifications read (all of them when ``ids`` is None).

        Unknown ids and ids already read are ignored.
        """
        for value in ids or ():
            if not valid_id(value):
                raise InvalidArgument(
                    f"a notification id is 1-{ID_MAX} of [A-Za-z0-9_-], got {value!r}"
                )
        if ids is not None and not ids:
            return MarkResult(0, (yield from self.unread_count(user_id)))
        args = ["1"] if ids is None else ["0", *(_prefix(i) for i in dict.fromkeys(ids))]
        marked, unread = yield _MARK_READ(self._keys(user_id), args)
        return MarkResult(int(marked), int(unread))

    def unread_count(self, user_id: str) -> Plan[int]:
        count = yield cmd("get", self._keys(user_id)[1])
        return int(count or 0)


def add_to(pipe: Any, ops: NotificationOps, notification: Mapping[str, Any]) -> None:
    """Queue the add of ``notification`` on ``pipe`` (e.g. the consumer's ``ctx.tx``).

    EVAL with the script's text, not EVALSHA: inside MULTI, a server that lost the
    script would fail that one command while the others (the idempotency marker)
    still ran. The reply is the unread count after the add, or -1 for an id that was
    there already.
    """
    keys, args = ops.add_args(notification)
    pipe.eval(_ADD.source, len(keys), *keys, *args)


class Notifications(SyncFace[NotificationOps]):
    """A user's notifications (blocking face: the consumer, tests, the CLI)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        max_items: int,
        ttl: int,
        executor: SyncExecutor | None = None,
    ):
        super().__init__(
            client, keys, NotificationOps(keys, max_items=max_items, ttl=ttl), executor
        )

    add = sync_op(NotificationOps.add)
    list = sync_op(NotificationOps.list)
    mark_read = sync_op(NotificationOps.mark_read)
    unread_count = sync_op(NotificationOps.unread_count)


class AsyncNotifications(AsyncFace[NotificationOps]):
    """``Notifications``, awaited (the API's routes)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: KeySchema,
        *,
        max_items: int,
        ttl: int,
        executor: AsyncExecutor | None = None,
    ):
        super().__init__(
            client, keys, NotificationOps(keys, max_items=max_items, ttl=ttl), executor
        )

    add = async_op(NotificationOps.add)
    list = async_op(NotificationOps.list)
    mark_read = async_op(NotificationOps.mark_read)
    unread_count = async_op(NotificationOps.unread_count)


def ops_from(state: StateSettings, keys: KeySchema) -> NotificationOps:
    """The operations with the configured cap and TTL."""
    return NotificationOps(keys, max_items=state.notifications_max, ttl=state.notifications_ttl)


__all__ = [
    "ID_MAX",
    "KINDS",
    "AsyncNotifications",
    "MarkResult",
    "NotificationOps",
    "NotificationPage",
    "Notifications",
    "add_to",
    "encode",
    "new_notification",
    "notification_id",
    "ops_from",
    "valid_id",
]
