"""Where tail starts reading: partition:offset specs; times and offsets by time are in streams.

``parse_time`` and ``offsets_for_time`` live in ``devctl.streams.positions`` (consumer
group resets need them too, and streams must not import events); they are
re-exported here for the callers that still import them from this module.
"""

from __future__ import annotations

from devctl.errors import UsageError
from devctl.streams.positions import offsets_for_time, parse_time

__all__ = ["offsets_for_time", "parse_partition_offset", "parse_time"]


def parse_partition_offset(text: str) -> tuple[str | None, int, int]:
    """'P:O' or 'TOPIC:P:O' -> (topic or None, partition, offset)."""
    parts = text.rsplit(":", 2)
    try:
        if len(parts) == 3:
            topic, partition, offset = parts[0], int(parts[1]), int(parts[2])
        elif len(parts) == 2:
            topic, partition, offset = None, int(parts[0]), int(parts[1])
        else:
            raise ValueError(text)
    except ValueError:
        pass
    else:
        # Negative numbers are librdkafka's special offsets (-1 end, -2 beginning, ...),
        # which would bypass the true end offsets: not accepted here.
        if partition >= 0 and offset >= 0:
            return topic, partition, offset
    raise UsageError(
        "a start offset is PARTITION:OFFSET (or TOPIC:PARTITION:OFFSET), "
        f"both 0 or more, got '{text}'",
        hint="e.g. 0:42",
        field="start_offset",
        data={"value": text, "examples": ("0:42", "user-events:0:42")},
    )
