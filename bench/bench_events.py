"""Benchmark: the events layer against raw confluent-kafka, on a local stack of its own.

1. Publish: devctl's EventProducer (validation, envelope, JSON, failure reports),
   through ``publish_batch`` and through ``publish`` one event at a time, vs a raw
   confluent-kafka Producer sending the very same bytes (encoded before the clock
   starts), same configuration (idempotent, acks=all, same linger and queue), same
   broker. Throughput = events / (first send .. every delivery confirmed).
2. Tail: `devctl tail TOPIC --from-beginning --output json --count N > /dev/null`
   vs a raw consume loop (its own Python process, like the CLI) that parses each
   value and writes the same NDJSON lines. Both outputs are compared line by line
   once, untimed, to prove they are the same lines.
3. Consumer runtime: events/s through a no-op handler, idempotency guard on vs off.

Rounds alternate between the contenders (the machines are shared and noisy);
medians are reported.

Usage: python bench/bench_events.py [--events 100000] [--rounds 3] [--batch 1000] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_description, replace_section
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import make_admin, producer_conf
from devctl.clients.redis_client import make_redis
from devctl.config.loader import Settings, load_settings
from devctl.engines.local import LocalEngine
from devctl.engines.processes import free_port
from devctl.events.consumer import ConsumerRuntime
from devctl.events.envelope import encode_event
from devctl.events.ids import uuid7
from devctl.events.producer import EventProducer
from devctl.events.registry import REGISTRY
from devctl.streams.offsets import end_offsets

SECTION = "Events (producer, tail, consumer runtime)"
MESSAGE = "devconnect.message.sent"
PARTITIONS = 3
QUEUE = 200_000  # both producers may hold a whole round locally


def message(index: int) -> dict[str, Any]:
    """A chat message: the most frequent DevConnect event, with a realistic body."""
    return {
        "messageId": f"m{index}",
        "fromUserId": f"user{index % 500}",
        "toUserId": f"user{(index * 7 + 1) % 500}",
        "text": f"message {index}: see you at the meetup on Thursday? bring the slides 🙂",
        "ts": "2026-11-25T18:00:00.000Z",
    }


def fix_users(data: dict[str, Any]) -> dict[str, Any]:
    if data["fromUserId"] == data["toUserId"]:
        data["toUserId"] = "user-other"
    return data


def median(values: list[float]) -> float:
    return statistics.median(values)


# --- publish ------------------------------------------------------------------


def bench_publish(
    endpoints: Endpoints, settings: Settings, count: int, rounds: int, batch: int
) -> dict[str, Any]:
    admin = make_admin(endpoints, settings)
    datas = [fix_users(message(i)) for i in range(count)]
    rates: dict[str, list[float]] = {"raw": [], "batch": [], "single": []}
    linger = settings.events.linger_ms
    source = settings.events.source

    def run_raw(topic: str) -> int:
        # Raw: the bytes devctl would send, encoded before the clock starts.
        encoded = [encode_event(MESSAGE, d, source=source) for d in datas]
        raw = Producer(
            producer_conf(
                endpoints,
                settings,
                **{"linger.ms": linger, "queue.buffering.max.messages": QUEUE},
            )
        )
        raw.produce(topic, b"warm-up")  # pays the producer-id handshake outside the clock
        raw.flush(10)
        failures = 0

        def count_failures(err: Any, _msg: Any) -> None:
            nonlocal failures
            if err is not None:
                failures += 1

        started = time.perf_counter()
        for record in encoded:
            raw.produce(
                topic, record.value, record.key, headers=record.headers, on_delivery=count_failures
            )
        raw.flush(120)
        rates["raw"].append(count / (time.perf_counter() - started))
        assert failures == 0 and len(raw) == 0
        return count + 1

    def run_devctl(topic: str, mode: str) -> int:
        producer = EventProducer(
            endpoints, settings, queue_full="block", **{"queue.buffering.max.messages": QUEUE}
        )
        producer.publish_raw(topic, b"warm-up").result(10)
        started = time.perf_counter()
        if mode == "batch":
            futures = [
                producer.publish_batch(MESSAGE, datas[i : i + batch], topic=topic)
                for i in range(0, count, batch)
            ]
        else:
            for data in datas:
                producer.publish(MESSAGE, data, topic=topic)
        remaining = producer.flush(120)
        rates[mode].append(count / (time.perf_counter() - started))
        assert remaining == 0 and producer.stats.failed == 0
        assert producer.stats.delivered == count + 1
        if mode == "batch":
            assert all(f.result(1).delivered == f.total for f in futures)
        producer.close()
        return count + 1

    contenders: list[tuple[str, Callable[[str], int]]] = [
        ("raw", run_raw),
        ("batch", lambda topic: run_devctl(topic, "batch")),
        ("single", lambda topic: run_devctl(topic, "single")),
    ]
    for round_index in range(rounds):
        topic = f"bench-publish-{round_index}"
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=10)
        # Rotate who goes first: a broker warming up or slowing down favours no one.
        shift = round_index % len(contenders)
        stored = sum(run(topic) for _name, run in contenders[shift:] + contenders[:shift])
        ends = end_offsets(endpoints, settings, [(topic, p) for p in range(PARTITIONS)])
        assert sum(e.high for e in ends.values()) == stored  # every run, all stored
        admin.delete_topics([topic])[topic].result(timeout=20)
        print(
            f"  publish round {round_index + 1}: raw {rates['raw'][-1]:,.0f}/s, "
            f"devctl batch {rates['batch'][-1]:,.0f}/s, one by one {rates['single'][-1]:,.0f}/s",
            flush=True,
        )
    spec = REGISTRY[MESSAGE]
    sample = datas[0]
    fields = spec.validate_fields(sample)

    def micros(func: Callable[[], object], number: int = 50_000) -> float:
        return min(timeit.repeat(func, number=number, repeat=3)) / number * 1e6

    chunk = datas[:batch]
    return {
        "raw": median(rates["raw"]),
        "batch": median(rates["batch"]),
        "single": median(rates["single"]),
        "ratio_batch": median(rates["batch"]) / median(rates["raw"]),
        "ratio_single": median(rates["single"]) / median(rates["raw"]),
        # The same round's contenders share its conditions: their ratios show the noise.
        "round_ratios_batch": [b / r for b, r in zip(rates["batch"], rates["raw"], strict=True)],
        "raw_range": (min(rates["raw"]), max(rates["raw"])),
        "batch_size": batch,
        "value_bytes": len(encode_event(MESSAGE, sample, source=source).value),
        "us_validate_model": micros(lambda: spec.validate(sample)),
        "us_validate": micros(lambda: spec.validate_fields(sample)),
        "us_validate_many": micros(lambda: spec.validate_many(chunk), number=50) / batch,
        "us_data_json": micros(lambda: spec.fields_json(fields)),
        "us_uuid7": micros(uuid7),
        "us_encode": micros(lambda: encode_event(spec, sample, source="/devconnect/bench")),
    }


# --- tail ---------------------------------------------------------------------

RAW_TAIL = textwrap.dedent(
    """
    import json, sys, time
    from confluent_kafka import Consumer, TopicPartition
    brokers, topic, partitions, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "raw-tail",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out = sys.stdout
    seen = 0
    while seen < count:
        for msg in consumer.consume(1000, 0.2):
            if msg.error() is not None:
                continue
            ms = msg.timestamp()[1]
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)
            key = msg.key()
            line = {
                "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                "timestamp": stamp, "key": None if key is None else key.decode("utf-8", "replace"),
                "headers": {k: (v.decode("utf-8", "replace") if v is not None else None)
                            for k, v in msg.headers() or ()},
                "event": json.loads(msg.value()),
            }
            out.write(dumps(line) + "\\n")
            seen += 1
            if seen == count:
                break
    out.flush()
    consumer.close()
    """
)


def bench_tail(
    endpoints: Endpoints, settings: Settings, env: dict[str, str], count: int, rounds: int
) -> dict[str, Any]:
    topic = "bench-tail"
    admin = make_admin(endpoints, settings)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=10)
    with EventProducer(
        endpoints, settings, queue_full="block", **{"queue.buffering.max.messages": QUEUE}
    ) as producer:
        for index in range(count):
            producer.publish(MESSAGE, fix_users(message(index)), topic=topic)
        assert producer.flush(120) == 0
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "raw_tail.py"
        script.write_text(RAW_TAIL)
        devctl_cmd = [
            sys.executable, "-m", "devctl", "tail", topic,
            "--from-beginning", "--output", "json", "--count", str(count),
        ]  # fmt: skip
        raw_cmd = [
            sys.executable, str(script), endpoints.kafka_brokers, topic, str(PARTITIONS), str(count)
        ]  # fmt: skip

        # Same lines? Compared once, untimed.
        ours = Path(scratch) / "devctl.ndjson"
        theirs = Path(scratch) / "raw.ndjson"
        with ours.open("w") as out:
            subprocess.run(devctl_cmd, env=env, stdout=out, stderr=subprocess.DEVNULL, check=True)
        with theirs.open("w") as out:
            subprocess.run(raw_cmd, env=env, stdout=out, check=True)
        same = sorted(ours.read_text().splitlines()) == sorted(theirs.read_text().splitlines())
        lines = len(ours.read_text().splitlines())

        def timed(cmd: list[str]) -> float:
            started = time.perf_counter()
            subprocess.run(
                cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
            )
            return time.perf_counter() - started

        raw_times: list[float] = []
        devctl_times: list[float] = []
        for round_index in range(rounds):
            raw_times.append(timed(raw_cmd))
            devctl_times.append(timed(devctl_cmd))
            print(
                f"  tail round {round_index + 1}: raw {raw_times[-1]:.2f}s, "
                f"devctl {devctl_times[-1]:.2f}s",
                flush=True,
            )
        python_floor = median([timed([sys.executable, "-c", "pass"]) for _ in range(3)])
    admin.delete_topics([topic])[topic].result(timeout=20)
    return {
        "raw_s": median(raw_times),
        "devctl_s": median(devctl_times),
        "raw": count / median(raw_times),
        "devctl": count / median(devctl_times),
        "ratio": median(raw_times) / median(devctl_times),
        "same_lines": same and lines == count,
        "python_floor_s": python_floor,
    }


# --- consumer runtime ---------------------------------------------------------


def bench_consumer(
    endpoints: Endpoints, settings: Settings, count: int, rounds: int
) -> dict[str, Any]:
    topic = "bench-consume"
    admin = make_admin(endpoints, settings)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=10)
    with EventProducer(
        endpoints, settings, queue_full="block", **{"queue.buffering.max.messages": QUEUE}
    ) as producer:
        for index in range(count):
            producer.publish(MESSAGE, fix_users(message(index)), topic=topic)
        assert producer.flush(120) == 0

    def run(guard: bool, round_index: int) -> float:
        group = f"bench-{'guard' if guard else 'plain'}-{round_index}"
        runtime = ConsumerRuntime(
            endpoints,
            settings,
            group=group,
            partitions=[(topic, p) for p in range(PARTITIONS)],
            idempotency=guard,
            lag_interval=0,
        )
        handled = 0

        def noop(_event: Any) -> None:
            nonlocal handled
            handled += 1
            if handled == count:
                runtime.stop()

        runtime.on(MESSAGE, noop)
        started = time.perf_counter()
        counters = runtime.run(install_signals=False, until_idle=10)
        elapsed = time.perf_counter() - started
        assert counters.processed == count, counters
        if guard:  # every event left its marker; remove them (untimed)
            client = make_redis(endpoints, settings)
            keys = list(client.scan_iter(match=f"*idem:{group}:*", count=5000))
            assert len(keys) == count, len(keys)
            for start in range(0, len(keys), 5000):
                client.delete(*keys[start : start + 5000])
            client.close()
        return count / elapsed

    guarded: list[float] = []
    plain: list[float] = []
    for round_index in range(rounds):
        plain.append(run(False, round_index))
        guarded.append(run(True, round_index))
        print(
            f"  consumer round {round_index + 1}: no guard {plain[-1]:,.0f}/s, "
            f"guard {guarded[-1]:,.0f}/s",
            flush=True,
        )
    admin.delete_topics([topic])[topic].result(timeout=20)
    return {
        "plain": median(plain),
        "guard": median(guarded),
        "ratio": median(guarded) / median(plain),
    }


# --- report -------------------------------------------------------------------


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    publish, tail, consumer = results["publish"], results["tail"], results["consumer"]
    verdict: Callable[[float, float], str] = lambda ratio, target: (  # noqa: E731
        "meets" if ratio >= target else "misses"
    )
    return f"""
