"""UUIDv7 event ids (RFC 9562): unique, and ordered by creation time.

Layout: 48-bit Unix time in ms, version 7, a 12-bit counter (RFC 9562 method 1,
seeded randomly each millisecond so ids stay unguessable), variant 10, 62
random bits. The counter keeps ids from one process strictly increasing even
within a millisecond; when it overflows, the timestamp is advanced by one.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_COUNTER_MAX = 0xFFF


def uuid7_parts() -> tuple[str, int]:
    """A new UUIDv7 as (canonical text, its millisecond timestamp)."""
    global _last_ms, _counter
    with _lock:
        now = time.time_ns() // 1_000_000
        if now > _last_ms:
            _last_ms = now
            # Leave the top bit clear so the counter has room to grow.
            _counter = random.getrandbits(11)
        else:
            _counter += 1
            if _counter > _COUNTER_MAX:
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | random.getrandbits(62)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}", ms


def uuid7() -> str:
    return uuid7_parts()[0]


def uuid7_time_ms(value: str) -> int:
    """The millisecond timestamp inside a UUIDv7."""
    parsed = uuid.UUID(value)
    if parsed.version != 7:
        raise ValueError(f"{value} is not a UUIDv7")
    return parsed.int >> 80
