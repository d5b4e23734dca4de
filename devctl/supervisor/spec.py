"""What the supervisor runs (ChildSpec), how it treats crashes (RestartPolicy), and
what it reports: of a child (ChildState), as it happens (Event), at the end (Outcome).

All plain data, serialisable to JSON: a detached supervisor reads its children
from a plan file, and readers of run/serve.json get ChildStates back. Kept apart
from the Supervisor so that `devctl status` reads a serve's state cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ChildSpec:
    """One child process the supervisor keeps running.

    ``env`` is added to the supervisor's own environment (never a replacement: the
    child must see the same settings, secrets included, without them being written
    anywhere). Children stop in ``stop_phase`` order, lowest first, each phase only
    once the previous one has exited; within a phase they stop together.
    """

    name: str
    argv: tuple[str, ...]
    role: str = "worker"  # what the front end calls it: "api", "consumer"
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    # Where it listens, if it is a server: checked free before anything starts.
    host: str | None = None
    port: int | None = None
    # GET answering 200 once the child serves; None: it counts as up once started.
    health_url: str | None = None
    # GET that says whether the child can do its work (its dependencies answer).
    ready_url: str | None = None
    stop_phase: int = 0
    stop_timeout: float = 10.0  # SIGTERM, then SIGKILL after this many seconds
    # The supervisor gives up as a whole once every essential child gave up.
    essential: bool = True
    # Restarted (not counted as a crash) when a watched source file changes.
    reload: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["argv"] = list(self.argv)
        data["env"] = dict(self.env)
        data["cwd"] = None if self.cwd is None else str(self.cwd)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChildSpec:
        values = dict(data)
        values["argv"] = tuple(values["argv"])
        values["env"] = dict(values.get("env") or {})
        values["cwd"] = None if values.get("cwd") is None else Path(values["cwd"])
        return cls(**values)


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff between restarts, and when to stop trying.

    The first restart waits ``initial_delay``, each next one ``factor`` times longer,
    up to ``max_delay``; a child that stayed up ``stable_after`` seconds starts
    again from ``initial_delay``. ``max_crashes`` crashes within ``window``
    seconds: the supervisor gives up on that child.

    Once up, a child with a health URL is probed every ``liveness_interval``
    seconds (each probe may take ``liveness_timeout``); after ``liveness_failures``
    failed probes in a row it counts as hung: it is killed (SIGKILL, since a hung
    process may not handle SIGTERM) and restarted like a crashed child.
    """

    initial_delay: float = 0.5
    max_delay: float = 30.0
    factor: float = 2.0
    stable_after: float = 30.0
    max_crashes: int = 5
    window: float = 60.0
    # How long a child with a health URL may take to answer it after each start;
    # one that does not is stopped and counted as a crash.
    ready_timeout: float = 60.0
    liveness_interval: float = 5.0
    liveness_timeout: float = 2.0
    liveness_failures: int = 3

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RestartPolicy:
        return cls(**dict(data))


# Child states, as snapshots show them.
STARTING, UP, BACKOFF, GAVE_UP_STATE, STOPPING_STATE, STOPPED_STATE = (
    "starting",
    "up",
    "backoff",
    "gave-up",
    "stopping",
    "stopped",
)


@dataclass(frozen=True)
class ChildState:
    """A snapshot of one child, as a front end or a state file shows it."""

    name: str
    role: str
    state: str
    pid: int | None
    create_time: float | None  # with pid, identifies the process (devctl.processes)
    port: int | None
    ready_url: str | None
    started_at: float | None  # wall clock, of the current run
    restarts: int
    last_exit: str | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


# Event kinds, in the order a child meets them.
STARTED = "started"
READY = "ready"  # its health URL answered 200
ALL_READY = "all-ready"  # every child with a health URL is up (or gave up): once per run
UNHEALTHY = "unhealthy"  # no 200 from its health URL within ready_timeout: stopped
HUNG = "hung"  # up, then its health URL failed liveness_failures probes in a row: killed
EXITED = "exited"  # crashed; data["delay"]: seconds until its restart
GAVE_UP = "gave-up"  # crashed too often: not restarted again
RELOADING = "reloading"  # a watched file changed: restarting it on purpose
SHUTDOWN = "shutdown"  # stopping every child (data["signal"]: the signal, if any)
STOPPING = "stopping"
STOPPED = "stopped"
KILLED = "killed"  # did not stop within stop_timeout of SIGTERM


@dataclass(frozen=True)
class Event:
    kind: str
    child: str | None
    message: str  # one sentence saying what happened, for people
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """How ``run`` ended: on a signal or ``stop()``, or because the children gave up."""

    signal: int | None = None
    gave_up: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)  # needed SIGKILL at shutdown
    all_gave_up: bool = False  # every essential child gave up: the run failed
