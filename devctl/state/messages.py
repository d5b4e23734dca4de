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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from devctl.state._redis import Script, redis_operation
from devctl.state.keys import KeySchema

Message = dict[str, Any]
# loader(user_a, user_b, n) -> the conversation's last n messages, oldest first.
MessageLoader = Callable[[str, str, int], Sequence[Mapping[str, Any]]]

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


class MessageCache:
    """The last N messages of each conversation, oldest first."""

    def __init__(
        self, client: redis.Redis, keys: KeySchema, *, size: int, ttl: int, stats: bool = True
    ):
        self.client = client
        self.keys = keys
        self.size = size
        self.ttl = ttl
        self.stats = stats

    def _keys(self, user_a: str, user_b: str) -> list[str]:
        return [
            self.keys.conversation(user_a, user_b),
            self.keys.conversation_version(user_a, user_b),
        ]

    @redis_operation
    def append(self, user_a: str, user_b: str, message: Mapping[str, Any]) -> bool:
        """Add a message to its conversation's cache; False if that cache is not filled yet."""
        return bool(
            _APPEND(
                self.client, self._keys(user_a, user_b), [_encode(message), self.size, self.ttl]
            )
        )

    @redis_operation
    def recent(
        self,
        user_a: str,
        user_b: str,
        limit: int | None = None,
        loader: MessageLoader | None = None,
    ) -> list[Message]:
        """The last ``limit`` messages, oldest first: from the cache, else from ``loader``.

        Without a loader a miss returns []. A limit above the cache size goes to the loader.
        """
        want = self.size if limit is None else limit
        if want < 1:
            return []
        if want > self.size:
            return [dict(m) for m in loader(user_a, user_b, want)] if loader else []
        key, version_key = self._keys(user_a, user_b)
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(key, -want, -1)
        pipe.get(version_key)
        if self.stats:
            pipe.hincrby(self.keys.cache_stats(), "messages:lookups", 1)
        cached, version, *_ = pipe.execute()
        if cached:
            return [json.loads(m) for m in cached]
        if self.stats:
            self.client.hincrby(self.keys.cache_stats(), "messages:misses", 1)
        if loader is None:
            return []
        loaded = [dict(m) for m in loader(user_a, user_b, self.size)][-self.size :]
        if loaded:
            _FILL(
                self.client,
                [key, version_key],
                [version or "0", self.ttl, *(_encode(m) for m in loaded)],
            )
        return loaded[-want:]

    @redis_operation
    def invalidate(self, user_a: str, user_b: str) -> bool:
        """Drop a conversation's cache (e.g. after a message was deleted)."""
        pipe = self.client.pipeline(transaction=True)
        key, version_key = self._keys(user_a, user_b)
        pipe.delete(key)
        pipe.incr(version_key)
        pipe.expire(version_key, self.ttl)
        return bool(pipe.execute()[0])
