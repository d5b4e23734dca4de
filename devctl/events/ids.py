"""UUIDv7 event ids (RFC 9562): unique, and ordered by creation time.

Layout: 48-bit Unix time in ms, version 7, a 12-bit counter (RFC 9562 method 1,
seeded randomly each millisecond), variant 10, 62 random bits. Event ids are not
secrets: nothing relies on them being unguessable, only unique and ordered. The counter keeps ids from one process strictly increasing even
within a millisecond; when it overflows, the timestamp is advanced by one.

A block of ids for a batch (``uuid7_block``) takes one timestamp and one counter
value, and fills rand_b as RFC 9562's "monotonic random" method does: 14 random
bits, then a 48-bit random start incremented by one per id (so one id of a block
gives away its neighbours). Ids stay unique, time-ordered and increasing (within
the block, and against every id before and after it), and cost one integer format
each instead of a lock and two random draws.
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


def _reserve() -> tuple[int, int]:
    """(millisecond timestamp, counter) unused by any id of this process so far."""
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
        return _last_ms, _counter


def uuid7_parts() -> tuple[str, int]:
    """A new UUIDv7 as (canonical text, its millisecond timestamp)."""
    ms, counter = _reserve()
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | random.getrandbits(62)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}", ms


# The block's start leaves this much room below 2**48 for the increments.
MAX_BLOCK = 1 << 47


def uuid7_block(count: int) -> tuple[str, int, int]:
    """Reserve ``count`` ids: (prefix, first, ms); id i is ``f"{prefix}{first + i:012x}"``."""
    if not 0 <= count <= MAX_BLOCK:
        raise ValueError(f"a block holds 0 to {MAX_BLOCK} ids, not {count}")
    ms, counter = _reserve()
    stamp = f"{ms:012x}"
    prefix = f"{stamp[:8]}-{stamp[8:]}-7{counter:03x}-{0x8000 | random.getrandbits(14):04x}-"
    return prefix, random.getrandbits(47), ms


def block_ids(prefix: str, first: int, count: int) -> list[str]:
    return [f"{prefix}{first + i:012x}" for i in range(count)]


def uuid7() -> str:
    return uuid7_parts()[0]


def uuid7_time_ms(value: str) -> int:
    """The millisecond timestamp inside a UUIDv7."""
    parsed = uuid.UUID(value)
    if parsed.version != 7:
        raise ValueError(f"{value} is not a UUIDv7")
    return parsed.int >> 80
