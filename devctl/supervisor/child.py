"""Launch one child process the supervisor can never orphan, and read its output.

No orphans, on any path:

- The supervisor stops its children itself on every path it controls (signals,
  give-up, an exception in its loop).
- If the supervisor dies without stopping them (SIGKILL, a crash of the
  interpreter), Linux kills them: each child asks for SIGKILL on its parent's
  death (``prctl(PR_SET_PDEATHSIG)``, set between fork and exec). We chose this
  over a pipe the children watch because it needs no help from the child: any
  program, an API instance or a consumer, is covered. The signal fires when the
  *thread* that forked the child ends, so the supervisor starts every child from
  the one thread that runs its loop and outlives them. It does not reach
  grandchildren; those share the child's process group, which the supervisor
  kills whole whenever a child ends.
- Each child runs in a process group of its own (``process_group=0``): Ctrl-C on
  the terminal reaches the supervisor only, which then stops the children in its
  order (API instances first), and a signal to the group also reaches whatever
  the child forked.

On systems without prctl (not Linux) the first and last points still hold.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO

from devctl.supervisor.spec import ChildSpec

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    # Resolved once, here, in the parent: the child between fork and exec must not
    # load libraries or import modules (other threads may hold the locks that needs).
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _load_prctl()


def _die_with(parent: int) -> Callable[[], None] | None:
    """The preexec function that ties a child's life to ``parent`` (None without prctl)."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        # The parent may have died between fork and prctl: nothing would fire then.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def launch(spec: ChildSpec) -> subprocess.Popen[bytes]:
    """Start the child: stdout and stderr together on one pipe, stdin closed."""
    env = {**os.environ, **spec.env}
    return subprocess.Popen(
        list(spec.argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=spec.cwd,
        env=env,
        close_fds=True,
        process_group=0,
        preexec_fn=_die_with(os.getpid()),
    )


def read_lines(
    stream: IO[bytes], name: str, on_line: Callable[[str, str], None]
) -> threading.Thread:
    """A daemon thread handing each line of ``stream`` to ``on_line(name, line)`` until EOF."""

    def pump() -> None:
        with contextlib.suppress(ValueError, OSError), stream:
            for raw in iter(stream.readline, b""):
                on_line(name, raw.decode("utf-8", errors="replace").rstrip("\r\n"))

    thread = threading.Thread(target=pump, name=f"supervisor-{name}-output", daemon=True)
    thread.start()
    return thread


def signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the child's process group (the child and whatever it forked).

    Safe until the child is reaped (its pid cannot be reused before), and after:
    a group id stays taken while any member lives, so only leftovers are reached.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)
