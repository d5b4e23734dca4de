"""Benchmark: Socket.IO chat and presence in the embedded API (issue 12).

On a local stack this script starts in a temporary directory (two API instances,
SQLite) and stops afterwards:

- message send -> delivery between two clients on DIFFERENT instances (sender on A,
  recipient on B): python-socketio clients over websockets, one message at a time
  (each waits for the previous delivery), 10,000 messages; compared with a raw Redis
  PUBLISH -> subscriber round trip measured in the same run the same way (target:
  p99 <= 5x the raw round trip);
- idle authenticated Socket.IO connections one instance holds (target >= 10,000):
  minimal Engine.IO v4 websocket clients (the handshake, the namespace connect, pong
  answers to the server's pings) opened in a separate process, the instance's RSS
  before and after, and the connection count the instance itself reports
  (``devconnect_socketio_connections`` in /metrics).

Usage: python bench/bench_realtime.py [--messages 10000] [--idle 10000] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_description, replace_section
from bench_api import devctl, percentile, wait_ready

from devctl.engines.processes import free_port

SECTION = "Real time (Socket.IO chat and presence)"
PASSWORD = "Bench!mark1"
BENCH_CONFIG = """\
# Rate limits off for the benchmark: one client sends far faster than any user may.
state:
  rate_limits:
    chat_message: {limit: null, period: 60, subject: user}
    signup_ip: {limit: null, period: 600, subject: ip}
    login_ip: {limit: null, period: 900, subject: ip}
    login_email: {limit: null, period: 900, subject: email}
"""


def start_instance(
    name: str, port: int, env: dict[str, str], root: Path
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devctl.api", "--port", str(port), "--name", name],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=open(root / f"{name}.log", "w"),  # noqa: SIM115
    )
    wait_ready(f"http://127.0.0.1:{port}")
    return proc


def signup(url: str) -> tuple[str, str, httpx.Client]:
    client = httpx.Client(base_url=url, timeout=30)
    answer = client.post(
        "/signup",
        json={
            "firstName": "Bench",
            "lastName": "User",
            "password": PASSWORD,
            "emailId": f"b{uuid.uuid4().hex[:12]}@example.com",
        },
    )
    answer.raise_for_status()
    return str(answer.json()["_id"]), client.cookies["token"], client


async def raw_round_trips(redis_url: str, count: int) -> list[float]:
    """PUBLISH on one connection -> message on a subscribed one, one at a time (ms)."""
    import redis.asyncio

    publisher = redis.asyncio.Redis.from_url(redis_url)
    listener = redis.asyncio.Redis.from_url(redis_url)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("bench:raw")
    samples = []
    try:
        for index in range(count):
            payload = json.dumps({"i": index, "message": "hello there"})
            start = time.perf_counter()
            await publisher.publish("bench:raw", payload)
            while True:
                message = await pubsub.get_message(timeout=5)
                if message is not None:
                    break
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        await pubsub.aclose()
        await publisher.aclose()
        await listener.aclose()
    return samples


async def chat_round_trips(
    url_a: str, url_b: str, sender: tuple[str, str], recipient: tuple[str, str], count: int
) -> list[float]:
    """private-message from a client on A -> delivery to a client on B (ms)."""
    import socketio

    received: asyncio.Queue[float] = asyncio.Queue()
    a = socketio.AsyncClient(reconnection=False)
    b = socketio.AsyncClient(reconnection=False)

    @b.on("private-message")
    async def delivered(data: Any) -> None:
        await received.put(time.perf_counter())

    await a.connect(url_a, headers={"Cookie": f"token={sender[1]}"}, transports=["websocket"])
    await b.connect(url_b, headers={"Cookie": f"token={recipient[1]}"}, transports=["websocket"])
    samples = []
    try:
        for index in range(count):
            start = time.perf_counter()
            await a.emit("private-message", {"toUserId": recipient[0], "message": f"m{index}"})
            arrived = await asyncio.wait_for(received.get(), 10)
            samples.append((arrived - start) * 1000)
    finally:
        await a.disconnect()
        await b.disconnect()
    return samples


async def ack_round_trips(url: str, cookie: str, count: int) -> list[float]:
    """``register`` -> its acknowledgement on one instance: Socket.IO's own floor (ms).

    The handler does no I/O; what is left is the websocket, python-socketio on both
    ends and the event loops: the part of a message's latency that is not storage.
    """
    import socketio

    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, headers={"Cookie": f"token={cookie}"}, transports=["websocket"])
    samples = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            await client.call("register", None, timeout=10)
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        await client.disconnect()
    return samples


IDLE_CLIENT = r"""
import asyncio, sys, time
import websockets

