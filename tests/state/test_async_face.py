"""The asyncio face (devctl.state.aio) and the sync face run the same plans: one behaviour.

Each parametrized test body is written once, as a coroutine, and runs against both
faces on the real Valkey of the session stack: ``await call(x)`` awaits what the
async face returns and passes the sync face's values through. The event loop is
``asyncio.run`` inside plain test functions (no pytest plugin).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.connection

from devctl.clients.endpoints import Endpoints
from devctl.config.loader import Settings, load_settings
from devctl.engines.processes import free_port
from devctl.errors import EXIT_NOT_RUNNING, RedisUnavailable
from devctl.state import StateServices, from_settings
from devctl.state.aio import AsyncStateServices, async_from_settings
from devctl.state.plan import Plan
from devctl.state.ratelimit import Policy
from devctl.state.validate import InvalidArgument

Body = Callable[[Any], Awaitable[None]]


async def call(value: Any) -> Any:
    """The result of a face's method: awaited for the async face, as is for the sync one."""
    return await value if inspect.isawaitable(value) else value


def settings_with(stack: Any, **state_values: Any) -> Settings:
    if not state_values:
        return stack.settings  # type: ignore[no-any-return]
    flags = {f"state.{k}": (v, k) for k, v in state_values.items()}
    flags.update({k: (v, k) for k, v in stack.settings.values.items() if k.startswith("redis.")})
    return load_settings(flags=flags, cwd=stack.settings.cwd, environ={})


