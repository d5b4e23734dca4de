"""Shared plumbing of the Redis domain: error translation and the sync face.

Operations are plans (``devctl.state.plan``); ``SyncExecutor`` runs them on a
``redis.Redis`` and ``SyncFace`` turns each plan into a blocking method. Errors
are translated where a request meets Redis, so a caller only ever has to catch
``RedisUnavailable`` to degrade deliberately, and an error of a caller's loader
(a database timeout) is never taken for one of Redis.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast

import redis
from redis.exceptions import NoScriptError

from devctl.errors import ConfigError, DevctlError, RedisUnavailable
from devctl.state.keys import KeySchema
from devctl.state.plan import Call, Command, Eval, Pipeline, Plan, Request, Sleep, scripts_of

P = ParamSpec("P")
R = TypeVar("R")
Ops = TypeVar("Ops")

# Errors meaning "Redis is not there": refused, reset, timed out, loading, auth, and a
# server that does not speak RESP at all (another service on the port).
_UNAVAILABLE = (
    redis.ConnectionError,
    redis.TimeoutError,
    ConnectionError,
    TimeoutError,
    redis.exceptions.InvalidResponse,
)
# Around a request alone (never a loader), any socket error is Redis's: redis.asyncio
# lets some through unwrapped, and asyncio.TimeoutError is TimeoutError.
IO_UNAVAILABLE = (*_UNAVAILABLE, OSError)


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


def translate(operation: str, exc: BaseException) -> DevctlError | None:
    """The domain error for an exception a Redis request raised, or None (a bug: raise it)."""
    if isinstance(exc, IO_UNAVAILABLE):
        return unavailable(operation, exc)
    if isinstance(exc, redis.ResponseError):
        return setup_refused(exc)
    return None


def redis_operation(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function that uses the client directly (operator views, pub/sub):
    Redis connection/timeout errors become RedisUnavailable."""
    name = func.__qualname__

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # A plain try (not a context manager) keeps the per-request cost down.
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


class SyncExecutor:
    """Runs plans on a ``redis.Redis`` (which must decode responses).

    ``round_trips`` counts network round trips: one per command, script call or
    pipeline (a script the server lost costs two more: SCRIPT LOAD and the retry).
    """

    def __init__(self, client: redis.Redis):
        self.client = client
        self.round_trips = 0

    def run(self, plan: Plan[R], operation: str) -> R:
        """Drive ``plan`` to its result; ``operation`` names it in errors."""
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                request = plan.send(reply) if error is None else plan.throw(error)
            except StopIteration as stop:
                return cast(R, stop.value)
            error = None
            try:
                reply = self._perform(request, operation)
            except BaseException as exc:  # the plan may handle it (release a lock)
                error = exc

    def _perform(self, request: Request, operation: str) -> Any:
        if isinstance(request, Call):
            result = request.func(*request.args)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()  # no "never awaited" warning on top of the error
                raise TypeError(f"{operation}: the sync face needs a function, not a coroutine")
            return result
        if isinstance(request, Sleep):
            time.sleep(request.seconds)
            return None
        try:
            if isinstance(request, Command):
                self.round_trips += 1
                return getattr(self.client, request.name)(*request.args, **request.kwargs)
            if isinstance(request, Eval):
                return self._eval(request)
            return self._pipeline(request)
        except Exception as exc:
            domain = translate(operation, exc)
            if domain is None:
                raise
            raise domain from exc

    def _eval(self, call: Eval) -> Any:
        script = call.script
        self.round_trips += 1
        try:
            return self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
        except NoScriptError:
            self.round_trips += 2
            self.client.script_load(script.source)
            return self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)

    def _pipeline(self, request: Pipeline) -> list[Any]:
        # If Redis lost a script, load the pipeline's scripts and run it once more: its
        # other commands then run twice, so a pipeline with a script holds only
        # commands that may (HSET, HSETNX, HDEL, reads), never a counter.
        for attempt in (1, 2):
            pipe: Any = self.client.pipeline(transaction=request.transaction)
            for step in request.steps:
                if isinstance(step, Eval):
                    pipe.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
                else:
                    getattr(pipe, step.name)(*step.args, **step.kwargs)
            self.round_trips += 1
            try:
                return list(pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                for script in scripts_of(request.steps):
                    self.round_trips += 1
                    self.client.script_load(script.source)
        raise AssertionError("unreachable")


class SyncFace(Generic[Ops]):
    """The blocking face of one service: its plans (``ops``) run by a ``SyncExecutor``."""

    def __init__(
        self, client: redis.Redis, keys: KeySchema, ops: Ops, executor: SyncExecutor | None
    ):
        self.client = client
        self.keys = keys
        self.ops = ops
        self.executor = executor if executor is not None else SyncExecutor(client)


def sync_op(
    plan: Callable[Concatenate[Ops, P], Plan[R]],
) -> Callable[Concatenate[SyncFace[Ops], P], R]:
    """A blocking method that runs the plan ``plan`` (same arguments, its docstring)."""
    name = plan.__name__

    @functools.wraps(plan)
    def method(self: SyncFace[Ops], /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.executor.run(plan(self.ops, *args, **kwargs), f"{type(self).__name__}.{name}")

    return method
