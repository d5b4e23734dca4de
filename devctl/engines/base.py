"""The one Engine interface: how the Redis + Kafka stack is brought up, down and inspected.

An engine owns the servers' life cycle and knows their endpoints; everything
else (topics, checks, domain code) talks to the endpoints and never to the engine.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devctl.clients.endpoints import Capabilities, Endpoints
from devctl.config.loader import Settings, redact_url
from devctl.engines import probe
from devctl.errors import DevctlError

SERVICES = ("redis", "kafka")
STACK_FILE = "stack.json"
# Where an engine that starts processes keeps their pidfiles (`*.pid`): the one place
# ensure_no_other_stack looks before importing an engine to ask it.
RUN_DIR = "run"

Progress = Callable[[str], None]


@dataclass
class ServiceStatus:
    service: str
    engine: str
    address: str
    running: bool
    health: str  # "ok" | "unreachable" | "stopped"
    pid: int | None = None
    version: str | None = None
    uptime_s: float | None = None
    latency_ms: float | None = None
    detail: str | None = None
    limitations: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class UpResult:
    endpoints: Endpoints
    started: list[str] = field(default_factory=list)
    already_running: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class DownResult:
    lines: list[str]  # what was done, one line per service
    warnings: list[str] = field(default_factory=list)  # what was left behind, and why


@dataclass(frozen=True)
class Limitation:
    """A known limit of an engine's server that devctl cannot hide from other clients."""

    service: str
    id: str
    summary: str
    remedy: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "summary": self.summary, "remedy": self.remedy}


@dataclass
class DoctorCheck:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True
    field: str | None = None  # the input the fix changes (see DevctlError.field)


class Engine(ABC):
    """Life cycle of the stack. Implementations: local, external (docker later)."""

    name: str = ""
    keeps_data = False  # True if purging the stack deletes data of this engine
    services: tuple[str, ...] = SERVICES  # what `status` and `logs SERVICE` accept
    takes_ports = False  # True if its ports are chosen (redis.port, kafka.port)
    caps = Capabilities()  # copied into every Endpoints it returns

    def __init__(self, settings: Settings):
        self.settings = settings
        self.data_dir = settings.data_dir

    @abstractmethod
    def up(self, *, keep: bool = False, progress: Progress | None = None) -> UpResult:
        """Make the stack reachable; idempotent."""

    @abstractmethod
    def down(self, *, purge: bool = False) -> DownResult:
        """Stop what this engine started; return what was done, one line each."""

    @abstractmethod
    def endpoints(self, services: Collection[str] = SERVICES) -> Endpoints:
        """Endpoints of the running stack, or raise StackNotRunning.

        Only ``services`` must run: a command that needs one server keeps working
        while the other is down (the other is listed in ``Endpoints.not_running``).
        """

    @abstractmethod
    def service_info(self, service: str) -> dict[str, Any]:
        """Engine-side facts of a service: running, pid, version, uptime_s, address."""

    def log_lines(self, service: str, lines: int, *, noise: bool = True) -> list[str]:
        """The last ``lines`` lines of a server's log; ``noise=False`` leaves out the
        lines the engine knows to be harmless (see LocalEngine.is_noise)."""
        raise DevctlError(f"the {self.name} engine keeps no logs of {service}")

    def follow_log(self, service: str, lines: int, *, noise: bool = True) -> Iterator[str]:
        raise DevctlError(f"the {self.name} engine keeps no logs of {service}")

    def doctor(self) -> list[DoctorCheck]:
        return []

    def is_active(self) -> bool:
        """True if this engine runs servers in the data dir that `down` would stop."""
        return False

    def limitations(self) -> list[Limitation]:
        """Known limits of this engine's servers that clients other than devctl meet."""
        return []

    def status(self) -> list[ServiceStatus]:
        """Per service: engine facts plus one live PING / metadata call."""
        statuses = []
        for service in self.services:
            info = self.service_info(service)
            address = info.get("address", "-")
            status = ServiceStatus(
                service=service,
                engine=self.name,
                address=redact_url(address),
                running=bool(info.get("running")),
                health="stopped",
                pid=info.get("pid"),
                version=info.get("version"),
                uptime_s=info.get("uptime_s"),
                detail=info.get("detail"),
                limitations=[lim.to_json() for lim in self.limitations() if lim.service == service],
            )
            if status.running:
                try:
                    result = probe.probe(service, address, self.settings, caps=self.caps)
                    status.health = "ok"
                    status.latency_ms = result.latency_ms
                    status.version = status.version or result.version
                    status.detail = status.detail or result.detail
                except DevctlError as exc:
                    status.health = "unreachable"
                    status.detail = exc.message
            statuses.append(status)
        return statuses

    # The stack file records which engine brought the stack up and where it
    # is, so later commands find it without repeating flags.
    @property
    def stack_file(self) -> Path:
        return self.data_dir / STACK_FILE

    def write_stack_file(self, endpoints: Endpoints, extra: dict[str, Any] | None = None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        record = {**endpoints.to_json(), "written_at": time.time(), **(extra or {})}
        tmp = self.stack_file.with_suffix(".tmp")
        # Owner-only: a Redis URL may carry a password.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record, indent=2))
        tmp.replace(self.stack_file)

    def read_stack_file(self) -> dict[str, Any] | None:
        return read_stack_file(self.data_dir)


def read_stack_file(data_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((data_dir / STACK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
