"""`devctl tail` as a subprocess on a known set of events: starts, filters, outputs, exits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic

from devctl.clients.kafka_client import make_admin
from devctl.events.producer import Delivery, EventProducer
from devctl.streams.groups import GroupAdmin
from devctl.streams.offsets import end_offsets
from tests.conftest import interrupt, running

DEVCTL = [sys.executable, "-m", "devctl"]


@dataclass
class Known:
    topic: str
    deliveries: list[Delivery] = field(default_factory=list)
    garbage: Delivery | None = None

    def by_partition(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for d in [*self.deliveries, self.garbage]:
            assert d is not None
            out.setdefault(d.partition, []).append(d.offset)
        return {p: sorted(o) for p, o in out.items()}


@pytest.fixture(scope="module")
def known(stack: Any) -> Iterator[Known]:
    """16 events and one invalid value on 3 partitions, written in multi-record batches."""
    topic = f"ev-tail-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    admin = make_admin(stack.endpoints, stack.settings)
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(timeout=10)
    out = Known(topic)
    producer = EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 200})
    try:
        futures = [
            producer.publish("devconnect.user.login", {"userId": f"u{i % 4 + 1}"}, topic=topic)
            for i in range(12)
        ]
        for i, text in enumerate(["hi bob", "hi alice", "lunch?"]):
            sender, recipient = ("alice", "bob") if i % 2 == 0 else ("bob", "alice")
            message = {
                "messageId": f"m{i}",
                "fromUserId": sender,
                "toUserId": recipient,
                "text": text,
                "ts": "2026-11-25T12:00:00Z",
            }
            futures.append(producer.publish("devconnect.message.sent", message, topic=topic))
        futures.append(
            producer.publish(
                "devconnect.analytics.activity",
                {"userId": "u2", "action": "app.open"},
                topic=topic,
                headers=[("origin", b"mobile")],
            )
        )
        garbage = producer.publish_raw(topic, b"garbage {", key=b"u1")
        out.deliveries = [f.result(timeout=15) for f in futures]
        out.garbage = garbage.result(timeout=15)
        yield out
    finally:
        producer.close(5)
        for future in admin.delete_topics([topic], request_timeout=10).values():
            future.result(timeout=20)


def lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_json_from_the_beginning(stack: Any, known: Known, devctl: Any) -> None:
    result = devctl("tail", known.topic, "--from-beginning", "--no-follow", "-o", "json")
    records = lines(result)
    assert len(records) == 17
    ids = {d.event_id: d for d in known.deliveries}
    for record in records:
        assert set(record) >= {
            "topic",
            "partition",
            "offset",
            "timestamp",
            "key",
            "headers",
            "event",
        }
        assert record["topic"] == known.topic
        assert datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).tzinfo is not None
        if record["event"] is None:
            assert record["raw"] == "garbage {" and "not JSON" in record["warning"]
            assert (record["partition"], record["offset"]) == (
                known.garbage.partition,
                known.garbage.offset,
            )  # type: ignore[union-attr]
            continue
        delivery = ids.pop(record["event"]["id"])
        assert (record["partition"], record["offset"]) == (delivery.partition, delivery.offset)
        assert record["key"] == delivery.key
        assert record["headers"]["event-type"] == record["event"]["type"] == delivery.type
        assert record["event"]["specversion"] == "1.0"
    assert not ids, "every published event was shown once"
    assert f"17 events shown ({known.topic} 17); 1 not valid event\n" in result.stderr
    # Assign-only reading left no consumer group behind.
    groups = GroupAdmin(stack.endpoints, stack.settings).summaries()
    assert not [g for g in groups if g.group.startswith("devctl-tail-")]


def test_last_n_per_partition_uses_true_end_offsets(known: Known, devctl: Any) -> None:
    records = lines(devctl("tail", known.topic, "--last", "2", "--no-follow", "-o", "json"))
    got: dict[int, list[int]] = {}
    for record in records:
        got.setdefault(record["partition"], []).append(record["offset"])
    want = {p: offsets[-2:] for p, offsets in known.by_partition().items()}
    assert got == want
    # The records were written in multi-record batches: the broker's own watermark is lower.
    assert any(len(offsets) > 2 for offsets in known.by_partition().values())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--type", "devconnect.message.*"], {"devconnect.message.sent": 3}),
        (["--type", "devconnect.user.login", "--key", "u2"], {"devconnect.user.login": 3}),
        (["--key", "u1"], {"devconnect.user.login": 3, None: 1}),
        (["--header", "origin=mobile"], {"devconnect.analytics.activity": 1}),
        (["--grep", "hi (bob|alice)"], {"devconnect.message.sent": 2}),
        (["--key", "alice:bob", "--grep", "lunch"], {"devconnect.message.sent": 1}),
    ],
)
def test_filters(
    known: Known, devctl: Any, args: list[str], expected: dict[str | None, int]
) -> None:
    records = lines(
        devctl("tail", known.topic, "--from-beginning", "--no-follow", "-o", "json", *args)
    )
    counts: dict[str | None, int] = {}
    for record in records:
        kind = record["event"]["type"] if record["event"] else None
        counts[kind] = counts.get(kind, 0) + 1
    assert counts == expected


def test_count_stops_a_follow(known: Known, devctl: Any) -> None:
    result = devctl(
        "tail", known.topic, "--from-beginning", "--count", "5", "-o", "json", timeout=30
    )
    assert len(lines(result)) == 5
    assert "5 events shown" in result.stderr


def test_raw_output_and_invalid_warning(known: Known, devctl: Any) -> None:
    result = devctl(
        "tail", known.topic, "--from-beginning", "--no-follow", "-o", "raw", "--key", "u1"
    )
    assert result.returncode == 0
    values = result.stdout.splitlines()
    assert "garbage {" in values
    assert (
        sum(json.loads(v)["type"] == "devconnect.user.login" for v in values if v != "garbage {")
        == 3
    )
    assert "is not a valid event" in result.stderr


def test_pretty_and_full(known: Known, devctl: Any) -> None:
    message = next(d for d in known.deliveries if d.type == "devconnect.message.sent")
    result = devctl(
        "tail", known.topic, "--from-beginning", "--no-follow", "--type", "devconnect.message.sent"
    )
    assert result.returncode == 0, result.stderr
    shown = result.stdout.splitlines()
    assert len(shown) == 3
    first = next(line for line in shown if f" {message.partition}:{message.offset} " in line)
    stamp, topic, _position, kind, subject, data = first.split(" ", 5)
    assert stamp.endswith("Z") and topic == known.topic and kind == "devconnect.message.sent"
    assert subject == "alice" and json.loads(data)["text"] == "hi bob"
    full = devctl(
        "tail",
        known.topic,
        "--from-beginning",
        "--no-follow",
        "--key",
        "alice:bob",
        "--grep",
        "lunch",
        "--full",
    )
    assert '  "text": "lunch?",' in full.stdout.splitlines()
    invalid = devctl(
        "tail", known.topic, "--from-beginning", "--no-follow", "--key", "u1", "--grep", "garbage"
    )
    assert "not a valid event" in invalid.stdout and "b'garbage {'" in invalid.stdout


def test_offset_reads_one_partition_from_there(known: Known, devctl: Any) -> None:
    partition, offsets = max(known.by_partition().items(), key=lambda item: len(item[1]))
    start = offsets[1]
    records = lines(
        devctl("tail", known.topic, "--offset", f"{partition}:{start}", "--no-follow", "-o", "json")
    )
    assert [(r["partition"], r["offset"]) for r in records] == [(partition, o) for o in offsets[1:]]


def test_since_a_time_and_a_duration(stack: Any, make_topic: Any, devctl: Any) -> None:
    topic = make_topic("since")
    with EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 100}) as producer:
        old = [
            producer.publish("devconnect.user.online", {"userId": f"old{i}"}, topic=topic)
            for i in range(9)
        ]
        [f.result(10) for f in old]
        time.sleep(1.2)
        cut = datetime.now(UTC).isoformat()
        time.sleep(0.1)
        new = [
            producer.publish("devconnect.user.online", {"userId": f"new{i}"}, topic=topic)
            for i in range(9)
        ]
        [f.result(10) for f in new]
    recent = lines(devctl("tail", topic, "--since", cut, "--no-follow", "-o", "json"))
    assert sorted(r["event"]["data"]["userId"] for r in recent) == sorted(
        f"new{i}" for i in range(9)
    )
    everything = lines(devctl("tail", topic, "--since", "1h", "--no-follow", "-o", "json"))
    assert len(everything) == 18


def _spawn(stack: Any, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*DEVCTL, "tail", *args],
        env={**stack.env, "COLUMNS": "200", "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "tail: reading" in line, line
    return line


def test_follows_from_the_end_and_ctrl_c_prints_a_summary(stack: Any, make_topic: Any) -> None:
    topic = make_topic("follow", partitions=2)
    with EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 50}) as producer:
        [
            f.result(10)
            for f in [
                producer.publish("devconnect.user.login", {"userId": f"early{i}"}, topic=topic)
                for i in range(5)
            ]
        ]
        proc = _spawn(stack, topic, "-o", "json")
        with running(proc):
            assert "from the end" in _wait_ready(proc)
            [
                f.result(10)
                for f in [
                    producer.publish("devconnect.user.logout", {"userId": f"late{i}"}, topic=topic)
                    for i in range(3)
                ]
            ]
            assert proc.stdout is not None
            shown = [json.loads(proc.stdout.readline()) for _ in range(3)]
            out, err = interrupt(proc, timeout=15)
    assert sorted(r["event"]["data"]["userId"] for r in shown) == ["late0", "late1", "late2"]
    assert out == ""
    assert proc.returncode == 0
    assert err.strip().splitlines()[-1] == f"tail: 3 events shown ({topic} 3)"
    assert "Traceback" not in err


@pytest.mark.slow
def test_group_is_opt_in_and_commits(stack: Any, known: Known, devctl: Any, unique: str) -> None:
    group = f"tail-{unique}"
    admin = GroupAdmin(stack.endpoints, stack.settings)
    result = devctl(
        "tail",
        known.topic,
        "--group",
        group,
        "--from-beginning",
        "--count",
        "17",
        "-o",
        "json",
        timeout=60,
    )
    assert len(lines(result)) == 17
    try:
        described = admin.describe(group)
        ends = end_offsets(stack.endpoints, stack.settings, [(known.topic, p) for p in range(3)])
        for row in described.partitions:
            end = ends[(known.topic, row.partition)].high
            # A partition without records has nothing to commit.
            assert row.committed == (end if end else None)
        assert described.lag == 0
    finally:
        admin.delete(group)


def test_bad_usage_and_unknown_topic(devctl: Any, known: Known) -> None:
    both = devctl("tail", known.topic, "--last", "3", "--from-beginning")
    assert both.returncode == 2 and "choose one start position" in both.stderr
    missing = devctl("tail", f"{known.topic}-missing", "--no-follow")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    offset = devctl("tail", known.topic, "--offset", "zero")
    assert offset.returncode == 2 and "PARTITION:OFFSET" in offset.stderr


def test_enrich_adds_live_state_from_redis(
    stack: Any, make_topic: Any, devctl: Any, unique: str
) -> None:
    from devctl.state import from_settings

    topic = make_topic("enrich", partitions=1)
    online, offline, instance = f"on{unique}", f"off{unique}", f"inst-{unique}"
    state = from_settings(stack.settings, stack.endpoints)
    try:
        state.presence.heartbeat(instance, ttl=60)
        state.presence.connect(online, "c1", instance)
        state.presence.connect(online, "c2", instance)
        state.sessions.create(online)
        state.sessions.create(offline)
        state.sessions.create(offline)
        with EventProducer(stack.endpoints, stack.settings) as producer:
            for user in (online, offline):
                producer.publish("devconnect.user.login", {"userId": user}, topic=topic).result(10)
        records = lines(
            devctl("tail", topic, "--from-beginning", "--no-follow", "--enrich", "-o", "json")
        )
        enrich = {r["event"]["subject"]: r["enrich"] for r in records}
        assert enrich[online]["online"] is True and enrich[online]["connections"] == 2
        assert enrich[online]["sessions"] == 1
        assert enrich[offline] == {
            "online": False,
            "connections": 0,
            "last_seen": None,
            "sessions": 2,
        }
        pretty = devctl("tail", topic, "--from-beginning", "--no-follow", "--enrich")
        assert "[online, 2 conn, 1 session]" in pretty.stdout
        assert "[offline, 2 sessions]" in pretty.stdout
    finally:
        state.presence.disconnect(online, "c1", instance)
        state.presence.disconnect(online, "c2", instance)
        state.presence.retire(instance)
        state.sessions.revoke_all(online)
        state.sessions.revoke_all(offline)
        for key in state.client.scan_iter(match=f"*{unique}*"):
            state.client.delete(key)
        state.close()


def test_a_closed_pipe_ends_tail_quietly(stack: Any, known: Known) -> None:
    command = f"{sys.executable} -m devctl tail {known.topic} --from-beginning -o json | head -n 2"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        env={**stack.env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


@pytest.mark.slow
def test_ctrl_c_during_the_first_group_join_leaves_the_group_usable(
    stack: Any, known: Known, devctl: Any, unique: str
) -> None:
    """Tansu breaks a group whose member leaves mid-join: tail finishes the join first."""
    group = f"tail-join-{unique}"
    proc = _spawn(stack, known.topic, "--group", group, "--from-beginning", "-o", "json")
    with running(proc):
        _wait_ready(proc)
        time.sleep(0.7)  # the first join takes about 3 s on Tansu
        _out, err = interrupt(proc, timeout=30)
    assert proc.returncode == 0, err
    try:
        again = devctl(
            "tail", known.topic, "--group", group, "--from-beginning", "--count", "3", "-o",
            "json", timeout=40,
        )  # fmt: skip
        assert len(lines(again)) == 3
    finally:
        GroupAdmin(stack.endpoints, stack.settings).delete(group)


def test_offsets_must_be_real_positions(devctl: Any, known: Known) -> None:
    for bad in ("0:-1", "0:-5", "-1:0", f"{known.topic}:0:-2"):
        result = devctl("tail", known.topic, "--offset", bad, "--no-follow", "-o", "json")
        assert result.returncode == 2, (bad, result.stdout, result.stderr)
        assert "both 0 or more" in result.stderr and result.stdout == ""
    missing = devctl("tail", known.topic, "--offset", "7:0", "--no-follow")
    assert missing.returncode == 2 and "has no partition 7" in missing.stderr


@pytest.mark.slow
def test_group_commits_only_what_was_written(
    stack: Any, make_topic: Any, producer: EventProducer, unique: str
) -> None:
    """`| head -1` with lines larger than a pipe buffer: what was not written is not consumed."""
    topic = make_topic("pipe", partitions=1)
    futures = [producer.publish_raw(topic, b"x" * 100_000) for _ in range(10)]
    for future in futures:
        future.result(timeout=10)
    group = f"tail-pipe-{unique}"
    command = (
        f"{sys.executable} -m devctl tail {topic} --group {group} --from-beginning "
        "-o raw | head -n 1 | wc -c"
    )
    result = subprocess.run(
        ["bash", "-c", command],
        env={**stack.env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == "100001", result.stderr
    assert "Traceback" not in result.stderr
    admin = GroupAdmin(stack.endpoints, stack.settings)
    try:
        assert admin.committed(group).get((topic, 0), 0) <= 1
    finally:
        with contextlib.suppress(Exception):
            admin.delete(group)


def test_events_the_registry_rejects_are_shown_with_a_warning(
    stack: Any, make_topic: Any, producer: EventProducer, devctl: Any
) -> None:
    topic = make_topic("rejected", partitions=1)
    good = producer.encode("devconnect.user.login", {"userId": "u1"})
    envelope = json.loads(good.value)
    bad_data = {**envelope, "data": {"userId": 5}}
    unknown = {**envelope, "type": "devconnect.nope.unknown"}
    for value in (good.value, json.dumps(bad_data).encode(), json.dumps(unknown).encode()):
        producer.publish_raw(topic, value).result(timeout=10)
    shown = lines(devctl("tail", topic, "--from-beginning", "--no-follow", "-o", "json"))
    assert [("warning" in r, r["event"]["type"]) for r in shown] == [
        (False, "devconnect.user.login"),
        (True, "devconnect.user.login"),
        (True, "devconnect.nope.unknown"),
    ]
    assert "userId" in shown[1]["warning"] and "devconnect.nope.unknown" in shown[2]["warning"]
    pretty = devctl("tail", topic, "--from-beginning", "--no-follow")
    assert pretty.stdout.count("⚠") == 2, pretty.stdout
    assert "2 not valid events" in pretty.stderr


def _follow_in_thread(
    reader: Any, shown: list[Any] | None = None
) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()

    def follow() -> None:
        for item in reader.records():
            if item is not None and shown is not None:
                shown.append(item)
            if stop.is_set():
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread, stop


def _wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_tail_says_when_the_broker_stops_answering_and_when_it_is_back(own_stack: Any) -> None:
    from devctl.events.tail import Tail

    stack = own_stack("silent", delivery_timeout_ms=5000)
    notices: list[str] = []
    reader = Tail(
        stack.endpoints,
        stack.settings,
        [stack.topic],
        poll_timeout=0.1,
        on_notice=notices.append,
    )
    thread, stop = _follow_in_thread(reader)
    try:
        time.sleep(0.5)
        stack.kill_broker()
        timeout = stack.settings.kafka.request_timeout_ms / 1000
        assert _wait_for(lambda: any("does not answer" in n for n in notices), timeout + 15), (
            notices
        )
        stack.start_again()
        assert _wait_for(lambda: any("answers again" in n for n in notices), 20), notices
        assert notices[0].startswith(f"the broker at {stack.endpoints.kafka_brokers}")
    finally:
        stop.set()
        thread.join(timeout=20)


@pytest.fixture
def tail_group(stack: Any, unique: str) -> Iterator[str]:
    """A consumer group name of this test; the group is deleted afterwards."""
    group = f"tail-g-{unique}"
    yield group
    with contextlib.suppress(Exception):
        GroupAdmin(stack.endpoints, stack.settings).delete(group)


def _tail_as_group(devctl: Any, topic: str, group: str, *extra: str) -> Any:
    """`tail --group G --no-follow -o json` to the end, as one run."""
    return devctl("tail", topic, "--group", group, *extra, "--no-follow", "-o", "json", timeout=60)


@pytest.mark.slow
def test_group_banner_says_where_each_partition_starts_and_no_follow_ends(
    stack: Any, make_topic: Any, producer: EventProducer, devctl: Any, tail_group: str
) -> None:
    topic = make_topic("banner", partitions=2)
    for index in range(4):
        producer.publish(
            "devconnect.user.login", {"userId": f"u{index}"}, topic=topic, key=f"k{index}"
        ).result(10)
    first = _tail_as_group(devctl, topic, tail_group, "--from-beginning")
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.splitlines()) == 4
    assert f"{topic}[0] from the beginning (0)" in first.stderr, first.stderr
    again = _tail_as_group(devctl, topic, tail_group)
    assert again.returncode == 0 and again.stdout == ""
    ends = end_offsets(stack.endpoints, stack.settings, [(topic, 0), (topic, 1)])
    for partition in (0, 1):
        end = ends[(topic, partition)].high
        assert f"{topic}[{partition}] at its committed offset {end}" in again.stderr or (
            end == 0 and f"{topic}[{partition}] from the end (0)" in again.stderr
        ), again.stderr


def test_an_offset_past_the_end_is_warned_about(devctl: Any, known: Known) -> None:
    result = devctl("tail", known.topic, "--offset", "0:999", "--no-follow", "-o", "json")
    assert result.returncode == 0 and result.stdout == ""
    assert "offset 999 of" in result.stderr and "lies past its end" in result.stderr
    legacy = devctl("tail", known.topic, "--from-beginning", "--no-follow", "--type", "USER_LOGIN")
    assert "--type USER_LOGIN is today's name of devconnect.user.login" in legacy.stderr
    typo = devctl("tail", known.topic, "--no-follow", "--type", "devconnect.user.lgoin")
    assert "did you mean devconnect.user.login?" in typo.stderr


@pytest.mark.slow
def test_tail_notices_a_hung_broker(own_stack: Any) -> None:
    """kill -STOP: connections stay open and nothing answers; tail probes and says so."""
    from devctl.engines.processes import read_pidfile
    from devctl.events.tail import Tail

    stack = own_stack("hung", delivery_timeout_ms=5000)
    notices: list[str] = []
    reader = Tail(
        stack.endpoints, stack.settings, [stack.topic], poll_timeout=0.1, on_notice=notices.append
    )
    thread, stop = _follow_in_thread(reader)
    record = read_pidfile(stack.engine.pidfile("kafka"))
    assert record is not None
    try:
        time.sleep(1.0)
        os.kill(record.pid, signal.SIGSTOP)
        timeout = stack.settings.kafka.request_timeout_ms / 1000
        assert _wait_for(lambda: any("does not answer" in n for n in notices), timeout + 10), (
            notices
        )
        os.kill(record.pid, signal.SIGCONT)
        assert _wait_for(lambda: any("answers again" in n for n in notices), 20), notices
    finally:
        os.kill(record.pid, signal.SIGCONT)
        stop.set()
        thread.join(timeout=20)


@pytest.mark.slow
def test_tail_reads_a_partition_the_restarted_broker_reset(own_stack: Any) -> None:
    """The embedded broker forgets its log on restart: tail, far past the new end, starts over."""
    from devctl.events.tail import Tail

    stack = own_stack("reset", delivery_timeout_ms=5000)
    with EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 0}) as before:
        for index in range(6):
            before.publish(
                "devconnect.user.login", {"userId": f"old{index}"}, topic=stack.topic
            ).result(10)
    notices: list[str] = []
    shown: list[Any] = []
    reader = Tail(
        stack.endpoints, stack.settings, [stack.topic], poll_timeout=0.1, on_notice=notices.append
    )
    thread, stop = _follow_in_thread(reader, shown)
    try:
        time.sleep(1.0)
        stack.kill_broker()
        stack.start_again()
        stack.create_topic()
        with EventProducer(stack.endpoints, stack.settings, **{"linger.ms": 0}) as after:
            for index in range(2):
                after.publish(
                    "devconnect.user.login", {"userId": f"new{index}"}, topic=stack.topic
                ).result(15)
        assert _wait_for(lambda: len(shown) == 2, 20), (notices, shown)
        assert [r.event["data"]["userId"] for r in shown] == ["new0", "new1"]
        assert any("was reset while the broker was away" in n for n in notices), notices
    finally:
        stop.set()
        thread.join(timeout=20)


def test_pretty_tail_into_a_closed_pipe_exits_0(stack: Any, known: Known) -> None:
    command = (
        f"{' '.join(DEVCTL)} tail {known.topic} --from-beginning | head -1; exit ${{PIPESTATUS[0]}}"
    )
    result = subprocess.run(
        ["bash", "-c", command],
        env={**stack.env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.slow
def test_group_commits_past_skipped_probes_and_shows_other_check_values(
    stack: Any, make_topic: Any, producer: EventProducer, devctl: Any, tail_group: str
) -> None:
    topic = make_topic("probes", partitions=1)
    login = "devconnect.user.login"
    producer.publish(login, {"userId": "real"}, topic=topic).result(10)
    producer.publish(
        login, {"userId": "probe"}, topic=topic, headers=[("devctl-check", b"1")]
    ).result(10)
    producer.publish(
        login, {"userId": "zero"}, topic=topic, headers=[("devctl-check", b"0")]
    ).result(10)
    shown = _tail_as_group(devctl, topic, tail_group, "--from-beginning")
    users = [json.loads(line)["event"]["data"]["userId"] for line in shown.stdout.splitlines()]
    assert users == ["real", "zero"], shown.stderr
    assert "1 `devctl test` record skipped" in shown.stderr
    assert GroupAdmin(stack.endpoints, stack.settings).describe(group=tail_group).lag == 0