Measured {time.strftime("%Y-%m-%d")} on {machine_description()}; the broker is the local
engine's Tansu (memory storage) on the same machine, so client and broker share the
2 cores. Medians of {args.rounds} alternating rounds; event: `{MESSAGE}` with a
{publish["value_bytes"]}-byte envelope, 3 partitions.

| benchmark | devctl | raw confluent-kafka | ratio | target |
|---|---|---|---|---|
| publish {args.events:,} events, `publish_batch` of {publish["batch_size"]:,} (until all delivered) | {publish["batch"]:,.0f}/s | {publish["raw"]:,.0f}/s | **{publish["ratio_batch"]:.0%}** | >= 60% ({verdict(publish["ratio_batch"], 0.6)}) |
| publish {args.events:,} events, `publish` one by one (until all delivered) | {publish["single"]:,.0f}/s | {publish["raw"]:,.0f}/s | {publish["ratio_single"]:.0%} | (the per-request path) |
| `tail --from-beginning --output json --count {args.events:,}` > /dev/null | {tail["devctl_s"]:.2f} s ({tail["devctl"]:,.0f}/s) | {tail["raw_s"]:.2f} s ({tail["raw"]:,.0f}/s) | **{tail["ratio"]:.0%}** | >= 50% ({verdict(tail["ratio"], 0.5)}) |

