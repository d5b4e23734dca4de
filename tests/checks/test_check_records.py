"""The records `devctl test` writes into the configured topics are valid check CloudEvents.

They land in users' streams (the log cannot forget them), so every CloudEvents reader
must parse them, and devctl's readers must be able to tell them apart by type and header.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from devctl.clients.kafka_client import consumer_conf
from devctl.events.envelope import CONTENT_TYPE, HEADER_ID, HEADER_TYPE, envelope_problem
from devctl.events.markers import CHECK_EVENT_TYPE, CHECK_HEADER
from devctl.events.registry import REGISTRY
from devctl.streams.offsets import end_offsets


def run_devctl_test(stack: Any, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "devctl", "test", "--json", *args],
        capture_output=True,
        text=True,
        env=stack.env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def probes(stack: Any, topic: str) -> list[Any]:
    """Every record of ``topic`` marked as a check that is not a registered DevConnect event
    (the event checks publish registry events with the check header too)."""
    consumer = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id="probe-reader"))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        wanted = [(topic, p) for p in meta.partitions]
        ends = end_offsets(stack.endpoints, stack.settings, wanted)
        total = sum(e.high - e.low for e in ends.values())
        consumer.assign([TopicPartition(t, p, ends[(t, p)].low) for t, p in wanted])
        out, seen, deadline = [], 0, time.monotonic() + 15
        while seen < total and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            seen += 1
            headers = dict(msg.headers() or [])
            registered = (headers.get(HEADER_TYPE) or b"").decode() in REGISTRY
            if CHECK_HEADER in headers and not registered:
                out.append(msg)
        assert seen == total, f"read {seen} of {total} records of {topic}"
        return out
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def written(stack: Any) -> dict[str, list[Any]]:
    """The check records of each configured topic after a `devctl test --group kafka`."""
    report = run_devctl_test(stack, "--group", "kafka")
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["produce -> consume on every topic"] == "pass"
    return {t.name: probes(stack, t.name) for t in stack.settings.topics}


def test_round_trip_writes_check_cloudevents_into_every_topic(
    written: dict[str, list[Any]],
) -> None:
    assert any(t.endswith(".dlq") for t in written)  # dead-letter topics are probed too
    for topic, found in written.items():
        assert found, f"no check record in {topic}"
        for msg in found:
            value = msg.value()
            event = json.loads(value)  # not `devctl-test-...:<topic>` any more
            assert envelope_problem(event) is None, value
            assert event["type"] == CHECK_EVENT_TYPE
            assert event["data"]["topic"] == topic
            assert event["subject"] == event["data"]["run"] == msg.key().decode()
            headers = dict(msg.headers())
            assert headers[CHECK_HEADER] == b"1"
            assert headers["content-type"] == CONTENT_TYPE.encode()
            assert headers[HEADER_TYPE] == CHECK_EVENT_TYPE.encode()
            assert headers[HEADER_ID] == event["id"].encode()
    ids = [json.loads(m.value())["id"] for found in written.values() for m in found]
    assert len(set(ids)) == len(ids), "every check record has an id of its own"


def test_the_cloudevents_sdk_reads_check_records(written: dict[str, list[Any]]) -> None:
    kafka = pytest.importorskip("cloudevents.core.bindings.kafka")
    json_format = pytest.importorskip("cloudevents.core.formats.json")
    for found in written.values():
        for msg in found:
            message = kafka.KafkaMessage(
                headers=dict(msg.headers()), key=msg.key(), value=msg.value()
            )
            event = kafka.from_kafka(message, json_format.JSONFormat())  # auto-detects the mode
            assert event.get_type() == CHECK_EVENT_TYPE
            assert event.get_data() == json.loads(msg.value())["data"]
