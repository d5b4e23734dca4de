"""Cache-aside user cache with invalidation, an email -> id map and stampede protection.

The loader (the database) is passed in by the caller; this module knows nothing
of the database. Stampede protection is a single-flight lock: on a miss one
caller takes a lock (``lock_ttl``, 5 s) and loads; the others wait for its fill
as long as that lock lives, however slow the database, and when a lock goes
without a fill one of them takes it over. Only a loader that outlives its whole
lock lets a second caller load. A loader that finds nothing leaves a short
"absent" marker in the lock so its waiters return None instead of each asking
the database in turn.

Version counters close the classic cache-aside race (read the old row, the
profile is edited and the cache invalidated, the stale row is written back): a
fill is dropped if an invalidation happened since the miss was observed. The
user entry and the email -> id entry each have one.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from devctl.state._redis import Script, execute_with_scripts, redis_operation
from devctl.state.keys import KeySchema

UserLoader = Callable[[str], Mapping[str, Any] | None]
EmailLoader = Callable[[str], str | None]

# Fields never cached, whatever the loader returns.
_PRIVATE_FIELDS = ("password",)
# Lock value meaning "the loader found nothing": waiters return None (the scripts spell it too).
_ABSENT = "absent"
_ABSENT_MS = 250

# KEYS: entry, version[, lock]. ARGV: value ('' = nothing to cache), ttl ms,
# version seen at the miss, lock token ('' = no lock), absent-marker ttl ms (0 = none).
_FILL = Script(
    """
local filled = 0
if ARGV[1] ~= '' and (redis.call('GET', KEYS[2]) or '0') == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  filled = 1
end
if KEYS[3] and ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then
  if ARGV[1] == '' and tonumber(ARGV[5]) > 0 then
    redis.call('SET', KEYS[3], 'absent', 'PX', ARGV[5])
  else
    redis.call('DEL', KEYS[3])
  end
end
return filled
"""
)

# KEYS: entry, version[, lock]. ARGV: value or '' (invalidate), ttl ms, version ttl ms.
_WRITE = Script(
    """
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if KEYS[3] and redis.call('GET', KEYS[3]) == 'absent' then redis.call('DEL', KEYS[3]) end
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
        stats: bool = True,
    ):
        self.client = client
        self.keys = keys
        self.ttl_ms = max(1, round(ttl * 1000))
        self.lock_ttl_ms = max(1, round(lock_ttl * 1000))
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
        keys = [key, version_key, lock_key]
        # Wait for another loader's fill for at most one lock lifetime: its lock ends by
        # then (filled, released or expired), and a waiter takes over a lock left free.
        deadline = time.monotonic() + self.lock_ttl_ms / 1000
        delay = 0.005
        locked, cached = self._try_lock(key, lock_key, lock)
        while not locked and cached is None:
            if time.monotonic() >= deadline:
                lock = ""  # we load without the lock; the fill still honours the version
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            # One MGET (one slot): a fill sets the entry and frees the lock atomically.
            cached, holder = self.client.mget(key, lock_key)
            if holder == _ABSENT:
                return None
            if cached is None and holder is None:  # the loader left without a fill: take over
                locked, cached = self._try_lock(key, lock_key, lock)
        if cached is not None:
            if locked:  # filled just before we took the lock
                _FILL(self.client, keys, ["", 1, "-", lock, 0])
            return dict(json.loads(cached))

        try:
            loaded = loader(user_id)
        except BaseException:
            if lock:
                _FILL(self.client, keys, ["", 1, "-", lock, 0])
            raise
        if loaded is None:
            if lock:
                _FILL(self.client, keys, ["", 1, "-", lock, _ABSENT_MS])
            return None
        payload = _encode(loaded)
        _FILL(self.client, keys, [payload, self.ttl_ms, seen_version, lock, 0])
        return dict(json.loads(payload))

    def _try_lock(self, key: str, lock_key: str, lock: str) -> tuple[bool, Any]:
        """Take the fill lock; and the entry, in case a fill landed just before."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(lock_key, lock, nx=True, px=self.lock_ttl_ms)
        pipe.get(key)
        locked, cached = pipe.execute()
        return bool(locked), cached

    @redis_operation
    def peek(self, user_id: str) -> dict[str, Any] | None:
        """The cached user, without loading or counting."""
        cached = self.client.get(self.keys.user(user_id))
        return dict(json.loads(cached)) if cached is not None else None

    @redis_operation
    def put(self, user: Mapping[str, Any]) -> None:
        """Write a user through (e.g. after a profile edit); fills racing it are dropped."""
        user_id = str(user["_id"])
        _WRITE(self.client, self._user_keys(user_id), [_encode(user), self.ttl_ms, 2 * self.ttl_ms])

    @redis_operation
    def invalidate(self, user_id: str, *emails: str) -> bool:
        """Drop a user (and the given email mappings) on a profile change; True if it was cached.

        Each dropped mapping's version is bumped too, so a lookup of the old email that
        raced this cannot write the old mapping back.
        """

        def build(pipe: Any) -> None:
            _WRITE.queue(pipe, self._user_keys(user_id), ["", self.ttl_ms, 2 * self.ttl_ms])
            for email in emails:
                self._queue_email_write(pipe, email, "")

        return bool(execute_with_scripts(self.client, build, [_WRITE])[0])

    @redis_operation
    def user_id_for_email(self, email: str, loader: EmailLoader) -> str | None:
        """The user id of an email (case-insensitive), from the cache else from ``loader``."""
        key = self.keys.email(email)
        version_key = self.keys.email_version(email)
        pipe = self.client.pipeline(transaction=False)
        pipe.get(key)
        pipe.get(version_key)
        self._count(pipe, "email", "lookups")
        cached, version, *_ = pipe.execute()
        if cached is not None:
            return str(cached)
        if self.stats:
            self.client.hincrby(self.keys.cache_stats(), "email:misses", 1)
        user_id = loader(email.strip().lower())
        if user_id is not None:
            _FILL(self.client, [key, version_key], [user_id, self.ttl_ms, version or "0", "", 0])
        return user_id

    @redis_operation
    def remember_email(self, email: str, user_id: str) -> None:
        """Write a mapping through; a lookup racing it cannot overwrite it."""
        execute_with_scripts(
            self.client, lambda pipe: self._queue_email_write(pipe, email, user_id), [_WRITE]
        )

    @redis_operation
    def forget_email(self, email: str) -> None:
        """Drop a mapping; a lookup racing it cannot write it back."""
        execute_with_scripts(
            self.client, lambda pipe: self._queue_email_write(pipe, email, ""), [_WRITE]
        )

    def _user_keys(self, user_id: str) -> list[str]:
        return [
            self.keys.user(user_id),
            self.keys.user_version(user_id),
            self.keys.user_lock(user_id),
        ]

    def _queue_email_write(self, pipe: Any, email: str, user_id: str) -> None:
        _WRITE.queue(
            pipe,
            [self.keys.email(email), self.keys.email_version(email)],
            [user_id, self.ttl_ms, 2 * self.ttl_ms],
        )

    def _count(self, pipe: Any, kind: str, what: str) -> None:
        if self.stats:
            pipe.hincrby(self.keys.cache_stats(), f"{kind}:{what}", 1)
