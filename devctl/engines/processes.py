"""Moved to :mod:`devctl.processes`; this module re-exports it for one release.

Import from ``devctl.processes`` instead. ``PidRecord`` keeps the positional
arguments of the server-only record it used to be.
"""

from __future__ import annotations

from devctl.processes import (
    ProcessRecord,
    describe_returncode,
    free_port,
    has_exited,
    is_ours,
    listener,
    live_record,
    port_is_free,
    port_owner,
    read_pidfile,
    spawn,
    stop,
    stop_spawned,
    tail_file,
    write_pidfile,
)


# A function named like the class it replaces, so old call sites read the same.
def PidRecord(
    pid: int,
    create_time: float,
    executable: str,
    port: int,
    version: str,
    argv: list[str],
    process_name: str = "",
    pgid: int = 0,
) -> ProcessRecord:
    """A server's record, built with the old positional order (name left empty)."""
    return ProcessRecord(
        name="",
        pid=pid,
        create_time=create_time,
        executable=executable,
        argv=argv,
        process_name=process_name,
        pgid=pgid,
        port=port,
        version=version,
    )


__all__ = [
    "PidRecord",
    "ProcessRecord",
    "describe_returncode",
    "free_port",
    "has_exited",
    "is_ours",
    "listener",
    "live_record",
    "port_is_free",
    "port_owner",
    "read_pidfile",
    "spawn",
    "stop",
    "stop_spawned",
    "tail_file",
    "write_pidfile",
]
