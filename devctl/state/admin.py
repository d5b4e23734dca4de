"""Operator views over the Redis domain: key counts, cache statistics, flushing, seeding.

Everything here walks the keyspace with SCAN (never KEYS), so it is safe on a
live server but proportional to its size: these are ops tools, not request paths.
A walk is one SCAN pass over the prefix, each key classified by its name.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devctl.state._redis import redis_operation
from devctl.state.keys import KINDS, glob_escape
from devctl.state.validate import InvalidArgument, ttl_ms

if TYPE_CHECKING:
    from devctl.state import StateServices
    from devctl.state.sessions import NewSession

# What flushing a cache kind may delete: caches only, never sessions, presence or limits.
CACHE_KINDS: dict[str, tuple[str, ...]] = {
    "user": ("user", "user_lock"),
    "email": ("email",),
    "messages": ("messages",),
}


@dataclass
class CacheStats:
    counters: dict[str, dict[str, int]]  # kind -> lookups, hits, misses
    keys: dict[str, int]  # key kind -> count
    memory_used: int  # bytes, whole server
    memory_human: str
    keyspace_hits: int  # whole server
    keyspace_misses: int

    def to_json(self) -> dict[str, Any]:
        return {
            "caches": self.counters,
            "keys": self.keys,
            "memory": {"used_bytes": self.memory_used, "used_human": self.memory_human},
            "server": {
                "keyspace_hits": self.keyspace_hits,
                "keyspace_misses": self.keyspace_misses,
            },
        }


def _scan(services: StateServices) -> Iterator[tuple[str, str]]:
    """(kind, key) of every key of a known kind under the prefix: ONE pass of SCAN."""
    pattern = glob_escape(services.keys.prefix) + "*"
    for key in services.client.scan_iter(match=pattern, count=1000):
        kind = services.keys.kind_of(key)
        if kind is not None:
            yield kind, key


@redis_operation
def key_counts(services: StateServices) -> dict[str, int]:
    """How many keys of each kind exist (one SCAN, keys classified by name)."""
    counts = dict.fromkeys(KINDS, 0)
    for kind, _ in _scan(services):
        counts[kind] += 1
    return counts


@redis_operation
def cache_stats(services: StateServices) -> CacheStats:
    raw: dict[Any, Any] = services.client.hgetall(services.keys.cache_stats())
    counters: dict[str, dict[str, int]] = {}
    for kind in CACHE_KINDS:
        lookups = int(raw.get(f"{kind}:lookups", 0))
        misses = int(raw.get(f"{kind}:misses", 0))
        counters[kind] = {"lookups": lookups, "hits": max(lookups - misses, 0), "misses": misses}
    memory = services.client.info("memory")
    stats = services.client.info("stats")
    return CacheStats(
        counters,
        key_counts(services),
        int(memory.get("used_memory", 0)),
        str(memory.get("used_memory_human", "")),
        int(stats.get("keyspace_hits", 0)),
        int(stats.get("keyspace_misses", 0)),
    )


@redis_operation
def flush_cache(services: StateServices, kinds: list[str] | None = None) -> dict[str, int]:
    """Delete cache keys of the given kinds (default: every cache); return counts per kind.

    Version counters are bumped for flushed users and conversations so no in-flight
    fill can write back what was just flushed; the stats of flushed kinds are reset.
    """
    chosen = kinds or list(CACHE_KINDS)
    cache_of = {key_kind: kind for kind in chosen for key_kind in CACHE_KINDS[kind]}
    deleted = dict.fromkeys(chosen, 0)
    batches: dict[str, list[str]] = {key_kind: [] for key_kind in cache_of}
    for key_kind, key in _scan(services):
        if key_kind not in batches:
            continue
        batch = batches[key_kind]
        batch.append(key)
        if len(batch) >= 500:
            deleted[cache_of[key_kind]] += _delete(services, batch, key_kind)
            batch.clear()
    for key_kind, batch in batches.items():
        if batch:
            deleted[cache_of[key_kind]] += _delete(services, batch, key_kind)
    for kind in chosen:
        services.client.hdel(services.keys.cache_stats(), f"{kind}:lookups", f"{kind}:misses")
    return deleted


def _delete(services: StateServices, keys: list[str], key_kind: str) -> int:
    # The version counters outlive any fill that could race the flush (as in the caches).
    version_ttl = {
        "user": 2 * services.user_cache.ttl_ms // 1000,
        "email": 2 * services.user_cache.ttl_ms // 1000,
        "messages": services.messages.ttl,
    }.get(key_kind)
    pipe = services.client.pipeline(transaction=False)
    for key in keys:
        pipe.delete(key)
        if version_ttl is not None:
            pipe.incr(services.keys.version_of(key))
            pipe.expire(services.keys.version_of(key), max(1, version_ttl))
    results = pipe.execute()
    step = 3 if version_ttl is not None else 1
    return sum(int(r) for r in results[::step])


# --- seeding (for demos and load tests) ------------------------------------


def seed_user(user_id: str, n: int) -> dict[str, Any]:
    """A plausible DevConnect user object (no password) for seeded data."""
    tiers = ("free", "free", "free", "silver", "gold")
    return {
        "_id": user_id,
        "firstName": "Seed",
        "lastName": f"User{n}",
        "emailId": f"{user_id}@seed.devconnect.test",
        "age": 20 + n % 40,
        "gender": ("male", "female", "others")[n % 3],
        "photoUrl": "",
        "about": "Seeded by devctl",
        "skills": ["python", "redis"][: 1 + n % 2],
        "isPremium": tiers[n % 5] != "free",
        "membershipTier": tiers[n % 5],
        "createdAt": time.time(),
    }


# Seeding sizes above these need a confirmation: far more than a demo or a load
# test on one machine needs, and a presence seed's cost grows with users x instances
# (every presence write passes the dead instances to its script).
SEED_MAX_USERS = 10_000
SEED_MAX_INSTANCES = 100

# Hard limits, refused even when asked to (InvalidArgument): a seed holds its ids in
# memory, and `presence list` sorts at most 100,000 users, so more serves no demo or
# load test on one machine and only ends in a MemoryError or hours of writing.
SEED_HARD_MAX_USERS = 1_000_000
SEED_HARD_MAX_INSTANCES = 10_000

# Users (sessions) or connections written per pipeline while seeding; progress is
# reported after each batch.
SEED_BATCH = 500

Progress = Callable[[int, int], None]  # (done, total)


def _check_seed_size(n: int, what: str, hard_max: int) -> None:
    if not 1 <= n <= hard_max:
        raise InvalidArgument(f"{what} must be between 1 and {hard_max:,}, got {n:,}")


def seed_run_id() -> str:
    """Tells the seeded instances and connections of one run from another's."""
    return f"{int(time.time()):x}{secrets.token_hex(2)}"


