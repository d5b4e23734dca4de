"""Cache-aside user cache with invalidation, an email -> id map and stampede protection.

The loader (the database) is passed in by the caller; this module knows nothing
of the database. Stampede protection is a single-flight lock: on a miss one
caller takes a short lock and reloads, the others wait briefly for its result.
A version counter closes the classic cache-aside race (read old row, profile
edited and cache invalidated, stale row written back): a fill is dropped if an
invalidation happened since the miss was observed.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from devctl.state._redis import Script, redis_operation
from devctl.state.keys import KeySchema

UserLoader = Callable[[str], Mapping[str, Any] | None]
EmailLoader = Callable[[str], str | None]

# Fields never cached, whatever the loader returns.
_PRIVATE_FIELDS = ("password",)

# KEYS: user, version, lock. ARGV: json, ttl ms, version seen at the miss, lock token.
_FILL = Script(
    """
local filled = 0
if (redis.call('GET', KEYS[2]) or '0') == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  filled = 1
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
return filled
"""
)

# KEYS: user, version. ARGV: json or '' (invalidate), ttl ms, version ttl ms.
_WRITE = Script(
    """
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[1] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)


def _encode(user: Mapping[str, Any]) -> str:
    clean = {k: v for k, v in user.items() if k not in _PRIVATE_FIELDS}
    return json.dumps(clean, separators=(",", ":"), default=str)


class UserCache:
    """Cached user objects (the DevConnect user without its password)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        ttl: float,
        lock_ttl: float = 5.0,
        lock_wait: float = 2.0,
        stats: bool = True,
    ):
        self.client = client
        self.keys = keys
        self.ttl_ms = max(1, round(ttl * 1000))
        self.lock_ttl_ms = max(1, round(lock_ttl * 1000))
        self.lock_wait = lock_wait
        self.stats = stats

    @redis_operation
    def get(self, user_id: str, loader: UserLoader) -> dict[str, Any] | None:
        """The user from the cache, else from ``loader`` (one caller at a time); None if unknown."""
        key = self.keys.user(user_id)
        version_key = self.keys.user_version(user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.get(key)
        pipe.get(version_key)
        self._count(pipe, "user", "lookups")
        cached, version, *_ = pipe.execute()
        if cached is not None:
            return dict(json.loads(cached))
        if self.stats:
            self.client.hincrby(self.keys.cache_stats(), "user:misses", 1)
        seen_version = version or "0"

        lock_key = self.keys.user_lock(user_id)
        lock = secrets.token_hex(8)
        if not self.client.set(lock_key, lock, nx=True, px=self.lock_ttl_ms):
            # Someone else is loading: wait for their fill instead of hitting the database too.
            deadline = time.monotonic() + self.lock_wait
            delay = 0.005
            while time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                pipe = self.client.pipeline(transaction=False)
                pipe.get(key)
                pipe.exists(lock_key)
                cached, locked = pipe.execute()
                if cached is not None:
                    return dict(json.loads(cached))
                if not locked:
                    break
            lock = ""  # we load without the lock; the fill still honours the version

        try:
            loaded = loader(user_id)
        except BaseException:
            if lock:
                _FILL(self.client, [key, version_key, lock_key], ["", 1, "-", lock])
            raise
        if loaded is None:
            if lock:
                _FILL(self.client, [key, version_key, lock_key], ["", 1, "-", lock])
            return None
        payload = _encode(loaded)
        _FILL(self.client, [key, version_key, lock_key], [payload, self.ttl_ms, seen_version, lock])
        return dict(json.loads(payload))

    @redis_operation
    def peek(self, user_id: str) -> dict[str, Any] | None:
        """The cached user, without loading or counting."""
        cached = self.client.get(self.keys.user(user_id))
        return dict(json.loads(cached)) if cached is not None else None

    @redis_operation
    def put(self, user: Mapping[str, Any]) -> None:
        """Write a user through (e.g. after a profile edit); fills racing it are dropped."""
        user_id = str(user["_id"])
        _WRITE(
            self.client,
            [self.keys.user(user_id), self.keys.user_version(user_id)],
            [_encode(user), self.ttl_ms, 2 * self.ttl_ms],
        )

    @redis_operation
    def invalidate(self, user_id: str, *emails: str) -> bool:
        """Drop a user (and the given email mappings) on a profile change; True if it was cached."""
        deleted = _WRITE(
            self.client,
            [self.keys.user(user_id), self.keys.user_version(user_id)],
            ["", self.ttl_ms, 2 * self.ttl_ms],
        )
        if emails:
            self.client.delete(*(self.keys.email(e) for e in emails))
        return bool(deleted)

    @redis_operation
    def user_id_for_email(self, email: str, loader: EmailLoader) -> str | None:
        """The user id of an email (case-insensitive), from the cache else from ``loader``."""
        key = self.keys.email(email)
        pipe = self.client.pipeline(transaction=False)
        pipe.get(key)
        self._count(pipe, "email", "lookups")
        cached = pipe.execute()[0]
        if cached is not None:
            return str(cached)
        if self.stats:
            self.client.hincrby(self.keys.cache_stats(), "email:misses", 1)
        user_id = loader(email.strip().lower())
        if user_id is not None:
            self.client.set(key, user_id, px=self.ttl_ms)
        return user_id

    @redis_operation
    def remember_email(self, email: str, user_id: str) -> None:
        self.client.set(self.keys.email(email), user_id, px=self.ttl_ms)

    @redis_operation
    def forget_email(self, email: str) -> None:
        self.client.delete(self.keys.email(email))

    def _count(self, pipe: Any, kind: str, what: str) -> None:
        if self.stats:
            pipe.hincrby(self.keys.cache_stats(), f"{kind}:{what}", 1)
