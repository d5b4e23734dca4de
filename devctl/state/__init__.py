"""The Redis-backed domain: key schema, sessions, user cache, presence, rate limits,
message cache and pub/sub.

    from devctl.state import from_settings
    state = from_settings(settings, endpoints)
    new = state.sessions.create("42", ip="1.2.3.4")
    state.sessions.validate(new.token)

The same operations for asyncio (the API): ``devctl.state.aio.async_from_settings``.
Each operation is written once, as a plan (``devctl.state.plan``) that both faces run.

Every operation raises ``devctl.errors.RedisUnavailable`` when Redis cannot be
reached within the configured timeouts, and nothing else for that condition;
a bad argument (empty id, impossible TTL) raises ``InvalidArgument`` (a UsageError).
See docs/state.md for the design.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from devctl.errors import RedisUnavailable

if TYPE_CHECKING:
    import redis

    from devctl.clients.endpoints import Endpoints
    from devctl.config.loader import Settings
    from devctl.config.schema import StateSettings
    from devctl.state.aio import AsyncStateServices, async_from_settings
    from devctl.state.keys import KeySchema
    from devctl.state.messages import MessageCache
    from devctl.state.presence import Presence, PresenceStatus
    from devctl.state.pubsub import PubSub
    from devctl.state.ratelimit import RateLimiter
    from devctl.state.sessions import SessionInfo, Sessions
    from devctl.state.user_cache import UserCache
    from devctl.state.validate import InvalidArgument

__all__ = [
    "AsyncStateServices",
    "InvalidArgument",
    "KeySchema",
    "MessageCache",
    "Presence",
    "PresenceStatus",
    "PubSub",
    "RateLimiter",
    "SessionInfo",
    "Sessions",
    "StateServices",
    "UserCache",
    "async_from_settings",
    "build",
    "count_sessions",
    "from_settings",
]

# The services import redis-py (~90 ms); importing them here, as this package once
# did, made every import of a submodule (`devctl keys` needs only state.keys) pay
# for it. They are loaded on first use of the name instead.
_LAZY = {
    "AsyncStateServices": "devctl.state.aio",
    "async_from_settings": "devctl.state.aio",
    "InvalidArgument": "devctl.state.validate",
    "KeySchema": "devctl.state.keys",
    "MessageCache": "devctl.state.messages",
    "Presence": "devctl.state.presence",
    "PresenceStatus": "devctl.state.presence",
    "PubSub": "devctl.state.pubsub",
    "RateLimiter": "devctl.state.ratelimit",
    "SessionInfo": "devctl.state.sessions",
    "Sessions": "devctl.state.sessions",
    "UserCache": "devctl.state.user_cache",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is an ordinary global
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


@dataclass
class StateServices:
    client: redis.Redis
    keys: KeySchema
    sessions: Sessions
    user_cache: UserCache
    presence: Presence
    ratelimits: RateLimiter
    messages: MessageCache
    pubsub: PubSub

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> StateServices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build(
    client: redis.Redis, state: StateSettings, *, prefix: str = "devconnect:", stats: bool = True
) -> StateServices:
    """Wire the services around an existing client (which must decode responses)."""
    from devctl.state._redis import SyncExecutor
    from devctl.state.keys import KeySchema
    from devctl.state.messages import MessageCache
    from devctl.state.presence import Presence
    from devctl.state.pubsub import PubSub
    from devctl.state.ratelimit import RateLimiter, load_policies
    from devctl.state.sessions import Sessions
    from devctl.state.user_cache import UserCache

    keys = KeySchema(prefix)
    run = SyncExecutor(client)  # one, so its round_trips counts what the services send
    return StateServices(
        client=client,
        keys=keys,
        sessions=Sessions(
            client, keys, ttl=state.session_ttl, sliding=state.session_sliding, executor=run
        ),
        user_cache=UserCache(client, keys, ttl=state.user_cache_ttl, stats=stats, executor=run),
        presence=Presence(client, keys, instance_ttl=state.presence_instance_ttl, executor=run),
        ratelimits=RateLimiter(client, keys, load_policies(state.rate_limits), executor=run),
        messages=MessageCache(
            client,
            keys,
            size=state.message_cache_size,
            ttl=state.message_cache_ttl,
            stats=stats,
            executor=run,
        ),
        pubsub=PubSub(client, keys),
    )


def from_settings(
    settings: Settings,
    endpoints: Endpoints,
    *,
    client: redis.Redis | None = None,
    prefix: str | None = None,
    stats: bool = True,
) -> StateServices:
    """The services for the configured stack (a client with the configured timeouts).

    ``stats=False`` leaves the cache hit/miss counters alone (used by `devctl test`).
    """
    if client is None:
        from devctl.clients.redis_client import make_redis

        client = make_redis(endpoints, settings, decode=True)
    return build(
        client,
        settings.state,
        prefix=settings.redis.key_prefix if prefix is None else prefix,
        stats=stats,
    )


def count_sessions(settings: Settings, endpoints: Endpoints) -> tuple[int, int]:
    """(live sessions, users with at least one), as ``Sessions.count`` counts them.

    It needs one SCAN and none of the services: over a plain socket
    (``PlainRedis``) it imports neither redis-py (~90 ms) nor them. A URL only
    redis-py can reach (TLS, unix socket, options) goes through ``Sessions.count``.
    Errors are those of ``Sessions.count``.
    """
    from devctl.clients.redis_client import CredentialsRefused, ResponseError, plain_redis
    from devctl.state.keys import KeySchema

    keys = KeySchema(settings.redis.key_prefix)
    operation = "Sessions.count"  # what the error names, as redis_operation would
    try:
        conn = plain_redis(endpoints, settings)
        if conn is None:
            with from_settings(settings, endpoints) as state:
                return state.sessions.count()
        with conn:
            return tally_sessions(conn.scan_iter(keys.scan_pattern("session")), keys.prefix)
    # The words of devctl.state._redis.unavailable, which imports redis-py.
    except CredentialsRefused as exc:
        raise RedisUnavailable(
            f"Redis refused the credentials ({operation})",
            hint="set DEVCTL_REDIS_PASSWORD or put the password in REDIS_URL",
        ) from exc
    except (ConnectionError, TimeoutError) as exc:
        raise RedisUnavailable(f"Redis is not reachable ({operation}): {exc}") from exc
    except ResponseError as exc:  # an error reply to connection set-up (SELECT)
        from devctl.state._redis import setup_refused

        refused = setup_refused(exc)
        if refused is None:
            raise RedisUnavailable(f"Redis refused {operation}: {exc}") from exc
        raise refused from exc


def tally_sessions(session_keys: Iterable[str], prefix: str) -> tuple[int, int]:
    """(session keys, distinct users among them) of session keys under ``prefix``."""
    from devctl.state.keys import user_from_key

    sessions = 0
    users: set[str] = set()
    for key in session_keys:
        sessions += 1
        users.add(user_from_key(key, prefix))
    return sessions, len(users)
