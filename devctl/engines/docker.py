"""The docker engine: real Redis, Apache Kafka and PostgreSQL in containers (Compose).

Driven through python-on-whales. Every call that needs the Docker engine first
asks it for its version with a bounded timeout (``DAEMON_TIMEOUT_S``): without a
daemon the `docker` CLI may wait on a socket, and python-on-whales has no timeout
of its own, so the one question that can hang is asked through ``subprocess`` with
a timeout that kills it.

Layout of the data directory:
    docker/compose.env          ports and the PostgreSQL password for compose (0600)
    docker/postgres-password    the generated password, when POSTGRES_PASSWORD is unset (0600)
    stack.json                  engine, endpoints, compose project and file of the running stack

The containers, networks and volumes belong to the compose project
``devctl-<hash of the data dir>`` (or ``docker.project``), so checkouts never collide.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
import time
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devctl.clients.endpoints import Capabilities, Endpoints
from devctl.config.loader import redact_url
from devctl.engines import probe
from devctl.engines.base import (
    SERVICES,
    DoctorCheck,
    DownResult,
    Engine,
    Progress,
    ServiceStatus,
    UpResult,
)
from devctl.errors import ConfigError, DevctlError, ServiceStartError, StackNotRunning

if TYPE_CHECKING:
    from python_on_whales import Container, DockerClient

    from devctl.config.schema import DockerSettings

DAEMON_TIMEOUT_S = 2.0
COMPOSE_FILE = "docker-compose.yml"
# A user's own compose file, relative to the working directory, replaces the packaged one.
LOCAL_COMPOSE = Path("compose") / COMPOSE_FILE
DOCKER_DIR = "docker"
ENV_FILE = "compose.env"
PASSWORD_FILE = "postgres-password"
POSTGRES_USER = "devctl"  # as in the packaged compose file
UI_PORTS = {"kafka-ui": 8080, "redis-commander": 8081}
NO_DAEMON_HINT = "start Docker (Docker Desktop, or `sudo systemctl start docker`), or use `--engine local`: it needs no Docker"


def packaged_compose_file() -> Path:
    """The compose file shipped inside the package (found where devctl is installed)."""
    return Path(str(files("devctl.engines") / "compose" / COMPOSE_FILE))


def project_name(data_dir: Path) -> str:
    """devctl-<hash>: one compose project per data dir (Compose names: [a-z0-9_-])."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return f"devctl-{digest}"


