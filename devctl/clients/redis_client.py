"""Redis clients with timeouts, so a hung server can never hang a caller."""

from __future__ import annotations

import time

import redis

from devctl.clients.endpoints import Endpoints, unreachable_hint
from devctl.config.loader import Settings, redact_url
from devctl.errors import RedisUnavailable


def make_redis(endpoints: Endpoints, settings: Settings, *, decode: bool = True) -> redis.Redis:
    if "redis" in endpoints.not_running:
        raise RedisUnavailable(
            f"redis of the {endpoints.engine} stack is not running",
            hint=unreachable_hint(endpoints.engine),
        )
    conf = settings.redis
    # The local engine's URL carries the password its server was started with (or
    # none): one source of credentials, whatever a later command's environment says.
    password = None if endpoints.engine == "local" else conf.password or None
    return redis.Redis.from_url(
        endpoints.redis_url,
        password=password,
        socket_connect_timeout=conf.connect_timeout,
        socket_timeout=conf.socket_timeout,
        decode_responses=decode,
        health_check_interval=30,
        client_name="devctl",
    )


def ping(client: redis.Redis, url: str, engine: str = "local") -> float:
    """PING once; return the latency in milliseconds or raise RedisUnavailable."""
    started = time.perf_counter()
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(
            f"Redis at {redact_url(url)} refused the credentials",
            hint="set DEVCTL_REDIS_PASSWORD or put the password in REDIS_URL",
        ) from exc
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailable(
            f"Redis at {redact_url(url)} is not reachable: {exc}", hint=unreachable_hint(engine)
        ) from exc
    return (time.perf_counter() - started) * 1000
