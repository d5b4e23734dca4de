"""The batch encoder's hot loop builds exactly the records of the envelope code's one-event path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devctl.events._batch_encode import ANY_PARTITION, STAMP_ON_SEND, BatchRecords
from devctl.events.envelope import HEADER_ID, decode_event
from devctl.events.ids import block_ids, uuid7_block
from devctl.events.registry import REGISTRY


def _rows(count: int) -> list[dict[str, Any]]:
    spec = REGISTRY["devconnect.message.sent"]
    items = [
        {"fromUserId": f"u{i}", "toUserId": "bob", "messageId": f"m{i}", "text": 'say "hi"\n',
         "ts": "2026-11-25T18:00:00+02:00"}
        for i in range(count)
    ]  # fmt: skip
    return spec.validate_many(items)


def test_the_hot_loop_and_the_one_record_path_agree_byte_for_byte() -> None:
    spec = REGISTRY["devconnect.message.sent"]
    rows = _rows(5)
    prefix, first, ms = uuid7_block(len(rows))
    extra = [("trace", b"t1")]
    records = BatchRecords(spec, '/src "quoted"', ms, (prefix, first), rows, extra)
    produced: list[tuple[Any, ...]] = []
    records.produce(lambda *args: produced.append(args), "topic-a", print, 0, len(rows))
    assert [args[1:4] for args in produced] == [
        (records.record(i)[0], records.key(i), ANY_PARTITION) for i in range(len(rows))
    ]
    ids = block_ids(prefix, first, len(rows))
    for index, (topic, value, key, _partition, report, cb, stamp, headers) in enumerate(produced):
        assert (topic, report, cb, stamp) == ("topic-a", print, None, STAMP_ON_SEND)
        assert headers == records.record(index)[2] and headers[-1] == ("trace", b"t1")
        assert dict(headers)[HEADER_ID] == ids[index] == records.event_id(index)
        event = decode_event(value)
        assert event.id == ids[index] and event.partitionkey == key == f"bob:u{index}"
        assert json.loads(value)["source"] == '/src "quoted"'


def test_position_names_the_record_that_raised() -> None:
    spec = REGISTRY["devconnect.message.sent"]
    rows = _rows(10)
    prefix, first, ms = uuid7_block(len(rows))
    records = BatchRecords(spec, "/x", ms, (prefix, first), rows, [])
    calls = 0

    def produce(*_args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            raise BufferError("full")

    with pytest.raises(BufferError):
        records.produce(produce, "t", print, 2, 10)
    assert records.position == 5
