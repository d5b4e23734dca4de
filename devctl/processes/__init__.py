"""Processes devctl starts and later finds again: records, pidfiles, start, stop, ports.

The local engine runs Valkey and Tansu with it; a supervisor (``devctl serve``)
can run the API and the consumers with the same record and pidfile. Nothing
here knows about services: a record carries a name, and a port when it has one.
"""

from __future__ import annotations

from devctl.processes.lifecycle import (
    describe_returncode,
    has_exited,
    is_ours,
    live_record,
    spawn,
    stop,
    stop_spawned,
)
from devctl.processes.logfiles import tail_file
from devctl.processes.ports import free_port, listener, port_is_free, port_owner
from devctl.processes.records import ProcessRecord, read_pidfile, write_pidfile

__all__ = [
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
