"""TCP ports on this machine: free or taken, by whom, and which process serves one."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from typing import Any

import psutil


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR mirrors what servers set, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_owner(port: int) -> str | None:
    """'name (pid N)' of the process listening on port, where it can be found."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            if conn.pid is None:
                return None
            try:
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
            except psutil.Error:
                return f"pid {conn.pid}"
    return None


def free_port() -> int:
    """A port the OS considers free right now (used by tests, and when a port of 0 is configured)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listener(root_pid: int, port: int) -> psutil.Process | None:
    """The process of root_pid's session that listens on port: the server itself,
    also when a wrapper script started it (as root_pid, or as its child)."""

    def listens(conns: list[Any]) -> bool:
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns
        )

    try:
        root = psutil.Process(root_pid)
        candidates = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    for proc in candidates:
        with contextlib.suppress(psutil.Error):
            if listens(proc.net_connections(kind="tcp")):
                return proc
    # A server that left the process tree (daemonised) is still in the session.
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        with contextlib.suppress(psutil.Error, OSError):
            if conn.pid and listens([conn]) and os.getsid(conn.pid) == root_pid:
                return psutil.Process(conn.pid)
    return None
