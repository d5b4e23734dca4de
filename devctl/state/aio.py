"""The asyncio face of the Redis domain, for the API: the sync face's plans, awaited.

    from devctl.state.aio import async_from_settings

    async with await async_from_settings(settings, endpoints) as state:
        valid = await state.sessions.validate(token)   # one round trip
        user = valid.user or await state.user_cache.get(valid.session.user_id, load_user)

Every service has the methods of its sync twin (``devctl.state``), with the same
arguments and results, as ``async def``; both run the same plans (the ``*Ops``
classes), so they send the same commands. A loader may be a plain function or an
``async def``. Errors are the sync face's: ``RedisUnavailable`` when Redis cannot
be reached within the configured timeouts, ``InvalidArgument`` for a bad argument.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, cast

import redis.asyncio
from redis.exceptions import NoScriptError

from devctl.state._redis import translate
from devctl.state.keys import KeySchema
from devctl.state.messages import MessageCacheOps
from devctl.state.plan import (
    Call,
    Command,
    Eval,
    Pipeline,
    Plan,
    Request,
    Sleep,
    cmd,
    scripts_of,
)
from devctl.state.presence import PresenceOps
from devctl.state.ratelimit import Policy, RateLimiterOps, load_policies
from devctl.state.sessions import SessionOps
from devctl.state.user_cache import UserCacheOps

if TYPE_CHECKING:
    from devctl.clients.endpoints import Endpoints
    from devctl.config.loader import Settings
    from devctl.config.schema import StateSettings

P = ParamSpec("P")
R = TypeVar("R")
Ops = TypeVar("Ops")


class AsyncExecutor:
    """Runs plans on a ``redis.asyncio.Redis`` (which must decode responses).

    ``round_trips`` counts network round trips as ``SyncExecutor`` does: one per
    command, script call or pipeline. Tasks may share it.
    """

    def __init__(self, client: redis.asyncio.Redis):
        self.client = client
        self.round_trips = 0

    async def run(self, plan: Plan[R], operation: str) -> R:
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
                reply = await self._perform(request, operation)
            # Cancellation too: the plan may have a lock to release on the way out.
            except BaseException as exc:
                error = exc

    async def _perform(self, request: Request, operation: str) -> Any:
        if isinstance(request, Call):
            result = request.func(*request.args)
            return await result if inspect.isawaitable(result) else result
        if isinstance(request, Sleep):
            await asyncio.sleep(request.seconds)
            return None
        try:
            if isinstance(request, Command):
                self.round_trips += 1
                return await getattr(self.client, request.name)(*request.args, **request.kwargs)
            if isinstance(request, Eval):
                return await self._eval(request)
            return await self._pipeline(request)
        except Exception as exc:
            domain = translate(operation, exc)
            if domain is None:
                raise
            raise domain from exc

    async def _eval(self, call: Eval) -> Any:
        script = call.script
        self.round_trips += 1
        try:
            return await self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
        except NoScriptError:
            self.round_trips += 2
            await self.client.script_load(script.source)
            return await self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)

    async def _pipeline(self, request: Pipeline) -> list[Any]:
        # As SyncExecutor: a lost script is loaded and the pipeline run once more.
        for attempt in (1, 2):
            pipe: Any = self.client.pipeline(transaction=request.transaction)
            for step in request.steps:
                if isinstance(step, Eval):
                    pipe.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
                else:
                    getattr(pipe, step.name)(*step.args, **step.kwargs)
            self.round_trips += 1
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                for script in scripts_of(request.steps):
                    self.round_trips += 1
                    await self.client.script_load(script.source)
        raise AssertionError("unreachable")


class AsyncFace(Generic[Ops]):
    """The asyncio face of one service: its plans (``ops``) run by an ``AsyncExecutor``."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: KeySchema,
        ops: Ops,
        executor: AsyncExecutor | None,
    ):
        self.client = client
        self.keys = keys
        self.ops = ops
        self.executor = executor if executor is not None else AsyncExecutor(client)


