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

``hits`` and ``misses`` count this process's user lookups (for the API's
metrics), whether or not the shared counters in Redis are kept (``stats``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis

from devctl.state._redis import SyncExecutor, SyncFace, sync_op
from devctl.state.keys import KeySchema
from devctl.state.plan import Call, Command, Eval, Plan, Script, Sleep, cmd, pipeline

UserLoader = Callable[[str], Mapping[str, Any] | None]
EmailLoader = Callable[[str], str | None]
# What the async face also accepts: ``async def`` loaders (the executor awaits them).
AnyUserLoader = Callable[[str], Awaitable[Mapping[str, Any] | None] | Mapping[str, Any] | None]
AnyEmailLoader = Callable[[str], Awaitable[str | None] | str | None]

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


class UserCacheOps:
    """Every user-cache operation as a plan; ``UserCache`` and ``AsyncUserCache`` run them."""

    def __init__(self, keys: KeySchema, *, ttl: float, lock_ttl: float = 5.0, stats: bool = True):
        self.keys = keys
        self.ttl_ms = max(1, round(ttl * 1000))
        self.lock_ttl_ms = max(1, round(lock_ttl * 1000))
        self.stats = stats
        self.hits = 0
        self.misses = 0

    def get(self, user_id: str, loader: AnyUserLoader) -> Plan[dict[str, Any] | None]:
        """The user from the cache, else from ``loader`` (one caller at a time); None if unknown."""
        key = self.keys.user(user_id)
        version_key = self.keys.user_version(user_id)
        cached, version, *_ = yield pipeline(
            cmd("get", key), cmd("get", version_key), *self._count("user", "lookups")
        )
        if cached is not None:
            self.hits += 1
            return dict(json.loads(cached))
        self.misses += 1
        if self.stats:
            yield cmd("hincrby", self.keys.cache_stats(), "user:misses", 1)
        seen_version = version or "0"

        lock_key = self.keys.user_lock(user_id)
        lock = secrets.token_hex(8)
        keys = [key, version_key, lock_key]
        # Wait for another loader's fill for at most one lock lifetime: its lock ends by
        # then (filled, released or expired), and a waiter takes over a lock left free.
        deadline = time.monotonic() + self.lock_ttl_ms / 1000
        delay = 0.005
        locked, cached = yield from self._try_lock(key, lock_key, lock)
        while not locked and cached is None:
            if time.monotonic() >= deadline:
                lock = ""  # we load without the lock; the fill still honours the version
                break
            yield Sleep(delay)
            delay = min(delay * 2, 0.05)
            # One MGET (one slot): a fill sets the entry and frees the lock atomically.
            cached, holder = yield cmd("execute_command", "MGET", key, lock_key)
            if holder == _ABSENT:
                return None
            if cached is None and holder is None:  # the loader left without a fill: take over
                locked, cached = yield from self._try_lock(key, lock_key, lock)
        if cached is not None:
            if locked:  # filled just before we took the lock
                yield _FILL(keys, ["", 1, "-", lock, 0])
            return dict(json.loads(cached))

        try:
            loaded = yield Call(loader, (user_id,))
        except GeneratorExit:  # the plan was dropped unfinished: no request can be made
            raise
        except BaseException:
            if lock:
                yield _FILL(keys, ["", 1, "-", lock, 0])
            raise
        if loaded is None:
            if lock:
                yield _FILL(keys, ["", 1, "-", lock, _ABSENT_MS])
            return None
        payload = _encode(loaded)
        yield _FILL(keys, [payload, self.ttl_ms, seen_version, lock, 0])
        return dict(json.loads(payload))

    def _try_lock(self, key: str, lock_key: str, lock: str) -> Plan[tuple[bool, Any]]:
        """Take the fill lock; and the entry, in case a fill landed just before."""
        locked, cached = yield pipeline(
            cmd("set", lock_key, lock, nx=True, px=self.lock_ttl_ms), cmd("get", key)
        )
        return bool(locked), cached

    def peek(self, user_id: str) -> Plan[dict[str, Any] | None]:
        """The cached user, without loading or counting."""
        cached = yield cmd("get", self.keys.user(user_id))
        return dict(json.loads(cached)) if cached is not None else None

    def put(self, user: Mapping[str, Any]) -> Plan[None]:
        """Write a user through (e.g. after a profile edit); fills racing it are dropped."""
        user_id = str(user["_id"])
        yield _WRITE(self._user_keys(user_id), [_encode(user), self.ttl_ms, 2 * self.ttl_ms])

    def invalidate(self, user_id: str, *emails: str) -> Plan[bool]:
        """Drop a user (and the given email mappings) on a profile change; True if it was cached.

        Each dropped mapping's version is bumped too, so a lookup of the old email that
        raced this cannot write the old mapping back.
        """
        replies = yield pipeline(
            _WRITE(self._user_keys(user_id), ["", self.ttl_ms, 2 * self.ttl_ms]),
            *(self._email_write(email, "") for email in emails),
        )
        return bool(replies[0])

    def user_id_for_email(self, email: str, loader: AnyEmailLoader) -> Plan[str | None]:
        """The user id of an email (case-insensitive), from the cache else from ``loader``."""
        key = self.keys.email(email)
        version_key = self.keys.email_version(email)
        cached, version, *_ = yield pipeline(
            cmd("get", key), cmd("get", version_key), *self._count("email", "lookups")
        )
        if cached is not None:
            return str(cached)
        if self.stats:
            yield cmd("hincrby", self.keys.cache_stats(), "email:misses", 1)
        user_id: str | None = yield Call(loader, (email.strip().lower(),))
        if user_id is not None:
            yield _FILL([key, version_key], [user_id, self.ttl_ms, version or "0", "", 0])
        return user_id

    def remember_email(self, email: str, user_id: str) -> Plan[None]:
        """Write a mapping through; a lookup racing it cannot overwrite it."""
        yield self._email_write(email, user_id)

    def forget_email(self, email: str) -> Plan[None]:
        """Drop a mapping; a lookup racing it cannot write it back."""
        yield self._email_write(email, "")

    def _user_keys(self, user_id: str) -> list[str]:
        return [
            self.keys.user(user_id),
            self.keys.user_version(user_id),
            self.keys.user_lock(user_id),
        ]

    def _email_write(self, email: str, user_id: str) -> Eval:
        return _WRITE(
            [self.keys.email(email), self.keys.email_version(email)],
            [user_id, self.ttl_ms, 2 * self.ttl_ms],
        )

    def _count(self, kind: str, what: str) -> list[Command]:
        if not self.stats:
            return []
        return [cmd("hincrby", self.keys.cache_stats(), f"{kind}:{what}", 1)]


class UserCache(SyncFace[UserCacheOps]):
    """Cached user objects (the DevConnect user without its password)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        ttl: float,
        lock_ttl: float = 5.0,
        stats: bool = True,
        executor: SyncExecutor | None = None,
    ):
        ops = UserCacheOps(keys, ttl=ttl, lock_ttl=lock_ttl, stats=stats)
        super().__init__(client, keys, ops, executor)

    @property
    def hits(self) -> int:
        """User lookups this process answered from the cache."""
        return self.ops.hits

    @property
    def misses(self) -> int:
        """User lookups this process did not find in the cache."""
        return self.ops.misses

    @property
    def ttl_ms(self) -> int:
        return self.ops.ttl_ms

    # A coroutine loader is refused by the sync executor (TypeError).
    get = sync_op(UserCacheOps.get)
    peek = sync_op(UserCacheOps.peek)
    put = sync_op(UserCacheOps.put)
    invalidate = sync_op(UserCacheOps.invalidate)
    user_id_for_email = sync_op(UserCacheOps.user_id_for_email)
    remember_email = sync_op(UserCacheOps.remember_email)
    forget_email = sync_op(UserCacheOps.forget_email)
