"""Starts, prefixes, restarts and stops the child processes of `devctl serve`.

- ``spec``: what a child is (ChildSpec), how crashes are treated (RestartPolicy),
  what is reported (ChildState, Event, Outcome)
- ``supervisor``: the Supervisor (start, output lines, backoff, give-up, ordered stop);
  ``watchdog``: a child's health URL, until ready and then whether it still answers
- ``child``: launching a child that dies with its supervisor (PR_SET_PDEATHSIG)
- ``plan``: a serve plan and ``run_plan``, the one way a serve runs
- ``serve``: the plan of DevConnect's backend (API instances, consumers) from settings
- ``runstate``, ``logs``: the files under the data dir; ``control``: status and stop
- ``daemon``: the detached serve; ``__main__`` its entry point

Domain code: nothing here prints (but the daemon's entry point) or knows the CLI.
docs/serve.md describes the process model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from devctl.supervisor.spec import ChildSpec, ChildState, Event, Outcome, RestartPolicy

if TYPE_CHECKING:
    from devctl.supervisor.supervisor import Supervisor


def __getattr__(name: str) -> Any:
    # The Supervisor's module (threads, ctypes) loads when it is used, not when
    # `devctl status` reads a serve's state through this package.
    if name == "Supervisor":
        from devctl.supervisor import supervisor

        return getattr(supervisor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ChildSpec", "ChildState", "Event", "Outcome", "RestartPolicy", "Supervisor"]
