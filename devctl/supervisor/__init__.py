"""Starts, prefixes, restarts and stops the child processes of `devctl serve`.

- ``spec``: what a child is (ChildSpec) and how crashes are treated (RestartPolicy)
- ``supervisor``: the Supervisor (start, output lines, backoff, give-up, ordered stop)
- ``child``: launching a child that dies with its supervisor (PR_SET_PDEATHSIG)
- ``plan``: a serve plan and ``run_plan``, the one way a serve runs
- ``serve``: the plan of DevConnect's backend (API instances, consumers) from settings
- ``runstate``, ``logs``: the files under the data dir; ``control``: status and stop
- ``daemon``: the detached serve; ``__main__`` its entry point

Domain code: nothing here prints (but the daemon's entry point) or knows the CLI.
docs/serve.md describes the process model.
"""

from __future__ import annotations

from devctl.supervisor.spec import ChildSpec, RestartPolicy
from devctl.supervisor.supervisor import ChildState, Event, Outcome, Supervisor

__all__ = ["ChildSpec", "ChildState", "Event", "Outcome", "RestartPolicy", "Supervisor"]
