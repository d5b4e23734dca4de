"""A serve plan (which children, which policy, which data dir) and running one.

``run_plan`` is the one way a serve runs, in the foreground (the CLI) or detached
(``python -m devctl.supervisor PLAN``): it holds the data dir's serve lock, checks
the ports, keeps run/serve.json current, writes each child's log file and runs the
Supervisor until it is stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devctl import processes
from devctl.errors import PortInUse, UsageError
from devctl.processes.ports import cannot_listen_reason
from devctl.supervisor.logs import ChildLogs
from devctl.supervisor.runstate import RUN_DIR, StateFile, serve_lock
from devctl.supervisor.spec import SHUTDOWN, ChildSpec, Event, Outcome, RestartPolicy
from devctl.supervisor.supervisor import EventCallback, LineCallback, Supervisor

PLAN_FILE = "serve-plan.json"
FOREGROUND, DETACHED = "foreground", "detached"
# Added to the slowest child's stop timeout: how long stopping a serve may take.
STOP_MARGIN_S = 5.0


@dataclass(frozen=True)
class ServePlan:
    """Everything a supervisor needs, nothing secret: JSON for a detached run."""

    children: tuple[ChildSpec, ...]
    data_dir: Path
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    watch: tuple[Path, ...] = ()  # reload: directories whose Python files restart children

    @property
    def shutdown_timeout(self) -> float:
        """The longest a graceful stop can take: each phase's slowest child, in turn."""
        phases: dict[int, float] = {}
        for child in self.children:
            phases[child.stop_phase] = max(phases.get(child.stop_phase, 0.0), child.stop_timeout)
        return sum(phases.values()) + STOP_MARGIN_S

    def to_json(self) -> dict[str, Any]:
        return {
            "children": [c.to_json() for c in self.children],
            "data_dir": str(self.data_dir),
            "policy": self.policy.to_json(),
            "watch": [str(p) for p in self.watch],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServePlan:
        return cls(
            children=tuple(ChildSpec.from_json(c) for c in data["children"]),
            data_dir=Path(data["data_dir"]),
            policy=RestartPolicy.from_json(data.get("policy") or {}),
            watch=tuple(Path(p) for p in data.get("watch", ())),
        )

    def write(self) -> Path:
        path = plan_path(self.data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: Path) -> ServePlan:
        return cls.from_json(json.loads(path.read_text()))


def plan_path(data_dir: Path) -> Path:
    return data_dir / RUN_DIR / PLAN_FILE


def check_ports(children: Sequence[ChildSpec]) -> None:
    """Before anything starts: UsageError (field ``api.host``) if a child's host cannot
    be listened on at all, PortInUse for the first child whose port is taken."""
    for child in children:
        if child.port is None:
            continue
        host = child.host or "127.0.0.1"
        try:
            if processes.port_is_free(child.port, host):
                continue
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}: {cannot_listen_reason(exc)}",
                hint="listen on an address of this machine (127.0.0.1, ::1) "
                "or on all of them (0.0.0.0, ::)",
                field="api.host",
                data={"value": host, "child": child.name},
            ) from exc
        owner = processes.port_owner(child.port)
        raise PortInUse(
            f"port {child.port} for {child.name} is already in use"
            + (f" by {owner}" if owner else " by another process"),
            hint="stop what holds it, or pick another first port (api.port, DEVCTL_API_PORT)",
            field="api.port",
            data={"port": child.port, "owner": owner, "child": child.name},
        )


def run_plan(
    plan: ServePlan,
    mode: str,
    *,
    on_line: LineCallback | None = None,
    on_event: EventCallback | None = None,
    handle_signals: bool = True,
) -> Outcome:
    """Run the plan's supervisor in this process until it stops; see the module doc.

    Raises UsageError if a serve already runs in the data dir, PortInUse if a port
    is taken; both before any child starts.
    """
    with serve_lock(plan.data_dir):
        check_ports(plan.children)
        state = StateFile(plan.data_dir, mode, shutdown_timeout=plan.shutdown_timeout)
        logs = ChildLogs(plan.data_dir)

        def line(name: str, text: str) -> None:
            logs.line(name, text)
            if on_line is not None:
                on_line(name, text)

        def event(ev: Event) -> None:
            logs.event(ev)
            if ev.kind == SHUTDOWN:
                state.mark_stopping()
            if on_event is not None:
                on_event(ev)

        supervisor = Supervisor(
            plan.children,
            plan.policy,
            on_line=line,
            on_event=event,
            on_change=state.update,
            watch=plan.watch,
        )
        state.write()
        try:
            return supervisor.run(handle_signals=handle_signals)
        finally:
            state.remove()
            logs.close()