def async_op(
    plan: Callable[Concatenate[Ops, P], Plan[R]],
) -> Callable[Concatenate[AsyncFace[Ops], P], Coroutine[Any, Any, R]]:
    """An ``async def`` method that runs the plan ``plan`` (same arguments, its docstring)."""
    name = plan.__name__

    @functools.wraps(plan)
    async def method(self: AsyncFace[Ops], /, *args: P.args, **kwargs: P.kwargs) -> R:
        operation = f"{type(self).__name__}.{name}"
        return await self.executor.run(plan(self.ops, *args, **kwargs), operation)

    return method


class AsyncSessions(AsyncFace[SessionOps]):
    """``Sessions``, awaited."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: KeySchema,
        *,
        ttl: float,
        sliding: bool,
        executor: AsyncExecutor | None = None,
    ):
        super().__init__(client, keys, SessionOps(keys, ttl=ttl, sliding=sliding), executor)

    create = async_op(SessionOps.create)
    validate = async_op(SessionOps.validate)
    inspect = async_op(SessionOps.inspect)
    revoke = async_op(SessionOps.revoke)
    revoke_id = async_op(SessionOps.revoke_id)
    resolve_id = async_op(SessionOps.resolve_id)
    revoke_all = async_op(SessionOps.revoke_all)
    list_for_user = async_op(SessionOps.list_for_user)
    list_all = async_op(SessionOps.list_all)
    count = async_op(SessionOps.count)


class AsyncUserCache(AsyncFace[UserCacheOps]):
    """``UserCache``, awaited; loaders may be ``async def``."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: KeySchema,
        *,
        ttl: float,
        lock_ttl: float = 5.0,
        stats: bool = True,
        executor: AsyncExecutor | None = None,
    ):
        ops = UserCacheOps(keys, ttl=ttl, lock_ttl=lock_ttl, stats=stats)
        super().__init__(client, keys, ops, executor)

    @property
    def hits(self) -> int:
        """User lookups this process answered from the cache (for the API's metrics)."""
        return self.ops.hits

    @property
    def misses(self) -> int:
        """User lookups this process did not find in the cache."""
        return self.ops.misses

    @property
    def ttl_ms(self) -> int:
        return self.ops.ttl_ms

    get = async_op(UserCacheOps.get)
    peek = async_op(UserCacheOps.peek)
    put = async_op(UserCacheOps.put)
    invalidate = async_op(UserCacheOps.invalidate)
    user_id_for_email = async_op(UserCacheOps.user_id_for_email)
    remember_email = async_op(UserCacheOps.remember_email)
    forget_email = async_op(UserCacheOps.forget_email)


class AsyncRateLimiter(AsyncFace[RateLimiterOps]):
    """``RateLimiter``, awaited."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: KeySchema,
        policies: Mapping[str, Policy],
        *,
        executor: AsyncExecutor | None = None,
    ):
        super().__init__(client, keys, RateLimiterOps(keys, policies), executor)

    @property
    def policies(self) -> dict[str, Policy]:
        return self.ops.policies

    def policy(self, policy: str | Policy) -> Policy:
        """The policy of that name (a Policy is returned as is); UsageError if unknown."""
        return self.ops.policy(policy)

    check = async_op(RateLimiterOps.check)
    peek = async_op(RateLimiterOps.peek)
    reset = async_op(RateLimiterOps.reset)


class AsyncMessageCache(AsyncFace[MessageCacheOps]):
    """``MessageCache``, awaited; the loader may be ``async def``."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: KeySchema,
        *,
        size: int,
        ttl: int,
        stats: bool = True,
        executor: AsyncExecutor | None = None,
    ):
        ops = MessageCacheOps(keys, size=size, ttl=ttl, stats=stats)
        super().__init__(client, keys, ops, executor)

    @property
    def size(self) -> int:
        return self.ops.size

    @property
    def ttl(self) -> int:
        return self.ops.ttl

    append = async_op(MessageCacheOps.append)
    recent = async_op(MessageCacheOps.recent)
    invalidate = async_op(MessageCacheOps.invalidate)


