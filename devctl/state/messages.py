"""Recent messages per conversation, whichever direction they were sent in.

The key is built from the two user ids in sorted order, so ``a -> b`` and
``b -> a`` share one cache. Append is one Lua script (push, trim to
``state.message_cache_size``, refresh the TTL); it only appends to a cache that
exists, because appending to a missing one would create a cache holding just
the newest message and hide the history. A miss is filled by the loader the
caller passes in; a version counter, bumped by every append, makes a fill that
raced an append drop itself instead of caching a history without that message.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import redis

from devctl.state._redis import SyncExecutor, SyncFace, sync_op
from devctl.state.keys import KeySchema
from devctl.state.plan import Call, Plan, Script, cmd, pipeline

Message = dict[str, Any]
# loader(user_a, user_b, n) -> the conversation's last n messages, oldest first.
MessageLoader = Callable[[str, str, int], Sequence[Mapping[str, Any]]]
# What the async face also accepts: an ``async def`` loader (the executor awaits it).
AnyMessageLoader = Callable[
    [str, str, int], Awaitable[Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]]
]

# KEYS: list, version. ARGV: message json, size, ttl s.
_APPEND = Script(
    """
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS: list, version. ARGV: version seen at the miss, ttl s, messages json...
_FILL = Script(
    """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
)


def _encode(message: Mapping[str, Any]) -> str:
    return json.dumps(dict(message), separators=(",", ":"), default=str)


class MessageCacheOps:
    """Every message-cache operation as a plan; ``MessageCache`` and ``AsyncMessageCache``
    run them."""

    def __init__(self, keys: KeySchema, *, size: int, ttl: int, stats: bool = True):
        self.keys = keys
        self.size = size
        self.ttl = ttl
        self.stats = stats

    def _keys(self, user_a: str, user_b: str) -> list[str]:
        return [
            self.keys.conversation(user_a, user_b),
            self.keys.conversation_version(user_a, user_b),
        ]

    def append(self, user_a: str, user_b: str, message: Mapping[str, Any]) -> Plan[bool]:
        """Add a message to its conversation's cache; False if that cache is not filled yet."""
        appended = yield _APPEND(
            self._keys(user_a, user_b), [_encode(message), self.size, self.ttl]
        )
        return bool(appended)

    def recent(
        self,
        user_a: str,
        user_b: str,
        limit: int | None = None,
        loader: AnyMessageLoader | None = None,
    ) -> Plan[list[Message]]:
        """The last ``limit`` messages, oldest first: from the cache, else from ``loader``.

        Without a loader a miss returns []. A limit above the cache size goes to the loader.
        """
        want = self.size if limit is None else limit
        if want < 1:
            return []
        if want > self.size:
            if loader is None:
                return []
            return [dict(m) for m in (yield Call(loader, (user_a, user_b, want)))]
        key, version_key = self._keys(user_a, user_b)
        counters = [cmd("hincrby", self.keys.cache_stats(), "messages:lookups", 1)]
        cached, version, *_ = yield pipeline(
            cmd("lrange", key, -want, -1),
            cmd("get", version_key),
            *(counters if self.stats else []),
        )
        if cached:
            return [json.loads(m) for m in cached]
        if self.stats:
            yield cmd("hincrby", self.keys.cache_stats(), "messages:misses", 1)
        if loader is None:
            return []
        loaded = [dict(m) for m in (yield Call(loader, (user_a, user_b, self.size)))]
        loaded = loaded[-self.size :]
        if loaded:
            yield _FILL(
                [key, version_key], [version or "0", self.ttl, *(_encode(m) for m in loaded)]
            )
        return loaded[-want:]

    def invalidate(self, user_a: str, user_b: str) -> Plan[bool]:
        """Drop a conversation's cache (e.g. after a message was deleted)."""
        key, version_key = self._keys(user_a, user_b)
        deleted, *_ = yield pipeline(
            cmd("delete", key),
            cmd("incr", version_key),
            cmd("expire", version_key, self.ttl),
            transaction=True,
        )
        return bool(deleted)


class MessageCache(SyncFace[MessageCacheOps]):
    """The last N messages of each conversation, oldest first."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        size: int,
        ttl: int,
        stats: bool = True,
        executor: SyncExecutor | None = None,
    ):
        ops = MessageCacheOps(keys, size=size, ttl=ttl, stats=stats)
        super().__init__(client, keys, ops, executor)

    @property
    def size(self) -> int:
        return self.ops.size

    @property
    def ttl(self) -> int:
        return self.ops.ttl

    append = sync_op(MessageCacheOps.append)
    recent = sync_op(MessageCacheOps.recent)
    invalidate = sync_op(MessageCacheOps.invalidate)
