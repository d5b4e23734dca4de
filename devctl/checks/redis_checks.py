"""Redis checks: connection, leftovers of interrupted runs, round trip, TTL, pipeline, pub/sub."""

from __future__ import annotations

import time

from devctl.checks import CheckContext, check, counted, expect, is_leftover
from devctl.clients.redis_client import ping
from devctl.events.markers import CHECK_TOPIC_PREFIX


@check("redis", "connection", gate=True)
def connection(ctx: CheckContext) -> str:
    latency = ping(ctx.redis, ctx.endpoints.redis_url, ctx.endpoints.caps)
    info = ctx.redis.info("server")
    version = info.get("valkey_version") or info.get("redis_version")
    return f"PING {latency:.1f} ms, server {version}"


@check("redis", "leftovers of interrupted runs removed")
def leftovers(ctx: CheckContext) -> str:
    """Delete the keys of runs that could not clean up (killed, crashed)."""
    keys, instances = remove_leftovers(ctx)
    if not keys and not instances:
        return "none"
    return f"removed {counted(keys, 'key')}, {counted(instances, 'registered instance')}"


def remove_leftovers(ctx: CheckContext, now: float | None = None) -> tuple[int, int]:
    """Keys and registered API instances named by runs older than LEFTOVER_AGE, deleted.

    Every key a run makes holds its run id (CheckContext.key, and the ids of the state
    checks); the instance registry is one hash shared with real instances, so only
    its test fields go. A run still going is younger than that, so it is never touched.
    """
    from devctl.state.keys import KeySchema, glob_escape

    keys = KeySchema(ctx.settings.redis.key_prefix)
    pattern = f"{glob_escape(keys.prefix)}*{CHECK_TOPIC_PREFIX}*"
    found = ctx.redis.scan_iter(match=pattern, count=1000)
    stale = [key for key in found if is_leftover(str(key), now)]  # str: a decoding client
    for start in range(0, len(stale), 500):
        ctx.redis.delete(*stale[start : start + 500])
    registry = keys.instance_registry()
    instances = [i for i in ctx.redis.hkeys(registry) if is_leftover(str(i), now)]
    if instances:
        ctx.redis.hdel(registry, *instances)
    return len(stale), len(instances)


@check("redis", "SET/GET round trip")
def set_get(ctx: CheckContext) -> None:
    key = ctx.key("roundtrip")
    value = f"{ctx.run_id}-é-✓"  # non-ASCII: the round trip must be byte-exact
    expect(ctx.redis.set(key, value) is True, "SET did not answer OK")
    got = ctx.redis.get(key)
    expect(got == value, f"GET returned {got!r}, expected {value!r}")


@check("redis", "TTL honoured")
def ttl(ctx: CheckContext) -> str:
    key = ctx.key("ttl")
    ctx.redis.set(key, "x", px=200)
    remaining = ctx.redis.pttl(key)
    expect(0 < remaining <= 200, f"PTTL right after SET PX 200 was {remaining}")
    deadline = time.monotonic() + 2.0
    while ctx.redis.exists(key):
        expect(time.monotonic() < deadline, "key still exists 2 s after its 200 ms TTL")
        time.sleep(0.02)
    return f"expired after its 200 ms TTL (PTTL was {remaining})"


@check("redis", "pipeline (MULTI/EXEC)")
def pipeline(ctx: CheckContext) -> None:
    key = ctx.key("pipeline")
    with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.incr(key)
        pipe.incrby(key, 40)
        pipe.expire(key, 60)
        pipe.get(key)
        results = pipe.execute()
    expect(results[:3] == [1, 2, 42], f"INCR results were {results[:3]}, expected [1, 2, 42]")
    expect(results[4] == "42", f"GET in the pipeline returned {results[4]!r}")


@check("redis", "pub/sub round trip")
def pubsub(ctx: CheckContext) -> str:
    channel = f"{ctx.settings.redis.key_prefix}{ctx.run_id}:channel"
    pubsub = ctx.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    try:
        pubsub.subscribe(channel)
        # Wait for the subscription to be active before publishing.
        deadline = time.monotonic() + 2.0
        while ctx.redis.pubsub_numsub(channel)[0][1] < 1:
            expect(time.monotonic() < deadline, "subscription did not become active within 2 s")
            time.sleep(0.01)
        started = time.perf_counter()
        receivers = ctx.redis.publish(channel, ctx.run_id)
        expect(receivers >= 1, f"PUBLISH reached {counted(receivers, 'subscriber')}")
        message = None
        deadline = time.monotonic() + 2.0
        while message is None and time.monotonic() < deadline:
            # None also comes back for the skipped subscribe confirmation.
            message = pubsub.get_message(timeout=0.1)
        expect(message is not None, "no message within 2 s")
        assert message is not None
        expect(message["data"] == ctx.run_id, f"received {message['data']!r}")
        return f"delivered in {(time.perf_counter() - started) * 1000:.1f} ms"
    finally:
        pubsub.close()