class AsyncPresence(AsyncFace[PresenceOps]):
    """``Presence``, awaited."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: KeySchema,
        *,
        instance_ttl: float,
        executor: AsyncExecutor | None = None,
    ):
        super().__init__(client, keys, PresenceOps(keys, instance_ttl=instance_ttl), executor)

    @property
    def instance_ttl(self) -> float:
        return self.ops.instance_ttl

    connect = async_op(PresenceOps.connect)
    connect_many = async_op(PresenceOps.connect_many)
    disconnect = async_op(PresenceOps.disconnect)
    resync = async_op(PresenceOps.resync)
    heartbeat = async_op(PresenceOps.heartbeat)
    heartbeat_many = async_op(PresenceOps.heartbeat_many)
    instances = async_op(PresenceOps.instances)
    retire = async_op(PresenceOps.retire)
    sweep = async_op(PresenceOps.sweep)
    bulk_status = async_op(PresenceOps.bulk_status)
    status = async_op(PresenceOps.status)
    known_users = async_op(PresenceOps.known_users)


def _ping() -> Plan[float]:
    started = time.perf_counter()
    yield cmd("ping")
    return time.perf_counter() - started


@dataclass
class AsyncStateServices:
    """The services on one asyncio client; ``executor.round_trips`` counts what they send."""

    client: redis.asyncio.Redis
    keys: KeySchema
    executor: AsyncExecutor
    sessions: AsyncSessions
    user_cache: AsyncUserCache
    ratelimits: AsyncRateLimiter
    messages: AsyncMessageCache
    presence: AsyncPresence

    async def ping(self) -> float:
        """Seconds one PING took (for a readiness probe); RedisUnavailable if none came."""
        return await self.executor.run(_ping(), "AsyncStateServices.ping")

    async def close(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> AsyncStateServices:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def build_async(
    client: redis.asyncio.Redis,
    state: StateSettings,
    *,
    prefix: str = "devconnect:",
    stats: bool = True,
) -> AsyncStateServices:
    """Wire the services around an existing asyncio client (which must decode responses)."""
    keys = KeySchema(prefix)
    run = AsyncExecutor(client)
    return AsyncStateServices(
        client=client,
        keys=keys,
        executor=run,
        sessions=AsyncSessions(
            client, keys, ttl=state.session_ttl, sliding=state.session_sliding, executor=run
        ),
        user_cache=AsyncUserCache(
            client, keys, ttl=state.user_cache_ttl, stats=stats, executor=run
        ),
        ratelimits=AsyncRateLimiter(client, keys, load_policies(state.rate_limits), executor=run),
        messages=AsyncMessageCache(
            client,
            keys,
            size=state.message_cache_size,
            ttl=state.message_cache_ttl,
            stats=stats,
            executor=run,
        ),
        presence=AsyncPresence(
            client, keys, instance_ttl=state.presence_instance_ttl, executor=run
        ),
    )


async def async_from_settings(
    settings: Settings,
    endpoints: Endpoints,
    *,
    client: redis.asyncio.Redis | None = None,
    prefix: str | None = None,
    stats: bool = True,
) -> AsyncStateServices:
    """The services for the configured stack, as ``devctl.state.from_settings`` but async.

    Connections are opened on first use: a Redis that is down fails the first
    operation (``ping`` for a readiness probe), not this. Close the services
    (``await close()`` or ``async with``) in the event loop that used them.
    """
    if client is None:
        from devctl.clients.redis_client import make_async_redis

        client = make_async_redis(endpoints, settings, decode=True)
    return build_async(
        client,
        settings.state,
        prefix=settings.redis.key_prefix if prefix is None else prefix,
        stats=stats,
    )
