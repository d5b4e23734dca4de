"""Redis-domain checks: sessions, presence across instances, the sweep, the limiter, the
message cache. Every id contains the run id, and one clean-up deletes whatever they made."""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING

from devctl.checks import CheckContext, check, counted, expect

if TYPE_CHECKING:
    from devctl.state import StateServices

_SERVICES: weakref.WeakKeyDictionary[CheckContext, StateServices] = weakref.WeakKeyDictionary()


def _state(ctx: CheckContext) -> StateServices:
    """The domain on the check's client, counters off; cleans up after itself once."""
    if ctx not in _SERVICES:
        from devctl.state import from_settings
        from devctl.state.keys import glob_escape

        services = from_settings(ctx.settings, ctx.endpoints, client=ctx.redis, stats=False)
        _SERVICES[ctx] = services

        def purge_state_keys() -> None:
            pattern = f"{glob_escape(services.keys.prefix)}*{ctx.run_id}*"
            found = list(ctx.redis.scan_iter(match=pattern, count=1000))
            if found:
                ctx.redis.delete(*found)
            registry = services.keys.instance_registry()
            mine = [i for i in ctx.redis.hkeys(registry) if ctx.run_id in i]
            if mine:
                ctx.redis.hdel(registry, *mine)

        ctx.defer(purge_state_keys, what="the state checks' Redis keys and instances")
    return _SERVICES[ctx]


