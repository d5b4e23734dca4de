"""The one reading path of tail and the consumer runtime, fed anything (no broker needed).

Property-based: arbitrary bytes, headers, keys and nesting must come out as a
``Reading`` (an event, or a problem with a dead-letter reason), and tail's renderers
and the consumer's classification must take every such record without raising.
"""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from devctl.cli import app as _app  # noqa: F401  (first: the app imports its commands)
from devctl.cli.commands.tail import _pretty, _render_safely, _renderer
from devctl.events.envelope import CONTENT_TYPE, HEADER_ID, HEADER_TYPE, encode_event
from devctl.events.legacy import legacy_event_id
from devctl.events.reading import (
    BINARY,
    INVALID_DATA,
    INVALID_ENVELOPE,
    LEGACY,
    STRUCTURED,
    UNKNOWN_TYPE,
    WRONG_TOPIC,
    read_record,
)
from devctl.events.tail import Filters, TailRecord, decode, resolve_types, to_ndjson

REASONS = {INVALID_ENVELOPE, UNKNOWN_TYPE, INVALID_DATA, WRONG_TOPIC}
TOPICS = ["user-events", "message-events", "analytics-events", "user-events.dlq", "scratch"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Values shaped like events (so the deeper branches run), and plain garbage.
envelopes = st.fixed_dictionaries(
    {"specversion": st.sampled_from(["1.0", "0.3", 1])},
    optional={
        "id": st.text(max_size=8) | st.integers(),
        "source": st.text(max_size=8),
        "type": st.sampled_from(
            ["devconnect.user.login", "devconnect.message.sent", "x.y", "devctl.check.probe"]
        )
        | st.text(max_size=10),
        "time": st.text(max_size=8),
        "dataschema": st.text(max_size=8),
        "data": json_values,
        "subject": st.text(max_size=8) | st.integers(),
    },
)
legacy_records = st.fixed_dictionaries(
    {"eventType": st.sampled_from(["USER_LOGIN", "MESSAGE_SENT", "CONNECTION_REVIEW", "X"])},
    optional={
        "userId": json_values,
        "timestamp": st.text(max_size=8) | st.integers(),
        "data": json_values | st.dictionaries(st.text(max_size=10), json_values),
    },
)
nested = st.integers(min_value=1, max_value=300_000).map(
    lambda depth: b"[" * depth + b"]" * depth
) | st.integers(min_value=1, max_value=100_000).map(lambda depth: b'{"a":' * depth + b"1")
values = (
    st.none()
    | st.binary(max_size=300)
    | nested
    | envelopes.map(lambda e: json.dumps(e).encode())
    | legacy_records.map(lambda e: json.dumps(e).encode())
)
header_names = st.sampled_from(
    ["ce_specversion", "ce_id", "ce_type", "ce_source", "content-type", "devctl-check", "x"]
) | st.text(max_size=12)
header_values = (
    st.none()
    | st.binary(max_size=20)
    | st.sampled_from([b"1.0", CONTENT_TYPE.encode(), b"application/json", b"text/plain"])
)
headers = st.lists(st.tuples(header_names, header_values), max_size=6)
keys = st.none() | st.binary(max_size=20)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(TOPICS), key=keys, value=values, hdrs=headers)
def test_any_record_reads_as_an_event_or_a_problem(
    topic: str, key: bytes | None, value: bytes | None, hdrs: list[Any]
) -> None:
    reading = read_record(topic, key, value, hdrs, partition=1, offset=5)
    if reading.problem is None:
        assert reading.event is not None and reading.mode in (STRUCTURED, BINARY, LEGACY)
        assert isinstance(reading.event["type"], str) and reading.event["type"]
    else:
        assert reading.reason in REASONS
    # Tail renders it, in every output mode, without raising.
    record = TailRecord(topic, 1, 5, 1_764_000_000_000, key, hdrs, value)
    decode(record)
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None)
    for mode in ("json", "pretty"):
        _render_safely(_renderer(_Output(mode), console, full=False), record, None, out)
    line = out.getvalue().split("\n")[0]  # not splitlines(): a header may hold U+0085
    assert json.loads(line)["offset"] == 5  # the NDJSON line is always one valid JSON line


class _Output(str):
    """Stands in for the CLI's Output enum (compared by identity there)."""

    def __new__(cls, value: str) -> _Output:
        from devctl.cli.commands.tail import Output

        return Output(value)  # type: ignore[return-value]