| consumer runtime, no-op handler, {args.consumer_events:,} events | events/s |
|---|---|
| idempotency guard off | {consumer["plain"]:,.0f}/s |
| idempotency guard on (Redis MGET + SET per batch of 100) | {consumer["guard"]:,.0f}/s ({consumer["ratio"]:.0%} of off) |

- Publish: the raw producer sends bytes encoded before its clock starts, with a
  failure-counting delivery callback (the least a producer that does not drop
  events silently needs). devctl's includes schema validation, the CloudEvents
  envelope, UUIDv7 ids and JSON encoding, and reports every failure. The table
  gives the ratio of the medians; `publish_batch`'s ratio round by round was
  {", ".join(f"{r:.0%}" for r in publish["round_ratios_batch"])} (the raw producer alone
  ranged over {publish["raw_range"][0]:,.0f}-{publish["raw_range"][1]:,.0f}/s in these rounds). Per event:
  raw {1e6 / publish["raw"]:.1f} µs, `publish_batch` {1e6 / publish["batch"]:.1f} µs, `publish`
  {1e6 / publish["single"]:.1f} µs.
  `publish_batch` validates the whole list in one pydantic-core call
  ({publish["us_validate_many"]:.2f} µs per event) into plain dicts (a model instance per event
  costs {publish["us_validate_model"]:.1f} µs), serializes each event's data once
  ({publish["us_data_json"]:.2f} µs), takes a block of ids (one integer format each) and
  counts successes with one shared callback; failures still come one by one (log,
  counter, callbacks, the batch's result).
  `publish` pays, per event, validation ({publish["us_validate"]:.1f} µs), a UUIDv7
  ({publish["us_uuid7"]:.1f} µs), the envelope ({publish["us_encode"]:.1f} µs for the whole encoding)
  and a future of its own; it never waits for the broker either (a request pays those
  few µs, not a round trip).
- Tail: both are fresh Python processes (the interpreter alone takes
  {tail["python_floor_s"]:.2f} s); the raw loop parses each value and writes the same
  NDJSON line. Same lines checked: {"yes" if tail["same_lines"] else "NO"}. devctl also
  computes true end offsets, validates each envelope and applies filters.
- Consumer: partitions pinned (no group join in the timing), offsets committed
  after every batch in both runs.

Reproduce: `python bench/bench_events.py --events {args.events} --rounds {args.rounds} --batch {publish["batch_size"]} --write docs/benchmarks.md`
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--consumer-events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="events per publish_batch call")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="devctl-bench-events-") as root:
        data_dir = Path(root) / "data"
        flags = {
            "data_dir": (str(data_dir), "--data-dir"),
            "redis.port": (free_port(), "--redis-port"),
            "kafka.port": (free_port(), "--kafka-port"),
            "local.stop_timeout": (1.0, "bench"),
        }
        settings = load_settings(flags=flags, cwd=Path(root), environ={})
        engine = LocalEngine(settings)
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))
        }
        env.update(
            DEVCTL_DATA_DIR=str(data_dir),
            DEVCTL_REDIS_PORT=str(settings.redis.port),
            DEVCTL_KAFKA_PORT=str(settings.kafka.port),
        )
        try:
            endpoints = engine.up().endpoints
            print("publish", flush=True)
            results = {
                "publish": bench_publish(endpoints, settings, args.events, args.rounds, args.batch)
            }
            print("tail", flush=True)
            results["tail"] = bench_tail(endpoints, settings, env, args.events, args.rounds)
            print("consumer runtime", flush=True)
            results["consumer"] = bench_consumer(
                endpoints, settings, args.consumer_events, args.rounds
            )
        finally:
            engine.down()
    print(json.dumps(results, indent=2))
    body = report(args, results)
    print(body)
    if args.write is not None:
        replace_section(args.write, SECTION, body)
        print(f"wrote section '{SECTION}' of {args.write}")


if __name__ == "__main__":
    main()
