"""TCP ports on this machine: free or taken, by whom, and which process serves one."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from typing import Any

import psutil


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now (False: another process holds it).

    Binds the way asyncio's servers (uvicorn) do: every address ``host`` resolves
    to, IPv6 sockets IPv6-only. Raises OSError (``socket.gaierror`` included) when
    nothing could listen on ``host`` whatever the port: a name that does not
    resolve, an address of no interface of this machine, a family it lacks;
    ``cannot_listen_reason`` words it.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    lacking: OSError | None = None
    bound = 0
    for family, kind, proto, _name, address in infos:
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            # A family this machine lacks (IPv6 turned off): asyncio skips it too.
            lacking = exc
            continue
        with sock:
            # SO_REUSEADDR mirrors what servers set, so a port in TIME_WAIT counts as free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
        bound += 1
    if not bound and lacking is not None:
        raise lacking
    return True


def cannot_listen_reason(exc: OSError) -> str:
    """Why nothing can listen on a host, from what ``port_is_free`` raised, in words."""
    if exc.errno == errno.EADDRNOTAVAIL:
        return "not an address of this machine"
    if exc.errno == errno.EAFNOSUPPORT:
        return "this machine does not support its address family (IPv6 turned off?)"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return reason[:1].lower() + reason[1:]


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
