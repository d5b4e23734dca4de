"""One run of a child seen through its health URL: first until it answers, then that it still does.

A child that answers its health URL once and then stops answering (a deadlock, a
stopped process, an event loop blocked for good) is alive to ``poll()``; only its
URL shows it is hung. ``watch_health`` runs in a helper thread of the Supervisor,
one per start of a child that has a health URL. It never touches the process: it
reports through callbacks, and the supervisor's loop, which owns the children,
stops or kills them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from devctl.supervisor import health
from devctl.supervisor.spec import RestartPolicy

log = logging.getLogger(__name__)

_READY_POLL_S = 0.1
# While it starts, a probe that hangs for long only delays seeing it ready.
_READY_PROBE_TIMEOUT_S = 1.0


def watch_health(
    url: str,
    policy: RestartPolicy,
    *,
    current: Callable[[], bool],
    on_ready: Callable[[], None],
    on_unhealthy: Callable[[], None],
    on_hung: Callable[[str], None],
    halt: threading.Event,
) -> None:
    """Probe ``url`` for one run of a child; return once there is nothing left to say.

    Readiness: every 0.1 s until ``url`` answers 200, then ``on_ready()``; no 200
    within ``policy.ready_timeout``: ``on_unhealthy()``. Liveness, from then on:
    every ``liveness_interval`` seconds, a probe with ``liveness_timeout``; after
    ``liveness_failures`` failed probes in a row, ``on_hung(last_reason)``.

    ``current()`` says whether this run still counts (same start, not stopping,
    not exited, not being stopped): a probe that failed because the child was
    being stopped meanwhile is no sign of a hang. ``halt`` ends the watch at once.
    """
    deadline = time.monotonic() + policy.ready_timeout
    while True:
        if not current():
            return
        if health.get(url, timeout=_READY_PROBE_TIMEOUT_S).ok:
            break
        if time.monotonic() >= deadline:
            if current():
                on_unhealthy()
            return
        if halt.wait(_READY_POLL_S):
            return
    if not current():
        return
    on_ready()
    failures = 0
    while not halt.wait(policy.liveness_interval):
        if not current():
            return
        answer = health.get(url, timeout=policy.liveness_timeout)
        if answer.ok:
            failures = 0
            continue
        if not current():
            return
        failures += 1
        reason = answer.error or f"answered {answer.status}"
        log.info("%s failed (%d in a row): %s", url, failures, reason)
        if failures >= policy.liveness_failures:
            on_hung(reason)
            return