def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    deep = b"[" * 200_000 + b"]" * 200_000
    reading = read_record("user-events", b"k", deep, [])
    assert reading.reason == INVALID_ENVELOPE and "nested too deeply" in (reading.problem or "")
    # Nesting that decodes but is too deep to render again: shown raw with a warning.
    record = TailRecord("scratch", 0, 1, 0, None, [], b'{"specversion":"1.0"}')
    decode(record)
    record.event = {"type": "x", "data": _nest(5000)}
    record.problem = None
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None)
    _render_safely(lambda r, e, o: _pretty(console, r, e, False), record, None, out)
    assert "cannot be shown as an event" in out.getvalue()


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_structured_binary_and_wrong_topic() -> None:
    encoded = encode_event("devconnect.user.login", {"userId": "u1"}, source="/devconnect/test")
    ok = read_record("user-events", encoded.key, encoded.value, encoded.headers)
    assert (ok.mode, ok.problem, ok.payload.userId) == (STRUCTURED, None, "u1")
    wrong = read_record("message-events", encoded.key, encoded.value, encoded.headers)
    assert wrong.reason == WRONG_TOPIC
    assert wrong.problem == "devconnect.user.login belongs on user-events, not message-events"
    # Topics the registry does not name take any type (dead-letter copies, test topics).
    assert read_record("user-events.dlq", None, encoded.value, []).problem is None
    binary = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"e-1"),
        ("ce_source", b"/node"),
        ("ce_type", b"devconnect.user.login"),
        ("content-type", b"application/json"),
    ]
    read = read_record("user-events", b"u7", b'{"userId": "u7"}', binary)
    assert (read.mode, read.problem, read.event["id"], read.event["partitionkey"]) == (
        BINARY,
        None,
        "e-1",
        "u7",
    )
    bad = read_record("user-events", b"u7", b'{"userId": 5}', binary)
    assert bad.reason == INVALID_DATA
    # Our own headers are not ce_ headers: SDKs must not take our records for binary mode.
    assert not any(name.startswith("ce_") for name, _ in encoded.headers)
    assert {HEADER_TYPE, HEADER_ID} <= {name for name, _ in encoded.headers}


def test_legacy_records_are_upcast_with_stable_ids() -> None:
    login = {
        "eventType": "USER_LOGIN",
        "userId": "65a1b2c3d4e5f60718293a4b",
        "timestamp": "2026-11-25T18:00:00.000Z",
        "data": {"emailId": "a@b.co", "loginTime": "2026-11-25T18:00:00.000Z", "ipAddress": "::1"},
    }
    value = json.dumps(login).encode()
    first = read_record("user-events", login["userId"].encode(), value, [], partition=2, offset=9)
    again = read_record("user-events", login["userId"].encode(), value, [], partition=2, offset=9)
    assert first.mode == LEGACY and first.legacy == "USER_LOGIN" and first.problem is None
    assert first.event["type"] == "devconnect.user.login"
    assert first.event["id"] == again.event["id"] == legacy_event_id("user-events", 2, 9, value)
    assert first.event["subject"] == login["userId"]
    assert first.event["time"] == login["timestamp"]
    assert (
        read_record("user-events", None, value, [], partition=2, offset=10).event["id"]
        != (first.event["id"])
    )
    review = {
        "eventType": "CONNECTION_REVIEW",
        "timestamp": "2026-11-25T18:00:00.000Z",
        "data": {
            "requestId": "65a1b2c3d4e5f60718293a40",
            "fromUserId": "65a1b2c3d4e5f60718293a41",
            "toUserId": "65a1b2c3d4e5f60718293a42",
            "status": "rejected",
            "timestamp": "2026-11-25T18:00:00.000Z",
        },
    }
    rejected = read_record("connection-events", None, json.dumps(review).encode(), [])
    assert rejected.problem is None and rejected.event["type"] == "devconnect.connection.rejected"
    unknown = read_record(
        "user-events",
        b"test-user",
        b'{"eventType":"TEST_EVENT","userId":"test-user","timestamp":"t","data":{"a":1}}',
        [],
    )
    assert (unknown.reason, unknown.event["type"], unknown.legacy) == (
        UNKNOWN_TYPE,
        "TEST_EVENT",
        "TEST_EVENT",
    )


def test_type_filters_take_todays_names() -> None:
    types, notes = resolve_types(["USER_LOGIN"])
    assert types == ("USER_LOGIN", "devconnect.user.login")
    assert "today's name of devconnect.user.login" in notes[0]
    filters = Filters(types=types)
    assert filters.type_matches("devconnect.user.login")
    assert filters.type_matches("devconnect.user.login", "USER_LOGIN")
    assert not filters.type_matches("devconnect.user.logout", "USER_LOGOUT")
    typo, notes = resolve_types(["devconnect.user.lgin"])
    assert typo == ("devconnect.user.lgin",) and "did you mean devconnect.user.login" in notes[0]
    assert resolve_types(["devconnect.user.*"]) == (("devconnect.user.*",), [])