@pytest.fixture(params=["sync", "async"])
def face(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clean(stack: Any, prefix: str) -> Iterator[None]:
    """Delete the test's keys (its own prefix) when it ends, whatever happened."""
    yield
    client = stack.redis()
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def run(stack: Any, prefix: str, face: str, clean: None) -> Callable[..., None]:
    """``run(body, **state_settings)``: the body with the services of this test's face."""

    def run_body(body: Body, **state_values: Any) -> None:
        settings = settings_with(stack, **state_values)

        async def main() -> None:
            if face == "async":
                async with await async_from_settings(
                    settings, stack.endpoints, prefix=prefix
                ) as aio:
                    await body(aio)
            else:
                with from_settings(settings, stack.endpoints, prefix=prefix) as services:
                    await body(services)

        asyncio.run(main())

    return run_body


def loader_for(face: str, load: Callable[..., Any]) -> Callable[..., Any]:
    """``load`` for the sync face; an ``async def`` around it for the async face."""
    if face == "sync":
        return load

    async def load_async(*args: Any) -> Any:
        await asyncio.sleep(0)  # a real suspension, as a database driver's
        return load(*args)

    return load_async


# --- sessions ------------------------------------------------------------------


def test_sessions_create_validate_revoke(run: Callable[..., None]) -> None:
    async def body(s: Any) -> None:
        await call(s.user_cache.put({"_id": "42", "firstName": "Ada", "password": "x"}))
        new = await call(s.sessions.create("42", ip="1.2.3.4", user_agent="pytest"))
        valid = await call(s.sessions.validate(new.token))
        assert valid.session.user_id == "42" and valid.session.ip == "1.2.3.4"
        assert valid.user == {"_id": "42", "firstName": "Ada"}
        assert (await call(s.sessions.inspect(new.token))).session == valid.session
        assert await call(s.sessions.validate("garbage")) is None
        other = await call(s.sessions.create("42"))
        listed = await call(s.sessions.list_for_user("42"))
        assert {i.session_id for i in listed} == {new.info.session_id, other.info.session_id}
        assert await call(s.sessions.count()) == (2, 1)
        sid = await call(s.sessions.resolve_id("42", other.info.session_id[:12]))
        assert sid == other.info.session_id
        assert await call(s.sessions.revoke(new.token)) is True
        assert await call(s.sessions.revoke(new.token)) is False
        assert await call(s.sessions.validate(new.token)) is None
        third = await call(s.sessions.create("42"))
        assert await call(s.sessions.revoke_all("42")) == 2
        assert await call(s.sessions.validate(third.token)) is None
        assert await call(s.sessions.list_for_user("42")) == []
        with pytest.raises(InvalidArgument, match="session ttl"):
            await call(s.sessions.create("42", ttl=float("inf")))

    run(body)


def test_sliding_sessions_restart_their_lifetime(run: Callable[..., None]) -> None:
    async def body(s: Any) -> None:
        new = await call(s.sessions.create("42", ttl=0.6))
        await asyncio.sleep(0.4)
        assert await call(s.sessions.validate(new.token)) is not None  # slides
        await asyncio.sleep(0.4)
        assert await call(s.sessions.validate(new.token)) is not None  # 0.8 s after create
        assert (await call(s.sessions.inspect(new.token))).user is None

    run(body, session_sliding=True)


# --- user cache ------------------------------------------------------------------


class Db:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.emails: dict[str, str] = {}
        self.calls = 0

    def load(self, user_id: str) -> dict[str, Any] | None:
        self.calls += 1
        row = self.rows.get(user_id)
        return dict(row) if row else None

    def user_id(self, email: str) -> str | None:
        self.calls += 1
        return self.emails.get(email)


def test_user_cache_hit_miss_and_invalidate(run: Callable[..., None], face: str) -> None:
    db = Db()
    db.rows["42"] = {"_id": "42", "firstName": "Ada", "password": "$2b$hash"}
    load = loader_for(face, db.load)

    async def body(s: Any) -> None:
        cache = s.user_cache
        assert await call(cache.get("42", load)) == {"_id": "42", "firstName": "Ada"}
        assert await call(cache.get("42", load)) == {"_id": "42", "firstName": "Ada"}
        assert db.calls == 1 and (cache.hits, cache.misses) == (1, 1)
        db.rows["42"]["firstName"] = "Augusta"
        assert await call(cache.invalidate("42")) is True
        assert await call(cache.peek("42")) is None
        assert (await call(cache.get("42", load)))["firstName"] == "Augusta"
        assert db.calls == 2 and (cache.hits, cache.misses) == (1, 2)
        assert await call(cache.get("nobody", load)) is None  # not cached
        await call(cache.put({"_id": "7", "firstName": "Grace", "password": "x"}))
        assert await call(cache.peek("7")) == {"_id": "7", "firstName": "Grace"}
        stats = s.client.hgetall(s.keys.cache_stats())
        assert await call(stats) == {"user:lookups": "4", "user:misses": "3"}

    run(body)


def test_email_map(run: Callable[..., None], face: str) -> None:
    db = Db()
    db.emails["ada@example.com"] = "42"
    lookup = loader_for(face, db.user_id)

    async def body(s: Any) -> None:
        cache = s.user_cache
        assert await call(cache.user_id_for_email(" Ada@Example.com", lookup)) == "42"
        assert await call(cache.user_id_for_email("ada@example.com", lookup)) == "42"
        assert db.calls == 1
        await call(cache.forget_email("ada@example.com"))
        await call(cache.remember_email("ADA@example.com", "43"))
        assert await call(cache.user_id_for_email("ada@example.com", lookup)) == "43"
        assert db.calls == 1

    run(body)


@pytest.mark.usefixtures("clean")
def test_concurrent_async_misses_call_the_loader_once(stack: Any, prefix: str) -> None:
    calls = 0

    async def slow_load(user_id: str) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)
        return {"_id": user_id, "firstName": "Ada"}

    async def main() -> list[Any]:
        async with await async_from_settings(stack.settings, stack.endpoints, prefix=prefix) as s:
            return await asyncio.gather(*(s.user_cache.get("42", slow_load) for _ in range(20)))

    users = asyncio.run(main())
    assert calls == 1
    assert users == [{"_id": "42", "firstName": "Ada"}] * 20