class DockerEngine(Engine):
    name = "docker"
    keeps_data = True  # named volumes: Redis AOF, Kafka log, PostgreSQL
    takes_ports = True  # redis.port, kafka.port (and docker.postgres_port) are the host ports
    # Real Apache Kafka: none of the Tansu workarounds apply.
    caps = Capabilities(
        starts_servers=True,
        can_grow_partitions=True,
        short_group_session=False,
        keeps_events=True,
    )

    _ps_cache: dict[str, Container] | None = None  # one `compose ps` per `status`

    @property
    def docker_settings(self) -> DockerSettings:
        return self.settings.config.docker

    @property
    def project(self) -> str:
        return self.docker_settings.project or project_name(self.data_dir)

    @property
    def work_dir(self) -> Path:
        return self.data_dir / DOCKER_DIR

    @property
    def env_file(self) -> Path:
        return self.work_dir / ENV_FILE

    def compose_file(self) -> Path:
        """docker.compose_file, else ./compose/docker-compose.yml, else the packaged file."""
        configured = self.docker_settings.compose_file
        if configured:
            path = Path(configured).expanduser()
            path = path if path.is_absolute() else self.settings.cwd / path
            if not path.is_file():
                raise ConfigError(
                    f"compose file {path} does not exist",
                    key="docker.compose_file",
                    hint="fix the path, or unset docker.compose_file to use the packaged file",
                )
            return path
        local = self.settings.cwd / LOCAL_COMPOSE
        return local if local.is_file() else packaged_compose_file()

    # --- compose plumbing -------------------------------------------------------

    def client(self, *, ui: bool | None = None) -> DockerClient:
        """A python-on-whales client bound to this stack's compose project and env file."""
        from python_on_whales import DockerClient

        with_ui = self.docker_settings.with_ui if ui is None else ui
        return DockerClient(
            compose_files=[self.compose_file()],
            compose_project_name=self.project,
            compose_env_files=[self.write_env_file()],
            # Both profiles' services are always known to down/ps/logs: a stack brought
            # up with the UIs is removed whole by a `down` without --with-ui.
            compose_profiles=["ui"] if with_ui else [],
        )

    def ports(self) -> dict[str, int]:
        """Host ports: those the running stack recorded, else the configured ones."""
        recorded = self._recorded()
        wanted = {
            "redis": self.settings.redis.port,
            "kafka": self.settings.kafka.port,
            "postgres": self.docker_settings.postgres_port,
        }
        ports = {}
        for service, port in wanted.items():
            from_record = recorded.get("ports", {}).get(service)
            ports[service] = int(from_record) if from_record else port
        return ports

    def _choose_ports(self) -> dict[str, int]:
        from devctl.processes import free_port

        # Port 0 means any free port, as on the local engine; compose needs a number.
        return {s: (p or free_port()) for s, p in self.ports().items()}

    def postgres_password(self) -> str:
        """POSTGRES_PASSWORD from the environment, else one generated into the data dir (0600).

        Generated once and kept: the PostgreSQL volume is initialised with the first one.
        """
        given = os.environ.get("POSTGRES_PASSWORD")
        if given:
            return given
        path = self.work_dir / PASSWORD_FILE
        with contextlib.suppress(OSError):
            stored = path.read_text().strip()
            if stored:
                return stored
        self.work_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        _write_private(path, password + "\n")
        return password

    def write_env_file(self, ports: dict[str, int] | None = None) -> Path:
        """The variables the compose file reads; owner-only, it holds the password."""
        ports = ports or self.ports()
        lines = [
            f"DEVCTL_REDIS_PORT={ports['redis']}",
            f"DEVCTL_KAFKA_PORT={ports['kafka']}",
            f"DEVCTL_POSTGRES_PORT={ports['postgres']}",
            f"POSTGRES_PASSWORD={self.postgres_password()}",
        ]
        self.work_dir.mkdir(parents=True, exist_ok=True)
        _write_private(self.env_file, "\n".join(lines) + "\n")
        return self.env_file

    def compose_config(self, *, ui: bool | None = None) -> dict[str, Any]:
        """The compose file as Compose resolves it (`docker compose config`); needs no daemon."""
        from python_on_whales.exceptions import DockerException

        try:
            config: dict[str, Any] = self.client(ui=ui).compose.config(return_json=True)
        except DockerException as exc:
            raise ConfigError(
                f"docker compose rejects {self.compose_file()}: {_stderr(exc)}",
                hint="`docker compose version` must work (the Compose plugin), and the file be valid",
            ) from exc
        return config

    def daemon_version(self) -> str:
        """The Docker engine's version, or StackNotRunning within DAEMON_TIMEOUT_S."""
        from python_on_whales import DockerClient

        cmd = [
            *DockerClient().client_config.docker_cmd,
            "version",
            "--format",
            "{{.Server.Version}}",
        ]
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=DAEMON_TIMEOUT_S, check=False
            )
        except FileNotFoundError as exc:
            raise StackNotRunning(
                "the docker engine needs the `docker` client, and none is on PATH",
                hint="install Docker, or use `--engine local`: it needs no Docker",
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise StackNotRunning(
                f"the Docker engine did not answer within {DAEMON_TIMEOUT_S:g}s",
                hint=NO_DAEMON_HINT,
            ) from exc
        version = out.stdout.strip()
        if out.returncode != 0 or not version or version == "<no value>":
            reason = (out.stderr.strip().splitlines() or ["no answer"])[-1]
            raise StackNotRunning(f"no Docker engine answers: {reason}", hint=NO_DAEMON_HINT)
        return version

    def compose_version(self) -> str:
        from python_on_whales import DockerClient

        cmd = [*DockerClient().client_config.docker_cmd, "compose", "version", "--short"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DevctlError(f"`docker compose version` failed: {exc}") from exc
        if out.returncode != 0:
            raise DevctlError(
                "the Docker Compose plugin is missing (`docker compose` is not a command)",
                hint="install it (package docker-compose-plugin, or Docker Desktop)",
            )
        return out.stdout.strip()

    def _containers(self) -> dict[str, Container]:
        """This project's containers by compose service name (stopped ones too)."""
        from python_on_whales.exceptions import DockerException

        try:
            found = self.client(ui=True).compose.ps(all=True)
        except DockerException as exc:
            raise StackNotRunning(f"docker compose ps failed: {_stderr(exc)}") from exc
        return {(c.config.labels or {}).get("com.docker.compose.service", c.name): c for c in found}

    def _recorded(self) -> dict[str, Any]:
        recorded = self.read_stack_file() or {}
        return recorded if recorded.get("engine") == self.name else {}

    # --- the Engine interface ---------------------------------------------------

    def is_active(self) -> bool:
        return bool(self._recorded())

    def up(self, *, keep: bool = False, progress: Progress | None = None) -> UpResult:
        from python_on_whales.exceptions import DockerException

        say = progress or (lambda _msg: None)
        started_at = time.perf_counter()
        say("asking the Docker engine")
        self.daemon_version()
        before = {s for s, c in self._containers().items() if c.state.running}
        ports = self._choose_ports()
        self.write_env_file(ports)
        with_ui = self.docker_settings.with_ui
        say("docker compose up (the first run pulls the images)")
        try:
            self.client().compose.up(detach=True, quiet=True)
        except DockerException as exc:
            raise ServiceStartError(
                f"docker compose up failed: {_stderr(exc)}",
                hint="`docker compose` output above; a taken port: set redis.port / kafka.port / docker.postgres_port",
            ) from exc
        endpoints = self._endpoints_for(ports)
        try:
            self._wait_healthy(endpoints, with_ui, say)
        except DevctlError:
            if not keep:
                with contextlib.suppress(DockerException):
                    self.client().compose.stop()
            raise
        self.write_stack_file(
            endpoints,
            {"ports": ports, "project": self.project, "compose_file": str(self.compose_file())},
        )
        wanted = ["redis", "kafka", "postgres"] + (list(UI_PORTS) if with_ui else [])
        result = UpResult(
            endpoints=endpoints,
            started=[s for s in wanted if s not in before],
            already_running=[s for s in wanted if s in before],
            seconds=time.perf_counter() - started_at,
        )
        url = self.database_url(ports["postgres"])
        result.notes.append(f"PostgreSQL for the API: DATABASE_URL={redact_url(url)}")
        if with_ui:
            result.notes.append(
                "Kafka UI: http://127.0.0.1:8080  Redis Commander: http://127.0.0.1:8081"
            )
        return result

    def database_url(self, port: int | None = None) -> str:
        port = port or self.ports()["postgres"]
        password = self.postgres_password()
        return f"postgresql://{POSTGRES_USER}:{password}@127.0.0.1:{port}/{POSTGRES_USER}"

    def _wait_healthy(self, endpoints: Endpoints, with_ui: bool, say: Progress) -> None:
        """Every container healthy (its healthcheck), then Redis and Kafka answer devctl."""
        wanted = {"redis", "kafka", "postgres"}
        deadline = time.monotonic() + self.docker_settings.start_timeout
        waiting: dict[str, str] = {}
        while time.monotonic() < deadline:
            containers = self._containers()
            waiting = {}
            for service in sorted(wanted):
                container = containers.get(service)
                state = container.state if container else None
                if state is None or not state.running:
                    waiting[service] = str(state.status) if state else "missing"
                    if state is not None and state.status in ("exited", "dead"):
                        raise ServiceStartError(
                            f"the {service} container {state.status} "
                            f"(exit code {state.exit_code}) during start-up",
                            hint=f"`devctl logs {service}` or `docker logs {container.name}`"
                            if container
                            else None,
                        )
                elif state.health is not None and state.health.status != "healthy":
                    waiting[service] = str(state.health.status)
            if not waiting:
                break
            say("waiting for " + ", ".join(f"{s} ({why})" for s, why in waiting.items()))
            time.sleep(1.0)
        else:
            raise ServiceStartError(
                "the docker stack did not become healthy within "
                f"{self.docker_settings.start_timeout:g}s: "
                + ", ".join(f"{s} {why}" for s, why in waiting.items()),
                hint="`devctl logs SERVICE` shows why; docker.start_timeout waits longer",
            )
        for service in SERVICES:
            say(f"checking {service}")
            probe.probe(service, _address(endpoints, service), self.settings, caps=self.caps)

    def down(self, *, purge: bool = False) -> DownResult:
        from python_on_whales.exceptions import DockerException

        self.daemon_version()
        running = sorted(self._containers())
        try:
            self.client(ui=True).compose.down(remove_orphans=True, volumes=purge)
        except DockerException as exc:
            raise DevctlError(f"docker compose down failed: {_stderr(exc)}") from exc
        self.stack_file.unlink(missing_ok=True)
        lines = [f"{s}: container removed" for s in running] or [
            f"no containers of project {self.project}"
        ]
        if purge:
            import shutil

            shutil.rmtree(self.work_dir, ignore_errors=True)
            lines.append(
                f"volumes of project {self.project} removed (Redis, Kafka, PostgreSQL data)"
            )
        return DownResult(lines)

    def _endpoints_for(self, ports: dict[str, int]) -> Endpoints:
        return Endpoints(
            self.name,
            f"redis://127.0.0.1:{ports['redis']}/0",
            f"127.0.0.1:{ports['kafka']}",
            caps=self.caps,
        )

    def endpoints(self, services: Collection[str] = SERVICES) -> Endpoints:
        recorded = self._recorded()
        if not recorded:
            raise StackNotRunning(
                "the docker stack is not running",
                hint="start it with `devctl up --engine docker`",
            )
        self.daemon_version()
        containers = self._containers()
        down = tuple(s for s in SERVICES if s not in containers or not containers[s].state.running)
        needed_down = [s for s in services if s in down]
        if needed_down:
            raise StackNotRunning(
                f"the docker stack's {' and '.join(needed_down)} container is not running",
                hint="`devctl up --engine docker` starts it again",
            )
        endpoints = self._endpoints_for(self.ports())
        return Endpoints(
            endpoints.engine, endpoints.redis_url, endpoints.kafka_brokers, down, self.caps
        )

    def status(self) -> list[ServiceStatus]:
        # Asked once, bounded, before every service: without a daemon, say so at once.
        self.daemon_version()
        self._ps_cache = self._containers()
        try:
            return super().status()
        finally:
            self._ps_cache = None

    def service_info(self, service: str) -> dict[str, Any]:
        containers = self._ps_cache if self._ps_cache is not None else self._containers()
        address = _address(self._endpoints_for(self.ports()), service)
        container = containers.get(service)
        if container is None:
            return {"running": False, "address": address, "detail": "no container"}
        state = container.state
        info: dict[str, Any] = {
            "running": bool(state.running),
            "address": address,
            "version": container.config.image,
            "detail": f"container {container.name}",
        }
        if state.running and state.started_at is not None:
            info["uptime_s"] = (datetime.now(UTC) - state.started_at).total_seconds()
        if state.running and state.pid:
            info["pid"] = state.pid
        return info

    def _check_service(self, service: str) -> None:
        if service not in self.services:
            raise ConfigError(f"unknown service {service}; one of {', '.join(self.services)}")

    def log_lines(self, service: str, lines: int, *, noise: bool = True) -> list[str]:
        from python_on_whales.exceptions import DockerException

        self.daemon_version()
        self._check_service(service)
        try:
            text = self.client(ui=True).compose.logs(
                services=[service], tail=str(lines), no_log_prefix=True
            )
        except DockerException as exc:
            raise StackNotRunning(f"no logs of {service}: {_stderr(exc)}") from exc
        return str(text).splitlines()[-lines:] if lines else []

    def follow_log(self, service: str, lines: int, *, noise: bool = True) -> Iterator[str]:
        self.daemon_version()
        self._check_service(service)
        stream = self.client(ui=True).compose.logs(
            services=[service], tail=str(lines), follow=True, stream=True, no_log_prefix=True
        )
        for _source, chunk in stream:
            yield from chunk.decode(errors="replace").splitlines()

    def doctor(self) -> list[DoctorCheck]:
        checks = []
        try:
            version = self.daemon_version()
            checks.append(DoctorCheck("docker daemon", True, f"Docker engine {version}"))
        except StackNotRunning as exc:
            checks.append(DoctorCheck("docker daemon", False, exc.message, exc.hint))
        try:
            checks.append(DoctorCheck("docker compose", True, f"Compose {self.compose_version()}"))
        except DevctlError as exc:
            checks.append(DoctorCheck("docker compose", False, exc.message, exc.hint))
            return checks
        try:
            self.compose_config()
            checks.append(
                DoctorCheck("compose file", True, f"{self.compose_file()} (project {self.project})")
            )
        except ConfigError as exc:
            checks.append(DoctorCheck("compose file", False, exc.message, exc.hint))
        return checks


def _address(endpoints: Endpoints, service: str) -> str:
    return endpoints.redis_url if service == "redis" else endpoints.kafka_brokers


def _stderr(exc: Exception) -> str:
    """The last line Docker wrote: the reason, without python-on-whales' command dump."""
    text = str(getattr(exc, "stderr", "") or exc).strip()
    return (text.splitlines() or ["no output"])[-1]


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)
