"""The restart decision of one child: how long to wait, or give up (no clock, no I/O)."""

from __future__ import annotations

from collections import deque

from devctl.supervisor.spec import RestartPolicy


class Backoff:
    """Crash history of one child under a RestartPolicy.

    ``crashed(now, uptime)`` records a crash and answers the delay before the next
    start, or None once the child crashed ``max_crashes`` times within ``window``.
    Times are monotonic seconds, passed in so that tests need no sleeping.
    """

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._next_delay = policy.initial_delay
        self._crashes: deque[float] = deque()

    @property
    def recent_crashes(self) -> int:
        return len(self._crashes)

    def crashed(self, now: float, uptime: float) -> float | None:
        policy = self.policy
        if uptime >= policy.stable_after:
            # It ran long enough to count as healthy: this crash starts a new series.
            self._next_delay = policy.initial_delay
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > policy.window:
            self._crashes.popleft()
        if len(self._crashes) >= policy.max_crashes:
            return None
        delay = self._next_delay
        self._next_delay = min(self._next_delay * policy.factor, policy.max_delay)
        return delay
