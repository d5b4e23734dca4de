"""Benchmark: the Redis domain's hot operations beside a raw redis-py GET, same server, same run.

Operations, each on one connection, one request at a time (so throughput is the
inverse of the mean latency and the ratio to a raw GET shows the domain's cost
over the bare round trip):
  - session validate   (one EVALSHA: session hash + cached user, JSON decoded)
  - presence connect / disconnect  (pipeline: instance index + Lua transition + PUBLISH)
  - rate-limit check   (one EVALSHA: GCRA on one key)
  - message append     (one EVALSHA: RPUSH + LTRIM + EXPIRE on a full 50-message cache)
  - raw GET            (the same ~300-byte user JSON that validate returns)

The operations are interleaved in rounds so that noise on this shared machine
hits them all alike. It starts its own local stack in a temporary directory and
stops it at the end.

Usage: python bench/bench_state.py [--ops 4000] [--rounds 5] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_description, replace_section

from devctl.clients.redis_client import make_redis
from devctl.config.loader import load_settings
from devctl.engines.local import LocalEngine
from devctl.engines.processes import free_port
from devctl.state import build
from devctl.state.admin import seed_user
from devctl.state.ratelimit import Policy

SECTION = "Redis domain (sessions, presence, rate limits, message cache)"
TARGETS = {"session validate": 0.60, "rate-limit check": 0.50}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(op: Callable[[int], Any], n: int, start: int) -> list[float]:
    """Latencies (seconds) of n calls op(start)..op(start + n - 1)."""
    out = []
    clock = time.perf_counter
    for i in range(start, start + n):
        t0 = clock()
        op(i)
        out.append(clock() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ops", type=int, default=4000, help="Operations per kind per round.")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds.")
    parser.add_argument("--write", type=Path, help="Markdown file to update with the results.")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="devctl-bench-state-") as tmp:
        flags = {
            "data_dir": (str(Path(tmp) / "data"), "--data-dir"),
            "redis.port": (free_port(), "--redis-port"),
            "kafka.port": (free_port(), "--kafka-port"),
        }
        settings = load_settings(flags=flags, cwd=Path(tmp), environ={})
        engine = LocalEngine(settings)
        try:
            endpoints = engine.up().endpoints
            client = make_redis(endpoints, settings)
            results, version = run(client, settings, options.ops, options.rounds)
            client.close()
        finally:
            engine.down(purge=True)

    raw = results["raw GET"]
    raw_rate = len(raw) / sum(raw)
    rows = []
    for name, lat in results.items():
        rate = len(lat) / sum(lat)
        rows.append((name, rate, percentile(lat, 0.5), percentile(lat, 0.99), rate / raw_rate))
    print(f"{'operation':<22}{'ops/s':>10}{'p50 us':>10}{'p99 us':>10}{'vs GET':>9}")
    for name, rate, p50, p99, ratio in rows:
        print(f"{name:<22}{rate:>10.0f}{p50 * 1e6:>10.0f}{p99 * 1e6:>10.0f}{ratio:>8.0%}")
    verdicts = []
    for name, target in TARGETS.items():
        ratio = next(r[4] for r in rows if r[0] == name)
        verdicts.append(
            f"- {name}: **{ratio:.0%}** of raw GET throughput "
            f"(target >= {target:.0%}: {'met' if ratio >= target else 'NOT met'})."
        )
    print("\n".join(verdicts))
    if options.write:
        table = "\n".join(
            f"| {name} | {rate:,.0f} | {p50 * 1e6:.0f} | {p99 * 1e6:.0f} | {ratio:.0%} |"
            for name, rate, p50, p99, ratio in rows
        )
        body = f"""
Measured {time.strftime("%Y-%m-%d")} on {machine_description()}; server {version} from the
local engine, client redis-py with hiredis on the same machine (loopback). One connection,
one request at a time: {options.rounds} interleaved rounds x {options.ops} operations of each
kind, so throughput is 1 / mean latency and the ratio to a raw GET is the domain's cost over
the bare round trip.

| operation | ops/s | p50 (us) | p99 (us) | throughput vs raw GET |
|---|---|---|---|---|
{table}

{chr(10).join(verdicts)}
- raw GET reads the same ~300-byte user JSON that session validate returns, so the
  difference is the session lookup, the script and the decoding.
- presence connect/disconnect each flip the user's state (the worst case: the script
  also PUBLISHes the change) and include the instance-index write, in one pipeline.
- message append hits a full 50-message cache (push + trim + expire in one script).

Reproduce: `python bench/bench_state.py --ops 4000 --rounds 5 --write docs/benchmarks.md`
"""
        replace_section(options.write, SECTION, body)
        print(f"wrote section '{SECTION}' of {options.write}")


def run(client: Any, settings: Any, ops: int, rounds: int) -> tuple[dict[str, list[float]], str]:
    state = build(client, settings.state, prefix="bench:", stats=False)
    info = client.info("server")
    version = f"valkey {info.get('valkey_version') or info.get('redis_version')}"

    user = seed_user("bench-user", 1)
    state.user_cache.put(user)
    state.user_cache.ttl_ms = 3_600_000
    token = state.sessions.create("bench-user", ttl=3600).token
    raw_key = "bench:raw-user"
    client.set(raw_key, client.get(state.keys.user("bench-user")))
    policy = Policy("bench", limit=10**9, period=60)
    state.presence.heartbeat("bench-api", ttl=3600)
    history = [{"fromUserId": "a", "toUserId": "b", "text": f"hello {i}", "ts": i} for i in range(50)]
    state.messages.recent("a", "b", loader=lambda a, b, n: history[-n:])
    message = {"fromUserId": "a", "toUserId": "b", "text": "x" * 80, "ts": 0.0}

    def validate(_: int) -> None:
        assert state.sessions.validate(token) is not None

    def connect(i: int) -> None:
        assert state.presence.connect("bench-user", f"c{i}", "bench-api")

    def disconnect(i: int) -> None:
        assert state.presence.disconnect("bench-user", f"c{i}", "bench-api")

    def check(_: int) -> None:
        assert state.ratelimits.check(policy, "bench").allowed

    def append(_: int) -> None:
        assert state.messages.append("a", "b", message)

    def get(_: int) -> None:
        assert client.get(raw_key) is not None

    def presence_pair(n: int, start: int) -> tuple[list[float], list[float]]:
        ups, downs = [], []
        clock = time.perf_counter
        for i in range(start, start + n):
            t0 = clock()
            connect(i)
            t1 = clock()
            disconnect(i)
            ups.append(t1 - t0)
            downs.append(clock() - t1)
        return ups, downs

    results: dict[str, list[float]] = {
        k: []
        for k in (
            "raw GET",
            "session validate",
            "presence connect",
            "presence disconnect",
            "rate-limit check",
            "message append",
        )
    }
    for op in (get, validate, check, append):  # warm up: connections, scripts, caches
        timed(op, 200, 0)
    presence_pair(200, 0)
    for r in range(rounds):
        start = (r + 1) * ops
        results["raw GET"] += timed(get, ops, start)
        results["session validate"] += timed(validate, ops, start)
        ups, downs = presence_pair(ops, start)
        results["presence connect"] += ups
        results["presence disconnect"] += downs
        results["rate-limit check"] += timed(check, ops, start)
        results["message append"] += timed(append, ops, start)
        results["raw GET"] += timed(get, ops, start)
    print(
        "medians (us): "
        + ", ".join(f"{k} {statistics.median(v) * 1e6:.0f}" for k, v in results.items()),
        file=sys.stderr,
    )
    return results, version


if __name__ == "__main__":
    main()