def test_json_line_of_a_legacy_record_carries_the_upcast_event() -> None:
    value = json.dumps(
        {"eventType": "USER_LOGOUT", "userId": "u1", "timestamp": "2026-11-25T18:00:00Z"}
    ).encode()
    record = TailRecord("user-events", 0, 3, 0, b"u1", [], value)
    decode(record)
    line = json.loads(to_ndjson(record))
    assert line["legacy"] == "USER_LOGOUT"
    assert line["event"]["type"] == "devconnect.user.logout"
    assert line["event"]["legacytype"] == "USER_LOGOUT"
    assert "warning" not in line


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(TOPICS), key=keys, value=values, hdrs=headers)
def test_the_consumer_classifies_any_record(
    stack: Any, topic: str, key: bytes | None, value: bytes | None, hdrs: list[Any]
) -> None:
    """Every record is handled, ignored, skipped (a probe) or dead-lettered with a reason."""
    from confluent_kafka import Message

    from devctl.events.consumer import DLQ_REASONS, ConsumerRuntime

    runtime = ConsumerRuntime(
        stack.endpoints, stack.settings, group="g", topics=[topic], idempotency=False
    )
    runtime.on("devconnect.user.login", lambda event: None)
    msg = Message(topic=topic, partition=0, offset=7, key=key, value=value, headers=hdrs or None)
    record = runtime._classify(msg)
    assert record.action in ("handle", "ignore", "skip", "dead")
    if record.action == "dead":
        assert record.reason in DLQ_REASONS and record.error
    elif record.action in ("handle", "ignore"):
        assert record.event is not None and record.event.id


def test_a_legacy_id_names_the_record_not_only_its_offset() -> None:
    """The embedded broker reuses offsets after a restart: another record there is another id."""
    one = b'{"eventType":"USER_LOGIN","userId":"u1","timestamp":"2026-11-25T18:00:00Z"}'
    two = b'{"eventType":"USER_LOGIN","userId":"u2","timestamp":"2026-11-25T18:00:00Z"}'
    first = read_record("user-events", None, one, [], partition=0, offset=50)
    other = read_record("user-events", None, two, [], partition=0, offset=50)
    assert first.event["id"] != other.event["id"]


def test_what_other_clients_get_wrong_is_a_problem() -> None:
    login = {"specversion": "1.0", "id": "e1", "source": "/s", "type": "devconnect.user.login"}
    data = {"userId": "u1"}
    for bad, why in (
        ({**login, "time": "yesterday", "data": data}, "RFC 3339"),
        ({**login, "time": "2026-13-01T00:00:00Z", "data": data}, "RFC 3339"),
    ):
        reading = read_record("user-events", None, json.dumps(bad).encode(), [])
        assert reading.reason == INVALID_ENVELOPE and why in (reading.problem or ""), reading
    nan = b'{"specversion":"1.0","id":"e","source":"/s","type":"devconnect.analytics.activity",'
    nan += b'"data":{"userId":"u1","action":"x","properties":{"n":NaN}}}'
    assert "NaN is not JSON" in (read_record("analytics-events", None, nan, []).problem or "")
    twice = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"1"),
        ("ce_source", b"/s"),
        ("ce_type", b"devconnect.user.login"),
        ("ce_type", b"devconnect.message.sent"),
    ]
    assert "appears more than once" in (
        read_record("user-events", None, b"{}", twice).problem or ""
    )
    for legacy, why in (
        (b'{"eventType":"USER_LOGIN","userId":"u1","timestamp":"not a time"}', "not a time"),
        (b'{"eventType":"USER_LOGIN","userId":"u1","timestamp":1e30}', "not a time"),
        (b'{"eventType":42,"userId":"u1"}', "'eventType' is not a non-empty string"),
    ):
        reading = read_record("user-events", None, legacy, [])
        assert reading.reason == INVALID_ENVELOPE and why in (reading.problem or ""), reading
    # Only the value checks write marks a probe; another value is a record like any other.
    probe = encode_event("devconnect.user.login", data, source="/s")
    assert read_record("user-events", None, probe.value, [("devctl-check", b"1")]).check
    assert not read_record("user-events", None, probe.value, [("devctl-check", b"0")]).check


def test_pretty_output_escapes_what_a_terminal_would_act_on() -> None:
    value = json.dumps(
        {
            "specversion": "1.0",
            "id": "e1",
            "source": "/s",
            "type": "devconnect.user.x\x1b]0;PWNED\x07\x1b[2J",
            "subject": "\x1b[31mRED\x1b[0m",
            "data": {"userId": "u1", "userAgent": "\ud800"},
        }
    ).encode()
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    record = TailRecord("user-events", 0, 1, 0, None, [], value)
    decode(record)
    _render_safely(_renderer(_Output("pretty"), console, full=False), record, None, out)
    shown = out.getvalue()
    assert "\x1b" not in shown and "\\x1b[31mRED" in shown and "\\x1b]0;PWNED\\x07" in shown
    shown.encode("utf-8")  # no lone surrogate reached the output
    line = to_ndjson(record)
    line.encode("utf-8")
    assert json.loads(line)["event"]["data"]["userAgent"] == "\ud800"