@pytest.mark.usefixtures("clean")
def test_when_the_async_leader_fails_one_waiter_takes_over(stack: Any, prefix: str) -> None:
    calls = 0

    async def flaky_load(user_id: str) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        if calls == 1:
            raise RuntimeError("database hiccup")
        return {"_id": user_id}

    async def main() -> list[Any]:
        async with await async_from_settings(stack.settings, stack.endpoints, prefix=prefix) as s:
            gets = (s.user_cache.get("42", flaky_load) for _ in range(10))
            return await asyncio.gather(*gets, return_exceptions=True)

    results = asyncio.run(main())
    assert calls == 2
    assert sum(isinstance(r, RuntimeError) for r in results) == 1
    assert results.count({"_id": "42"}) == 9


@pytest.mark.usefixtures("clean")
def test_a_cancelled_loader_frees_the_lock(stack: Any, prefix: str) -> None:
    async def hung_load(user_id: str) -> dict[str, Any]:
        await asyncio.sleep(30)
        return {"_id": user_id}

    async def main() -> float:
        async with await async_from_settings(stack.settings, stack.endpoints, prefix=prefix) as s:
            task = asyncio.create_task(s.user_cache.get("42", hung_load))
            await asyncio.sleep(0.2)  # it holds the lock and waits for its loader
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            started = time.monotonic()
            assert await s.user_cache.get("42", lambda u: {"_id": u}) == {"_id": "42"}
            return time.monotonic() - started

    assert asyncio.run(main()) < 1.0  # the lock was released, not waited out (5 s)


@pytest.mark.usefixtures("clean")
def test_the_async_face_reloads_scripts_the_server_lost(stack: Any, prefix: str) -> None:
    settings = settings_with(stack, session_sliding=True)

    async def main() -> None:
        async with await async_from_settings(settings, stack.endpoints, prefix=prefix) as s:
            new = await s.sessions.create("42")
            await s.client.script_flush()
            before = s.executor.round_trips
            assert await s.sessions.validate(new.token) is not None  # EVALSHA
            assert s.executor.round_trips - before == 3  # NOSCRIPT, SCRIPT LOAD, again
            await s.client.script_flush()
            assert (await s.presence.bulk_status(["42"]))["42"].online is False  # a pipeline

    asyncio.run(main())


def test_a_failing_loader_raises_its_own_error_and_frees_the_lock(
    run: Callable[..., None], face: str
) -> None:
    """A database that is down is not a Redis that is down: its error is not translated."""

    def down(user_id: str) -> dict[str, Any]:
        raise ConnectionRefusedError("database refused")

    async def body(s: Any) -> None:
        with pytest.raises(ConnectionRefusedError, match="database refused"):
            await call(s.user_cache.get("42", loader_for(face, down)))
        started = time.monotonic()
        loaded = await call(s.user_cache.get("42", loader_for(face, lambda u: {"_id": u})))
        assert loaded == {"_id": "42"}
        assert time.monotonic() - started < 1.0  # the lock was released, not waited out

    run(body)


def test_the_sync_face_refuses_an_async_loader(state: StateServices) -> None:
    async def load(user_id: str) -> dict[str, Any]:
        return {"_id": user_id}

    with pytest.raises(TypeError, match="not a coroutine"):
        state.user_cache.get("42", load)
    assert state.user_cache.get("42", lambda u: {"_id": u}) == {"_id": "42"}  # lock freed


# --- rate limits, messages ------------------------------------------------------


def test_rate_limit_until_limited(run: Callable[..., None]) -> None:
    policy = Policy("burst", limit=3, period=60)

    async def body(s: Any) -> None:
        results = [await call(s.ratelimits.check(policy, "1.2.3.4")) for _ in range(4)]
        assert [r.allowed for r in results] == [True, True, True, False]
        assert [r.remaining for r in results[:3]] == [2, 1, 0]
        assert 19 < results[3].retry_after <= 20
        peeked = await call(s.ratelimits.peek(policy, "1.2.3.4"))
        assert not peeked.allowed and peeked.remaining == 0
        assert await call(s.ratelimits.reset(policy, "1.2.3.4")) is True
        assert (await call(s.ratelimits.check(policy, "1.2.3.4"))).allowed
        tiered = await call(s.ratelimits.check("connection_request", "42", tier="gold"))
        assert tiered.allowed and tiered.limit is None  # unlimited: no Redis call
        assert s.ratelimits.policy("login_ip").limit == 20

    run(body)


