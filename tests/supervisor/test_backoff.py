"""The restart decision, without processes or clocks."""

from __future__ import annotations

from devctl.supervisor.backoff import Backoff
from devctl.supervisor.spec import RestartPolicy

POLICY = RestartPolicy(
    initial_delay=0.5, max_delay=30.0, factor=2.0, stable_after=30.0, max_crashes=5, window=60.0
)


def test_delays_double_up_to_the_maximum() -> None:
    backoff = Backoff(RestartPolicy(initial_delay=0.5, max_delay=3.0, max_crashes=100))
    delays = [backoff.crashed(now=float(i), uptime=0.1) for i in range(6)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_gives_up_at_the_fifth_crash_within_the_window() -> None:
    backoff = Backoff(POLICY)
    delays = [backoff.crashed(now=float(i), uptime=0.1) for i in range(5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, None]
    assert backoff.recent_crashes == 5


def test_crashes_older_than_the_window_are_forgotten() -> None:
    backoff = Backoff(POLICY)
    for now in (0.0, 1.0, 2.0, 3.0):
        assert backoff.crashed(now, uptime=0.1) is not None
    # 70 s later the first four are outside the 60 s window: no give-up.
    assert backoff.crashed(70.0, uptime=0.1) is not None
    assert backoff.recent_crashes == 1


def test_a_child_that_stayed_up_starts_again_from_the_first_delay() -> None:
    backoff = Backoff(POLICY)
    assert backoff.crashed(0.0, uptime=0.1) == 0.5
    assert backoff.crashed(1.0, uptime=0.1) == 1.0
    assert backoff.crashed(2.0, uptime=0.1) == 2.0
    assert backoff.crashed(100.0, uptime=60.0) == 0.5
