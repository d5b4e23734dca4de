"""Reading the log files that detached processes write."""

from __future__ import annotations

import os
from pathlib import Path


def tail_file(path: Path, lines: int, *, start: int = 0, end: int | None = None) -> list[str]:
    """The last ``lines`` lines of a text file between byte offsets start and end.

    Reads backwards from the end in blocks, so a large log is not read whole.
    """
    if lines <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell() if end is None else min(end, handle.tell())
            block = 8192
            data = b""
            position = size
            while position > start and data.count(b"\n") <= lines:
                step = min(block, position - start)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace").splitlines()
    return text[-lines:]
