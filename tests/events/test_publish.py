"""`devctl publish` and `devctl events types` as subprocesses against the real broker."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import consumer_conf
from devctl.engines.local import LocalEngine
from devctl.engines.processes import free_port
from devctl.errors import KafkaUnavailable
from devctl.events.envelope import decode_event
from devctl.events.producer import EventProducer
from devctl.events.registry import REGISTRY
from devctl.streams.offsets import end_offsets
from tests.conftest import interrupt, running, stack_settings
from tests.events.conftest import DEVCTL


def records(stack: Any, topic: str, partitions: int) -> list[Any]:
    ends = end_offsets(stack.endpoints, stack.settings, [(topic, p) for p in range(partitions)])
    wanted = sum(e.high for e in ends.values())
    consumer = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id="publish-reader"))
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out, deadline = [], time.monotonic() + 10
        while len(out) < wanted and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                out.append(msg)
        return out
    finally:
        consumer.close()


def test_one_event_reports_partition_and_offset(stack: Any, make_topic: Any, devctl: Any) -> None:
    topic = make_topic("one")
    result = devctl(
        "publish", topic, "--type", "devconnect.user.login", "--data", '{"userId": "p1"}'
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"✔ devconnect.user.login -> {topic} partition ")
    parts = line.split()
    partition, offset = (
        int(parts[parts.index("partition") + 1]),
        int(parts[parts.index("offset") + 1]),
    )
    (msg,) = records(stack, topic, 3)
    assert (msg.partition(), msg.offset()) == (partition, offset)
    event = decode_event(msg.value())
    assert event.subject == "p1" and msg.key() == b"p1" and f"id {event.id}" in line


def test_lines_from_stdin_with_json_report(stack: Any, make_topic: Any, devctl: Any) -> None:
    topic = make_topic("lines")
    stream = "\n".join(
        [
            json.dumps(
                {"type": "devconnect.user.online", "data": {"userId": "a", "connections": 2}}
            ),
            json.dumps(
                {
                    "type": "devconnect.user.offline",
                    "data": {"userId": "a", "lastSeen": "2026-11-25T10:00:00Z"},
                }
            ),
            "",
            json.dumps({"type": "devconnect.user.login", "data": {"userId": "b"}, "key": "custom"}),
        ]
    )
    result = devctl("publish", topic, "--json", input=stream)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["delivered"] == 3 and report["failed"] == 0
    assert [e["type"] for e in sorted(report["events"], key=lambda e: e["id"])] == [
        "devconnect.user.online",
        "devconnect.user.offline",
        "devconnect.user.login",
    ]
    keys = sorted(m.key() for m in records(stack, topic, 3))
    assert keys == [b"a", b"a", b"custom"]


def test_a_bad_line_sends_nothing(stack: Any, make_topic: Any, devctl: Any, tmp_path: Any) -> None:
    topic = make_topic("bad", partitions=1)
    path = tmp_path / "events.ndjson"
    path.write_text(
        '{"type": "devconnect.user.login", "data": {"userId": "ok"}}\n'
        '{"type": "devconnect.user.login", "data": {"userId": "not ok!"}}\n'
    )
    result = devctl("publish", topic, "--file", str(path))
    assert result.returncode == 2
    assert "line 2: invalid data for devconnect.user.login" in result.stderr
    unknown = devctl("publish", topic, "--type", "devconnect.user.logn", "--data", "{}")
    assert unknown.returncode == 2 and "did you mean devconnect.user.login?" in unknown.stderr
    wrong = devctl(
        "publish", "message-events", "--type", "devconnect.user.login", "--data", '{"userId": "x"}'
    )
    assert wrong.returncode == 2 and "belongs on user-events, not message-events" in wrong.stderr
    assert end_offsets(stack.endpoints, stack.settings, [(topic, 0)])[(topic, 0)].high == 0


def test_count_rate_and_raw(stack: Any, make_topic: Any, devctl: Any) -> None:
    topic = make_topic("rate", partitions=2)
    started = time.monotonic()
    result = devctl(
        "publish", topic, "--type", "devconnect.analytics.activity",
        "--data", '{"userId": "r", "action": "tick"}', "--count", "12", "--rate", "20/s",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "delivered 12 of 12 events" in result.stdout
    assert elapsed >= 0.55  # 12 events at 20/s take at least 11/20 s
    raw = devctl("publish", topic, "--raw", "--data", "plain bytes", "--key", "k")
    assert raw.returncode == 0, raw.stderr
    got = records(stack, topic, 2)
    ids = {decode_event(m.value()).id for m in got if m.value() != b"plain bytes"}
    assert len(ids) == 12  # every copy got its own id
    assert [m.key() for m in got if m.value() == b"plain bytes"] == [b"k"]


def test_missing_topic_is_not_auto_created(devctl: Any, unique: str) -> None:
    result = devctl("publish", f"nope-{unique}", "--raw", "--data", "x")
    assert result.returncode == 1 and "does not exist" in result.stderr
    again = devctl("publish", f"nope-{unique}", "--raw", "--data", "x")
    assert again.returncode == 1


def test_events_types_lists_the_registry(devctl: Any) -> None:
    result = devctl("events", "types", "--json")
    assert result.returncode == 0
    listed = {t["type"]: t for t in json.loads(result.stdout)}
    assert set(listed) == set(REGISTRY)
    sent = listed["devconnect.message.sent"]
    assert sent["topic"] == "message-events" and sent["key"].startswith("conversation id")
    assert {"name": "text", "type": "str", "required": True} in sent["fields"]
    assert sent["schema"]["additionalProperties"] is False
    table = devctl("events", "types")
    assert (
        "devconnect.connection.requested" in table.stdout and "CONNECTION_REQUEST" in table.stdout
    )
    one = devctl("events", "types", "devconnect.user.signup", "--json")
    assert [t["type"] for t in json.loads(one.stdout)] == ["devconnect.user.signup"]
    bad = devctl("events", "types", "devconnect.nope")
    assert bad.returncode == 2 and "unknown event type" in bad.stderr


def test_an_oversized_record_in_the_middle_sends_nothing(
    stack: Any, make_topic: Any, devctl: Any, tmp_path: Any
) -> None:
    topic = make_topic("big", partitions=1)
    small = json.dumps({"userId": "u1", "action": "a"})
    big = json.dumps({"userId": "u1", "action": "b", "properties": {"blob": "x" * 1_200_000}})
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join([small, big, small]) + "\n")
    typed = devctl(
        "publish", topic, "--type", "devconnect.analytics.activity", "--file", str(events)
    )
    assert typed.returncode == 2, typed.stderr
    assert "line 2" in typed.stderr
    raw = tmp_path / "raw.txt"
    raw.write_text("\n".join(["small", "y" * 1_200_000, "small"]) + "\n")
    sent_raw = devctl("publish", topic, "--raw", "--file", str(raw))
    assert sent_raw.returncode == 2, sent_raw.stderr
    assert "line 2: the record is 1,200,000 bytes" in sent_raw.stderr
    assert end_offsets(stack.endpoints, stack.settings, [(topic, 0)])[(topic, 0)].high == 0


def test_ctrl_c_mid_send_reports_what_was_delivered(stack: Any, make_topic: Any) -> None:
    topic = make_topic("interrupt", partitions=1)
    proc = subprocess.Popen(
        [*DEVCTL, "publish", topic, "--type", "devconnect.user.login", "--data",
         '{"userId": "p1"}', "--count", "100", "--rate", "10/s"],
        env={**stack.env, "COLUMNS": "200", "NO_COLOR": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with running(proc):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait until some are on the broker
            if end_offsets(stack.endpoints, stack.settings, [(topic, 0)])[(topic, 0)].high >= 5:
                break
            time.sleep(0.2)
        out, err = interrupt(proc, timeout=30)
    assert proc.returncode == 130, err
    sent = end_offsets(stack.endpoints, stack.settings, [(topic, 0)])[(topic, 0)].high
    assert 5 <= sent < 100
    assert f"delivered {sent} of 100 events to {topic}" in out
    assert f"{100 - sent} of 100 events were not sent" in err


def test_bad_lines_are_numbered_usage_errors(stack: Any, make_topic: Any, devctl: Any) -> None:
    topic = make_topic("badlines", partitions=1)
    login = {"type": "devconnect.user.login", "data": {"userId": "u1"}}
    good = json.dumps(login)
    for bad, message in (
        ({**login, "subject": 5}, "'subject' must be a string, got int"),
        ({**login, "key": 5}, "'key' must be a string, got int"),
        ({**login, "subject": "\ud800"}, "'subject' is not valid Unicode text"),
        ({**login, "data": {"userId": "u1", "userAgent": "\ud800"}}, "unicode string"),
    ):
        result = devctl("publish", topic, input=f"{good}\n{json.dumps(bad)}\n")
        assert result.returncode == 2, (bad, result.stderr)
        assert "line 2: " in result.stderr and message in result.stderr, result.stderr
        assert "internal error" not in result.stderr
    not_utf8 = subprocess.run(
        [*DEVCTL, "publish", topic],
        input=good.encode() + b"\n" + b'{"type": "devconnect.user.login", "data": "\xff"}\n',
        env={**stack.env, "NO_COLOR": "1"}, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert not_utf8.returncode == 2, not_utf8.stderr
    assert b"line 2: not UTF-8 text" in not_utf8.stderr
    assert end_offsets(stack.endpoints, stack.settings, [(topic, 0)])[(topic, 0)].high == 0


def test_raw_sends_bytes_as_they_are(stack: Any, make_topic: Any, tmp_path: Any) -> None:
    topic = make_topic("rawbytes", partitions=1)
    values = [b"\xff\xfe not text", b"caf\xc3\xa9", b"\x80"]
    source = tmp_path / "raw.bin"
    source.write_bytes(b"\n".join(values) + b"\n")
    for args, stdin in ((["--file", str(source)], None), ([], source.read_bytes())):
        result = subprocess.run(
            [*DEVCTL, "publish", topic, "--raw", *args],
            input=stdin, env={**stack.env, "NO_COLOR": "1"}, capture_output=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert [m.value() for m in records(stack, topic, 1)] == values * 2


def test_a_dash_reads_standard_input_as_the_readme_shows(stack: Any, make_topic: Any) -> None:
    # README: `devctl publish TOPIC --type T --data JSON | --file F | - [...] [--raw]`.
    topic = make_topic("dash", partitions=1)
    for args, stdin in (
        (["--raw", "-"], b"first raw\nsecond raw\n"),
        (["-", "--type", "devconnect.user.login"], b'{"userId": "d1"}\n'),
    ):
        result = subprocess.run(
            [*DEVCTL, "publish", topic, *args],
            input=stdin, env={**stack.env, "NO_COLOR": "1"}, capture_output=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    got = records(stack, topic, 1)
    assert [m.value() for m in got[:2]] == [b"first raw", b"second raw"]
    assert decode_event(got[2].value()).data["userId"] == "d1" and len(got) == 3


def test_a_source_other_than_dash_is_a_usage_error(devctl: Any, unique: str) -> None:
    result = devctl("publish", f"t-{unique}", "--raw", "somefile")
    assert result.returncode == 2 and "'-'" in result.stderr
    both = devctl("publish", f"t-{unique}", "-", "--data", "{}", input="")
    assert both.returncode == 2 and "not both" in both.stderr


@pytest.mark.parametrize("sparse", [True, False])
def test_warm_up_has_the_producer_id_before_the_first_event(
    stack: Any, make_topic: Any, caplog: pytest.LogCaptureFixture, sparse: bool
) -> None:
    # Without it a fresh idempotent client got its id from a 500 ms timer: the first
    # event of every `devctl publish` waited about a second.
    caplog.set_level(logging.DEBUG, logger="devctl.events.librdkafka")
    topic = make_topic("warm")
    overrides = {"enable.sparse.connections": sparse}
    with EventProducer(stack.endpoints, stack.settings, **overrides) as producer:
        metadata = producer.warm_up(10)
        acquired = [r for r in caplog.records if "Acquired PID" in r.getMessage()]
        assert topic in metadata.topics and acquired
        delivery = producer.publish_raw(topic, b"x", key=b"k").result(timeout=10)
        assert delivery.ok and producer.stats.delivered == 1


def test_warm_up_without_a_broker_raises_kafka_unavailable() -> None:
    endpoints = Endpoints(
        "local", "redis://127.0.0.1:1/0", f"127.0.0.1:{free_port()}", caps=LocalEngine.caps
    )
    settings = stack_settings(Path("/nonexistent"), Path.cwd())
    with EventProducer(endpoints, settings) as producer:
        with pytest.raises(KafkaUnavailable, match="did not answer a metadata request"):
            producer.warm_up(0.5)
        producer.close(0)