def test_message_cache(run: Callable[..., None], face: str) -> None:
    history = [{"from": "a", "to": "b", "text": f"m{i}"} for i in range(3)]
    loads: list[int] = []

    def load(a: str, b: str, n: int) -> list[dict[str, Any]]:
        loads.append(n)
        return history[-n:]

    async def body(s: Any) -> None:
        loader = loader_for(face, load)
        assert await call(s.messages.recent("b", "a", loader=loader)) == history
        assert await call(s.messages.append("a", "b", {"text": "m3"})) is True
        texts = [m["text"] for m in await call(s.messages.recent("a", "b", 2, loader=loader))]
        assert texts == ["m2", "m3"] and len(loads) == 1
        assert await call(s.messages.invalidate("a", "b")) is True
        assert await call(s.messages.append("a", "b", {"text": "m4"})) is False  # not filled
        assert await call(s.messages.recent("a", "b")) == []  # a miss without a loader

    run(body)


# --- presence ---------------------------------------------------------------------


def test_presence_basics(run: Callable[..., None]) -> None:
    async def body(s: Any) -> None:
        p = s.presence
        assert await call(p.heartbeat("api-1")) is False  # a new lease
        assert await call(p.heartbeat("api-1")) is True
        assert (await call(p.connect("42", "tab-1", "api-1"))).went_online
        assert not (await call(p.connect("42", "tab-2", "api-1"))).went_online
        status = await call(p.status("42"))
        assert status.online and status.connections == 2 and status.instances == ("api-1",)
        statuses = await call(p.bulk_status(["42", "43"]))
        assert statuses["42"].online and not statuses["43"].online
        assert await call(p.disconnect("42", "tab-1", "api-1")) is False
        assert await call(p.disconnect("42", "tab-2", "api-1")) is True
        await call(p.heartbeat("doomed", ttl=0.2))
        await call(p.connect("43", "tab", "doomed"))
        await asyncio.sleep(0.3)
        swept = await call(p.sweep())
        assert swept.dead_instances == ["doomed"] and swept.went_offline == ["43"]
        assert [i.instance_id for i in await call(p.instances())] == ["api-1"]
        resynced = await call(p.resync("api-1", {"tab-9": "44"}))
        assert resynced.went_online == ["44"] and resynced.recorded == 1
        assert set(await call(p.known_users())) == {"42", "43", "44"}
        assert (await call(p.retire("api-1"))).went_offline == ["44"]

    run(body)


