"""Row ids shaped like MongoDB ObjectIds: the ids DevConnect's web client already handles.

24 lowercase hex characters: 4 bytes of Unix seconds (big-endian, so ids sort
roughly by creation time) and 8 random bytes (no machine id or counter to
coordinate between API instances; 64 random bits make a collision within one
second negligible).
"""

from __future__ import annotations

import os
import re
import time

ID_LENGTH = 24
_ID = re.compile(r"^[0-9a-f]{24}$")


def new_id() -> str:
    """A fresh id: 8 hex digits of seconds, then 16 random hex digits."""
    seconds = int(time.time()) & 0xFFFFFFFF  # wraps in 2106, as ObjectIds do
    return seconds.to_bytes(4, "big").hex() + os.urandom(8).hex()


def is_id(text: str) -> bool:
    """True when ``text`` has the shape of an id (any 24 lowercase hex characters)."""
    return bool(_ID.match(text))