async def one(uri, cookie, opened, sem):
    async with sem:
        ws = await websockets.connect(uri, additional_headers={"Cookie": "token=" + cookie},
                                      ping_interval=None, open_timeout=60, max_queue=4)
        assert (await ws.recv()).startswith("0")        # Engine.IO open
        await ws.send("40")                              # Socket.IO connect to "/"
        reply = await ws.recv()
        assert reply.startswith("40"), reply
    opened.append(1)
    async for frame in ws:                               # idle: answer the server's pings
        if frame == "2":
            await ws.send("3")

async def main():
    uri, count, cookies = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    opened, sem = [], asyncio.Semaphore(64)
    tasks = [asyncio.create_task(one(uri, cookies[i % len(cookies)], opened, sem))
             for i in range(count)]
    start = time.perf_counter()
    while len(opened) < count:
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            print("FAILED", len(opened), repr(failed[0].exception()), flush=True)
            return
        await asyncio.sleep(0.2)
    print("OPEN", len(opened), round(time.perf_counter() - start, 2), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    found = re.search(rf"^{name} ([\d.e+]+)$", text, re.M)
    return float(found.group(1)) if found else float("nan")


def idle_connections(
    url: str, pid: int, cookies: list[str], count: int, root: Path
) -> dict[str, Any]:
    server = psutil.Process(pid)
    before = server.memory_info().rss
    script = root / "idle_client.py"
    script.write_text(IDLE_CLIENT)
    uri = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    client = subprocess.Popen(
        [sys.executable, str(script), uri, str(count), ",".join(cookies)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = client.stdout.readline().split() if client.stdout else []
        if not line or line[0] != "OPEN":
            raise RuntimeError(f"idle clients failed: {line}")
        seconds = float(line[2])
        time.sleep(30)  # past one ping interval: every connection answered a ping
        held = metric(url, "devconnect_socketio_connections")
        after = server.memory_info().rss
        return {
            "requested": count,
            "held": held,
            "open_seconds": seconds,
            "rss_before_mib": before / 2**20,
            "rss_after_mib": after / 2**20,
            "rss_per_connection_kib": (after - before) / max(held, 1) / 1024,
        }
    finally:
        client.kill()
        client.wait()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.idle * 2 + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    root = Path(tempfile.mkdtemp(prefix="bench-rt-"))
    (root / "devctl.yaml").write_text(BENCH_CONFIG)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_", "DATABASE_", "JWT_"))
    }
    env.update(
        DEVCTL_DATA_DIR=str(root / "data"),
        DEVCTL_REDIS_PORT=str(free_port()),
        DEVCTL_KAFKA_PORT=str(free_port()),
        DEVCTL_CONFIG=str(root / "devctl.yaml"),
        DEVCTL_LOG_LEVEL="warning",
    )
    up = devctl("up", env=env, cwd=root).stdout
    redis_url = re.search(r"^REDIS_URL\s+(\S+)", up, re.M).group(1)  # type: ignore[union-attr]
    if "***" in redis_url:
        redis_url = f"redis://127.0.0.1:{env['DEVCTL_REDIS_PORT']}/0"
    ports = free_port(), free_port()
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, Any] = {}
    try:
        procs = [start_instance(f"rt-{i}", port, env, root) for i, port in enumerate(ports)]
        sender, recipient = signup(urls[0]), signup(urls[0])
        request = sender[2].post(f"/request/send/interested/{recipient[0]}")
        request.raise_for_status()
        recipient[2].post(
            f"/request/review/accepted/{request.json()['data']['_id']}"
        ).raise_for_status()
        # Warm both paths, then alternate blocks so that drift hits both alike.
        asyncio.run(raw_round_trips(redis_url, 200))
        asyncio.run(chat_round_trips(urls[0], urls[1], sender[:2], recipient[:2], 200))
        raw: list[float] = []
        chat: list[float] = []
        acks: list[float] = []
        block = max(1, args.messages // 4)
        for _ in range(4):
            raw += asyncio.run(raw_round_trips(redis_url, block))
            acks += asyncio.run(ack_round_trips(urls[0], sender[1], block))
            chat += asyncio.run(
                chat_round_trips(urls[0], urls[1], sender[:2], recipient[:2], block)
            )
        results["raw"], results["chat"], results["acks"] = raw, chat, acks
        # At most 90 tabs per user: an instance holds at most 100 sockets of one user.
        cookies = [signup(urls[1])[1] for _ in range(max(2, -(-args.idle // 90)))]
        results["idle"] = idle_connections(urls[1], procs[1].pid, cookies, args.idle, root)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(
            [sys.executable, "-m", "devctl", "down"], env=env, cwd=root, capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)

    raw, chat, idle = results["raw"], results["chat"], results["idle"]
    acks = results["acks"]
    summary = {
        "raw_p50": statistics.median(raw),
        "raw_p99": percentile(raw, 99),
        "ack_p50": statistics.median(acks),
        "ack_p99": percentile(acks, 99),
        "chat_p50": statistics.median(chat),
        "chat_p99": percentile(chat, 99),
    }
    ratio = summary["chat_p99"] / summary["raw_p99"]
    print(json.dumps({**summary, "p99_ratio": ratio, "idle": idle}, indent=2))
    if args.write:
        body = "\n".join(
            [
                f"Measured {time.strftime('%Y-%m-%d')} on {machine_description()} with "
                f"`python bench/bench_realtime.py --messages {args.messages} --idle {args.idle}`.",
                "",
                "| measure | p50 | p99 | target | met |",
                "|---|---|---|---|---|",
                f"| raw Redis PUBLISH -> subscriber ({len(raw):,} round trips) | "
                f"{summary['raw_p50']:.3f} ms | {summary['raw_p99']:.3f} ms | baseline | |",
                f"| Socket.IO event -> ack on one instance, no storage ({len(acks):,}) | "
                f"{summary['ack_p50']:.3f} ms | {summary['ack_p99']:.3f} ms | floor | |",
                f"| private-message A -> B across instances ({len(chat):,} messages) | "
                f"{summary['chat_p50']:.3f} ms | {summary['chat_p99']:.3f} ms | "
                f"p99 <= 5x raw | {'yes' if ratio <= 5 else 'no'} ({ratio:.1f}x) |",
                "",
                "| idle connections, one instance | value | target | met |",
                "|---|---|---|---|",
                f"| held (the instance's own count) | {idle['held']:,.0f} of {idle['requested']:,} "
                f"| >= 10,000 | {'yes' if idle['held'] >= 10_000 else 'no'} |",
                f"| opened in | {idle['open_seconds']:.1f} s | | |",
                f"| RSS before -> after | {idle['rss_before_mib']:.0f} -> "
                f"{idle['rss_after_mib']:.0f} MiB | | |",
                f"| RSS per connection | {idle['rss_per_connection_kib']:.1f} KiB | | |",
            ]
        )
        replace_section(args.write, SECTION, body + "\n" + NOTES)
    return 0


NOTES = """
- A message's path: websocket frame in on A; the session checked again (one Redis
  round trip: a logged-out socket must not send); the `chat_message` rate limit (one
  round trip); one SQLite transaction (the pair's connection row, the message row, its
  outbox row, one flush); one PUBLISH on the Socket.IO channel; B (and A, for the
  echo) write the frame; then the message cache append (one round trip, after the
  delivery). The raw baseline is the PUBLISH -> subscriber hop alone; the Socket.IO
  floor is an event and its ack on one instance with no I/O in the handler.
- The p99 target (5x the raw round trip) is not met (about 36x). Socket.IO itself is
  not the cost: its floor (an event and its ack, python-socketio on both ends) is
  under 2x the raw hop. The rest, about 4 ms at the median, is the work a message
  must do before anyone sees it: two Redis round trips (session, rate limit), the
  database transaction (SQLite through aiosqlite, a thread hop per statement, and
  SQLAlchemy) and the hop to the other instance; this run does not split it
  further. Delivering before the commit would be faster and would show messages a
  failed commit then loses; devctl does not.
- Measured on the way: the outbox relay published a round per chat message (two
  write transactions and a produce, contending with the next message): p50 10 ms,
  p99 49 ms. It now gathers 20 ms of commits per round (p50 3-4 ms on a quiet
  machine); the message and its outbox row also share one flush.
- Idle clients are minimal Engine.IO v4 websocket clients in one separate process
  (no Socket.IO client library: 10,000 of those would measure the client); each
  socket is authenticated by a session cookie (at most 90 tabs per user, the cap is
  100) and recorded in presence like any other.
"""


if __name__ == "__main__":
    sys.exit(main())
