"""Shared plumbing of the Redis domain: error translation and Lua scripts.

Every public operation of ``devctl.state`` goes through ``translate_errors`` so a
caller only ever has to catch ``RedisUnavailable`` to degrade deliberately.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import redis
from redis.exceptions import NoScriptError

from devctl.errors import ConfigError, DevctlError, RedisUnavailable

P = ParamSpec("P")
R = TypeVar("R")

# Errors meaning "Redis is not there": refused, reset, timed out, loading, auth, and a
# server that does not speak RESP at all (another service on the port).
_UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
    redis.exceptions.InvalidResponse,
)


def setup_refused(exc: BaseException) -> DevctlError | None:
    """The configuration error behind a reply to connection set-up, or None.

    The URL's database number is SELECTed on connect; a server with fewer databases
    answers with an error reply that is the configuration's fault, not an outage.
    """
    if "DB index is out of range" in str(exc):
        return ConfigError(
            "the server has no such database: " + str(exc),
            key="redis.url",
            hint="use a database number below the server's `databases` setting (0-15 by default)",
        )
    return None


def unavailable(operation: str, exc: BaseException) -> RedisUnavailable:
    """The one error callers catch when Redis cannot be reached."""
    if isinstance(exc, redis.AuthenticationError):
        return RedisUnavailable(
            f"Redis refused the credentials ({operation})",
            hint="set DEVCTL_REDIS_PASSWORD or put the password in REDIS_URL",
        )
    return RedisUnavailable(f"Redis is not reachable ({operation}): {exc}")


@contextmanager
def translate_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except _UNAVAILABLE as exc:
        raise unavailable(operation, exc) from exc


def redis_operation(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a public method: Redis connection/timeout errors become RedisUnavailable."""
    name = func.__qualname__

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # A plain try (not `with translate_errors`) keeps the per-request cost down.
        try:
            return func(*args, **kwargs)
        except _UNAVAILABLE as exc:
            raise unavailable(name, exc) from exc
        except redis.ResponseError as exc:
            refused = setup_refused(exc)
            if refused is None:
                raise
            raise refused from exc

    return wrapper


class Script:
    """A Lua script run by EVALSHA, loaded on demand (again after a server restart).

    Unlike redis-py's ``register_script`` inside a pipeline, queueing it in a
    pipeline costs no extra SCRIPT EXISTS round trip.
    """

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def __call__(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue on a pipeline; run it with ``execute_with_scripts``."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)


def execute_with_scripts(
    client: redis.Redis, build: Callable[[Any], None], scripts: Sequence[Script]
) -> list[Any]:
    """Build and run a read-only pipeline; if Redis lost the scripts, load them and rerun once."""
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        build(pipe)
        try:
            return list(pipe.execute())
        except NoScriptError:
            if attempt == 2:
                raise
            for script in scripts:
                client.script_load(script.source)
    raise AssertionError("unreachable")