@dataclass
class SeededSessions:
    sessions: list[NewSession] = field(default_factory=list)
    users: list[str] = field(default_factory=list)


@redis_operation
def seed_sessions(
    services: StateServices,
    users: int,
    *,
    ttl: float | None = None,
    id_prefix: str = "seed-user-",
    progress: Progress | None = None,
) -> SeededSessions:
    """Cache ``users`` seeded users and create one session for each."""
    _check_seed_size(users, "the number of users", SEED_HARD_MAX_USERS)
    if ttl is not None:
        ttl_ms(ttl, "session ttl")  # refuse a bad TTL before writing anything
    out = SeededSessions()
    for n in range(1, users + 1):
        user_id = f"{id_prefix}{n:05d}"
        services.user_cache.put(seed_user(user_id, n))
        out.sessions.append(
            services.sessions.create(
                user_id,
                ttl=ttl,
                ip=f"10.0.{n // 256 % 256}.{n % 256}",
                user_agent="devctl-seed/1.0",
            )
        )
        out.users.append(user_id)
        if progress is not None and (n % SEED_BATCH == 0 or n == users):
            progress(n, users)
    return out


@dataclass
class SeededPresence:
    instances: list[str]
    users: list[str]
    connections: int
    went_online: int
    run_id: str = ""


@redis_operation
def seed_presence(
    services: StateServices,
    users: int,
    instances: int,
    *,
    ttl: float = 600.0,
    id_prefix: str = "seed-user-",
    progress: Progress | None = None,
) -> SeededPresence:
    """Connect ``users`` users spread over ``instances`` instances that heartbeat for ``ttl`` s.

    Every third user gets a second connection on another instance (a second tab).
    Instance and connection ids hold a run id of their own, so runs never share a
    lease or a connection: a later run with a short TTL cannot end an earlier run's
    leases, and each run's connections go (and are reported) with its own instances.
    The user ids are the same for every run with the same prefix.
    """
    _check_seed_size(users, "the number of users", SEED_HARD_MAX_USERS)
    _check_seed_size(instances, "the number of instances", SEED_HARD_MAX_INSTANCES)
    run = seed_run_id()
    names = [f"seed-{run}-instance-{k}" for k in range(1, instances + 1)]
    ids = [f"{id_prefix}{n:05d}" for n in range(1, users + 1)]
    wanted: list[tuple[str, str, str]] = []
    for n, user_id in enumerate(ids):
        wanted.append((user_id, f"seed-{run}-conn-{n}-a", names[n % instances]))
        if n % 3 == 0:
            wanted.append((user_id, f"seed-{run}-conn-{n}-b", names[(n + 1) % instances]))
    total = len(names) + len(wanted)  # progress counts heartbeats and connections
    for start in range(0, len(names), SEED_BATCH):
        services.presence.heartbeat_many(names[start : start + SEED_BATCH], ttl=ttl)
        if progress is not None:
            progress(min(start + SEED_BATCH, len(names)), total)
    online = 0
    for start in range(0, len(wanted), SEED_BATCH):
        connected = services.presence.connect_many(wanted[start : start + SEED_BATCH])
        online += sum(c.went_online for c in connected)
        if progress is not None:
            progress(len(names) + min(start + SEED_BATCH, len(wanted)), total)
    return SeededPresence(names, ids, len(wanted), online, run)
