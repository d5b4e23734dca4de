"""The record of one process devctl started, and its pidfile.

A record names the pid *and* the process's start time and executable, so a pid
reused by another program after a crash or reboot is recognised as stale and
never signalled. It is not tied to servers: ``port`` and ``version`` are set for
a server (Valkey, Tansu, an API), left out for a worker (a consumer), and
``extra`` holds whatever else a supervisor wants to find again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

# Written into every pidfile, so a later devctl can tell the layouts apart. Version 1
# had no such field: pid, create_time, executable, port, version, argv, process_name,
# pgid, and no name (the file's stem was the service).
FORMAT = 2


@dataclass(frozen=True)
class ProcessRecord:
    name: str  # what devctl calls it: "redis", "kafka", later "api", "consumer-analytics"
    pid: int
    create_time: float  # seconds since the epoch, as psutil reports it
    executable: str
    argv: list[str] = field(default_factory=list)
    # The name the OS gives the recorded process: a wrapper script that execs the
    # program runs under the program's name, not the configured executable's.
    process_name: str = ""
    # The process group devctl started (the session of the spawned child); the
    # recorded process may be a member rather than its leader (a wrapper that forks).
    pgid: int = 0
    port: int | None = None
    version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, name: str = "") -> ProcessRecord | None:
        """The record in ``data`` (either pidfile layout), or None if it is not one.

        ``name`` stands in for the missing one of a version 1 pidfile. Keys this
        version does not know are ignored, so that a newer devctl's pidfile still
        identifies its process.
        """
        pid = data.get("pid")
        create_time = data.get("create_time")
        executable = data.get("executable")
        argv = data.get("argv", [])
        port = data.get("port")
        extra = data.get("extra", {})
        if not (_is_int(pid) and pid > 0):
            return None
        if not (isinstance(create_time, int | float) and math.isfinite(create_time)):
            return None
        if not isinstance(executable, str):
            return None
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            return None
        if port is not None and not (_is_int(port) and 0 <= port <= 65535):
            return None
        if not isinstance(extra, dict):
            return None
        version = data.get("version")
        process_name = data.get("process_name", "")
        pgid = data.get("pgid", 0)
        recorded_name = data.get("name")
        return cls(
            name=recorded_name if isinstance(recorded_name, str) and recorded_name else name,
            pid=pid,
            create_time=float(create_time),
            executable=executable,
            argv=list(argv),
            process_name=process_name if isinstance(process_name, str) else "",
            pgid=pgid if _is_int(pgid) and pgid > 0 else 0,
            port=port,
            version=version if isinstance(version, str) else None,
            extra=dict(extra),
        )


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int to Python, never a pid or a port.
    return isinstance(value, int) and not isinstance(value, bool)


def read_pidfile(path: Path) -> ProcessRecord | None:
    """The record in a pidfile; None if it is missing, unreadable or not a record.

    A version 1 pidfile (written by `devctl up` before the format field) is read
    too, named after the file (``run/redis.pid`` is "redis").
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return ProcessRecord.from_json(data, name=path.stem)


def write_pidfile(path: Path, record: ProcessRecord) -> None:
    """Write atomically: a reader sees the old record or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record.to_json(), indent=2))
    tmp.replace(path)