def test_a_write_with_a_stale_lease_view_keeps_unknown_instances(
    run: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instance registered after a write read the leases keeps its connections."""

    async def body(s: Any) -> None:
        p = s.presence
        await call(p.heartbeat("api-a"))
        known = await call(p.instances())  # what a write read before api-b existed
        await call(p.heartbeat("api-b"))
        await call(p.connect("u1", "c-b", "api-b"))

        def stale_view() -> Plan[Any]:
            return p.ops._leases_of(known)
            yield  # a plan that sends nothing

        monkeypatch.setattr(p.ops, "leases", stale_view)
        connected = await call(p.connect("u1", "c-a", "api-a"))
        assert not connected.went_online and not connected.went_offline
        monkeypatch.undo()
        status = await call(p.status("u1"))
        assert status.connections == 2 and status.instances == ("api-a", "api-b")

    run(body)


# --- round trips --------------------------------------------------------------------


@pytest.mark.parametrize("sliding", [False, True])
def test_warm_validate_and_a_cache_hit_are_one_round_trip_each(
    run: Callable[..., None], face: str, sliding: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[int] = []  # what reached the socket, to check the executors' counters

    def counted(original: Any) -> Any:
        if inspect.iscoroutinefunction(original):

            async def send_async(self: Any, command: Any, check_health: bool = True) -> None:
                sent.append(1)
                await original(self, command, check_health)

            return send_async

        def send(self: Any, command: Any, check_health: bool = True) -> None:
            sent.append(1)
            original(self, command, check_health)

        return send

    for cls in (redis.connection.AbstractConnection, redis.asyncio.connection.AbstractConnection):
        monkeypatch.setattr(cls, "send_packed_command", counted(cls.send_packed_command))

    async def body(s: Any) -> None:
        executor = s.sessions.executor
        assert executor is s.user_cache.executor  # one counter for the services
        await call(s.user_cache.put({"_id": "42", "firstName": "Ada"}))
        new = await call(s.sessions.create("42"))
        await call(s.sessions.validate(new.token))  # connects; loads the script once

        before, sent[:] = executor.round_trips, []
        valid = await call(s.sessions.validate(new.token))
        assert valid.user == {"_id": "42", "firstName": "Ada"}
        assert executor.round_trips - before == 1 and len(sent) == 1

        before, sent[:] = executor.round_trips, []
        assert await call(s.user_cache.get("42", lambda _: None)) is not None
        assert executor.round_trips - before == 1 and len(sent) == 1

    run(body, session_sliding=sliding)


# --- an unreachable Redis -----------------------------------------------------------


def unreachable(tmp_path: Path, port: int, timeout: float) -> tuple[Settings, Endpoints]:
    url = f"redis://127.0.0.1:{port}/0"
    flags = {
        "engine": ("external", "--engine"),
        "redis.url": (url, "redis.url"),
        "redis.connect_timeout": (timeout, "redis.connect_timeout"),
        "redis.socket_timeout": (timeout, "redis.socket_timeout"),
    }
    return load_settings(flags=flags, cwd=tmp_path, environ={}), Endpoints(
        "external", url, "127.0.0.1:1"
    )


ASYNC_OPERATIONS: dict[str, Callable[[AsyncStateServices], Awaitable[Any]]] = {
    "ping": lambda s: s.ping(),
    "sessions.create": lambda s: s.sessions.create("42"),
    "sessions.validate": lambda s: s.sessions.validate("dc1." + "A" * 43 + ".NDI"),
    "sessions.revoke_all": lambda s: s.sessions.revoke_all("42"),
    "user_cache.get": lambda s: s.user_cache.get("42", lambda _: {"_id": "42"}),
    "ratelimits.check": lambda s: s.ratelimits.check(Policy("p", 5, 60), "k"),
    "messages.recent": lambda s: s.messages.recent("a", "b", loader=lambda *_: []),
    "presence.connect": lambda s: s.presence.connect("42", "c", "api-1"),
    "presence.bulk_status": lambda s: s.presence.bulk_status(["42"]),
}


def test_the_async_face_raises_redis_unavailable_on_a_closed_port(tmp_path: Path) -> None:
    settings, endpoints = unreachable(tmp_path, free_port(), timeout=2.0)

    async def main() -> None:
        async with await async_from_settings(settings, endpoints) as s:
            for name, operation in ASYNC_OPERATIONS.items():
                started = time.monotonic()
                with pytest.raises(RedisUnavailable, match="not reachable") as caught:
                    await operation(s)
                assert time.monotonic() - started < 2.0, name  # refused: no timeout waited
                assert caught.value.exit_code == EXIT_NOT_RUNNING
                assert "(Async" in str(caught.value), name  # names the async operation

    asyncio.run(main())


def test_the_async_face_times_out_on_a_hung_redis(private_redis: Any, tmp_path: Path) -> None:
    settings, endpoints = unreachable(tmp_path, private_redis.port, timeout=0.3)

    async def main() -> None:
        async with await async_from_settings(settings, endpoints) as s:
            token = (await s.sessions.create("42")).token
            assert await s.ping() < 0.3
            private_redis.pause()  # SIGSTOP: the socket accepts nothing and answers nothing
            try:
                for operation in (
                    lambda: s.sessions.validate(token),
                    lambda: s.presence.bulk_status(["42"]),
                    lambda: s.ping(),
                ):
                    started = time.monotonic()
                    with pytest.raises(RedisUnavailable):
                        await operation()
                    assert time.monotonic() - started < 1.5
            finally:
                private_redis.resume()
            assert await s.sessions.validate(token) is not None  # and recovers

    asyncio.run(main())