def _wait_until(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


@check("state", "session create / validate / revoke", gate=True)
def sessions_lifecycle(ctx: CheckContext) -> str:
    state = _state(ctx)
    user = f"{ctx.run_id}-alice"
    state.user_cache.put({"_id": user, "firstName": "Alice", "password": "never-cached"})
    new = state.sessions.create(user, ttl=60, ip="203.0.113.7", user_agent="devctl-test")
    raw = ctx.redis.dump(state.keys.session(user, new.info.session_id)) or b""
    expect(new.token.encode() not in raw, "the token itself is stored in Redis")
    valid = state.sessions.validate(new.token)
    expect(valid is not None, "a fresh token did not validate")
    assert valid is not None
    expect(valid.session.user_id == user, f"session belongs to {valid.session.user_id}")
    expect(
        valid.user is not None and valid.user.get("firstName") == "Alice",
        f"cached user not returned with the session: {valid.user}",
    )
    expect(valid.user is not None and "password" not in valid.user, "password was cached")
    version, secret, owner = new.token.split(".")
    flipped = "B" if secret[0] == "A" else "A"
    tampered = f"{version}.{flipped}{secret[1:]}.{owner}"
    expect(state.sessions.validate(tampered) is None, "a tampered token validated")
    other = state.sessions.create(user, ttl=60)
    listed = {s.session_id for s in state.sessions.list_for_user(user)}
    expect(listed == {new.info.session_id, other.info.session_id}, f"list_for_user gave {listed}")
    expect(state.sessions.revoke(new.token), "revoke said the session did not exist")
    expect(state.sessions.validate(new.token) is None, "a revoked token still validated")
    expect(state.sessions.validate(other.token) is not None, "revoking one revoked another")
    expect(state.sessions.revoke_all(user) == 1, "revoke_all did not report 1 session")
    expect(state.sessions.validate(other.token) is None, "revoke_all left a valid token")
    return "token hashed at rest; revoked tokens rejected at once"


@check("state", "session expiry")
def sessions_expiry(ctx: CheckContext) -> str:
    state = _state(ctx)
    user = f"{ctx.run_id}-bob"
    started = time.monotonic()
    new = state.sessions.create(user, ttl=0.3)
    expect(state.sessions.validate(new.token) is not None, "token invalid before its TTL")
    expired = _wait_until(lambda: state.sessions.validate(new.token) is None, 3.0)
    expect(expired, "token still valid 3 s after its 300 ms TTL")
    expect(state.sessions.list_for_user(user) == [], "expired session still listed")
    return f"300 ms session rejected {(time.monotonic() - started) * 1000:.0f} ms after creation"


@check("state", "presence across two instances")
def presence_two_instances(ctx: CheckContext) -> str:
    state = _state(ctx)
    user = f"{ctx.run_id}-carol"
    inst_a, inst_b = f"{ctx.run_id}-a", f"{ctx.run_id}-b"
    for inst in (inst_a, inst_b):
        state.presence.heartbeat(inst, ttl=30)
    with state.pubsub.subscribe([state.pubsub.presence_channel()]) as sub:
        expect(
            state.presence.connect(user, "tab-1", inst_a).went_online, "first connect not online"
        )
        expect(not state.presence.connect(user, "tab-2", inst_b), "second tab reported online")
        status = state.presence.status(user)
        expect(status.online and status.connections == 2, f"with two tabs: {status}")
        expect(
            state.presence.disconnect(user, "tab-1", inst_a) is False,
            "closing one of two tabs reported offline",
        )
        expect(state.presence.status(user).online, "offline while a tab is still open")
        expect(state.presence.disconnect(user, "tab-2", inst_b) is True, "last tab not offline")
        status = state.presence.status(user)
        expect(not status.online and status.last_seen is not None, f"after both closed: {status}")
        events: list[bool] = []
        deadline = time.monotonic() + 2.0
        while len(events) < 2 and time.monotonic() < deadline:
            got = sub.get(timeout=0.2)
            if got is not None and got.message is not None and got.message.user_id == user:
                events.append(got.message.online)
        extra = sub.get(timeout=0.1)
    expect(events == [True, False], f"published {events}, expected one online then one offline")
    expect(
        extra is None or getattr(extra.message, "user_id", None) != user,
        "a third presence event was published",
    )
    return "one online and one offline event for two tabs on two instances"


@check("state", "dead-instance sweep")
def presence_sweep(ctx: CheckContext) -> str:
    state = _state(ctx)
    doomed, healthy = f"{ctx.run_id}-dying", f"{ctx.run_id}-healthy"
    silent = f"{ctx.run_id}-never-heartbeats"
    only_doomed, both = f"{ctx.run_id}-dave", f"{ctx.run_id}-erin"
    state.presence.heartbeat(doomed, ttl=0.3)
    state.presence.heartbeat(healthy, ttl=30)
    state.presence.connect(only_doomed, "c1", doomed)
    state.presence.connect(both, "c2", doomed)
    state.presence.connect(both, "c3", healthy)
    ghost = state.presence.connect(only_doomed, "c4", silent)
    expect(not ghost.recorded, "a connect from an instance without a lease was recorded")
    expect(
        _wait_until(lambda: not state.presence.status(only_doomed).online, 3.0),
        "a user on a dead instance still reads as online",
    )
    result = state.presence.sweep(only=[doomed, silent])
    expect(
        sorted(result.dead_instances) == sorted([doomed, silent]),
        f"dead instances: {result.dead_instances}",
    )
    expect(result.went_offline == [only_doomed], f"went offline: {result.went_offline}")
    expect(
        result.connections_removed == 2,
        f"removed {counted(result.connections_removed, 'connection')}, expected 2",
    )
    expect(state.presence.status(both).online, "a user with a live instance went offline")
    again = state.presence.sweep(only=[doomed, silent])
    expect(again.went_offline == [], "a second sweep reported the same user again")
    return "the dead instance's only user went offline, reported once"


@check("state", "rate limiter exact at its boundary")
def ratelimit_boundary(ctx: CheckContext) -> str:
    from devctl.state.ratelimit import Policy

    state = _state(ctx)
    policy = Policy(f"{ctx.run_id}-burst", limit=5, period=1.0)
    subject = "203.0.113.9"
    remaining = [state.ratelimits.check(policy, subject) for _ in range(5)]
    expect(all(r.allowed for r in remaining), "one of the first 5 requests was refused")
    expect(
        [r.remaining for r in remaining] == [4, 3, 2, 1, 0],
        f"remaining went {[r.remaining for r in remaining]}",
    )
    sixth = state.ratelimits.check(policy, subject)
    expect(not sixth.allowed, "the 6th request within the period was allowed")
    expect(0 < sixth.retry_after <= 0.2, f"retry_after {sixth.retry_after:.3f}s, expected (0, 0.2]")
    time.sleep(sixth.retry_after + 0.01)
    expect(state.ratelimits.check(policy, subject).allowed, "refused after waiting retry_after")
    expect(not state.ratelimits.check(policy, subject).allowed, "allowed 2 after one interval")
    return f"5 allowed, 6th refused with retry_after {sixth.retry_after * 1000:.0f} ms"


@check("state", "message cache order and direction")
def message_cache(ctx: CheckContext) -> str:
    from devctl.state.messages import MessageCache

    state = _state(ctx)
    cache = MessageCache(ctx.redis, state.keys, size=4, ttl=60, stats=False)
    alice, bob = f"{ctx.run_id}-alice", f"{ctx.run_id}-bob"
    history = [{"fromUserId": alice, "toUserId": bob, "text": f"m{i}", "ts": i} for i in range(3)]
    loads: list[tuple[str, str]] = []

    def loader(a: str, b: str, n: int) -> list[dict[str, object]]:
        loads.append((a, b))
        return history[-n:]

    first = cache.recent(bob, alice, loader=loader)
    expect([m["text"] for m in first] == ["m0", "m1", "m2"], f"filled {first}")
    for i, (sender, receiver) in enumerate([(bob, alice), (alice, bob), (bob, alice)], start=3):
        cache.append(
            sender, receiver, {"fromUserId": sender, "toUserId": receiver, "text": f"m{i}", "ts": i}
        )
    forward = [m["text"] for m in cache.recent(alice, bob, loader=loader)]
    backward = [m["text"] for m in cache.recent(bob, alice, loader=loader)]
    expect(
        forward == ["m2", "m3", "m4", "m5"], f"a->b read {forward}, expected the last 4 in order"
    )
    expect(backward == forward, f"b->a read {backward}, a->b read {forward}")
    expect(len(loads) == 1, f"the loader ran {len(loads)} times, expected once")
    return "one cache per conversation, trimmed to 4, oldest first"
