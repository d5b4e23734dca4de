"""The API checks' own instance: an API process started when no other is there to check.

``start_instance`` runs ``python -m devctl.api`` on a free loopback port, with the
settings and stack of the run, on a SQLite database in a scratch directory of the
data dir, and waits for its /healthz; the clean-up stops it (SIGTERM, then SIGKILL,
its whole process group) and deletes the directory. Its output is kept to say why it
failed (``start_failure``). The instance dies with this process: PR_SET_PDEATHSIG
follows the thread that forked the child, not the process, so it is forked from a
keeper thread that lives exactly as long as the child (``_launch_from_keeper``).

Kept apart from ``api_checks``, which decides whether to start one at all and then
waits for the instance to be ready (/readyz) like for any other target; it defines
no checks.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devctl.checks import CheckContext
from devctl.errors import StackNotRunning

# Where instances of a run keep their database: <data dir>/tmp/<run id>-api-XXXX, so a
# later run finds the directories of killed runs by their run id
# (api_checks.remove_leftovers).
SCRATCH_DIR = "tmp"
DATABASE_FILE = "devconnect.db"
START_TIMEOUT = 30.0  # a cold start takes ~1.5 s; capped by the check deadline
STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL: the instance drains its relay meanwhile
START_ATTEMPTS = 2  # the free port may be taken before the instance binds it
_LOG_LINES = 200


@dataclass
class Instance:
    """An API process the run started; its output is kept to say why it failed."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    database: str  # its database URL
    lines: deque[str]
    reader: threading.Thread
    stopped: bool = False

    def failure(self) -> str:
        """Why it ended (call once it has: its last lines may still be in the pipe)."""
        self.reader.join(2.0)
        return start_failure(self.lines).removeprefix(f"{self.name}: ")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (it drains requests and its relay), then SIGKILL; the whole group."""
        from devctl.supervisor.child import signal_group

        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                signal_group(self.proc, signal.SIGKILL)
                self.proc.wait(timeout)
        signal_group(self.proc, signal.SIGKILL)  # whatever it forked and left


def _scratch_dir(ctx: CheckContext) -> Path:
    scratch = ctx.settings.data_dir / SCRATCH_DIR
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{ctx.run_id}-api-", dir=scratch))
    except OSError:
        # A data dir we cannot write: the system's (a killed run's then stays there).
        return Path(tempfile.mkdtemp(prefix=f"{ctx.run_id}-api-"))


def _remove_scratch(root: Path) -> None:
    shutil.rmtree(root)
    with contextlib.suppress(OSError):  # only when no other run uses it
        root.parent.rmdir()


def start_instance(ctx: CheckContext) -> tuple[Instance, float]:
    """An instance of the run's own that answers /healthz, and the monotonic time by
    which it must also be ready (the start's budget, within the check's deadline).

    Its stop and the removal of its scratch directory are deferred to the clean-up.
    """
    root = _scratch_dir(ctx)
    ctx.defer(lambda: _remove_scratch(root), what=f"the check API's database directory {root}")
    database = f"sqlite:///{root / DATABASE_FILE}"
    # Within the check's deadline, so a slow start says why instead of being abandoned.
    budget = max(1.0, min(START_TIMEOUT, ctx.deadline - 3.0))
    limit = time.monotonic() + budget
    code: int | None = None
    failure = ""
    for _attempt in range(START_ATTEMPTS):
        instance = _launch(ctx, database)
        ctx.defer(instance.stop, what=f"the check API instance (pid {instance.proc.pid})")
        if _wait_healthy(instance, limit):
            return instance, limit
        code = instance.proc.poll()
        instance.stop()
        failure = instance.failure()
        if code is None:
            raise StackNotRunning(
                f"the API instance started for the checks did not answer within "
                f"{budget:g}s: {failure}"
            )
        if "address already in use" not in failure or time.monotonic() > limit:
            break
    raise StackNotRunning(
        f"the API instance started for the checks exited with code {code}: {failure}",
        hint="the same settings start `devctl serve`'s instances: fix what it says",
    )


def _launch(ctx: CheckContext, database: str) -> Instance:
    """``python -m devctl.api`` on a free port, dying with this process (PDEATHSIG)."""
    from devctl.config.schema import KEYS
    from devctl.processes import free_port
    from devctl.supervisor.child import read_lines
    from devctl.supervisor.serve import API_MODULE, child_env
    from devctl.supervisor.spec import ChildSpec

    port = free_port()
    name = f"{ctx.run_id}-api"
    env = {**child_env(ctx.settings), KEYS["api.database_url"].env[0]: database}
    if ctx.settings.config.api.secret is None:
        # Its own cookie key: otherwise the instance writes one into the data dir.
        env[KEYS["api.secret"].env[0]] = secrets.token_hex(32)
    listen = ("--host", "127.0.0.1", "--port", str(port), "--name", name)
    spec = ChildSpec(
        name=name,
        argv=(sys.executable, "-m", API_MODULE, *listen),
        role="api",
        env=env,
        cwd=ctx.settings.cwd,
    )
    proc = _launch_from_keeper(spec)
    lines: deque[str] = deque(maxlen=_LOG_LINES)
    assert proc.stdout is not None
    reader = read_lines(proc.stdout, name, lambda _name, line: lines.append(line))
    return Instance(name, proc, f"http://127.0.0.1:{port}", database, lines, reader)


def _launch_from_keeper(spec: Any) -> subprocess.Popen[bytes]:
    """Launch from a thread that lives exactly as long as the child.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends: forked from
    the check's worker thread, the instance would be killed as soon as the gate
    returned. The keeper waits for the child instead; if this process dies, so does
    the keeper, and the child with it.
    """
    from devctl.supervisor.child import launch

    box: list[Any] = []
    ready = threading.Event()

    def keep() -> None:
        try:
            proc = launch(spec)
        except BaseException as exc:  # handed to the caller's thread
            box.append(exc)
            ready.set()
            return
        box.append(proc)
        ready.set()
        proc.wait()

    threading.Thread(target=keep, name=f"devctl {spec.name}", daemon=True).start()
    ready.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    started: subprocess.Popen[bytes] = box[0]
    return started


def _wait_healthy(instance: Instance, limit: float) -> bool:
    """True once /healthz answers 200; False if the process exits or time runs out."""
    from devctl.supervisor import health

    while time.monotonic() < limit:
        if instance.proc.poll() is not None:
            return False
        if health.get(f"{instance.url}/healthz", timeout=1.0).status == 200:
            return True
        time.sleep(0.05)
    return False


_LEVEL = re.compile(r"^(?:CRITICAL|ERROR|WARNING|INFO|DEBUG):\s+")
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*(?P<name>[A-Z]\w*): (?P<message>.+)$")
_LOGGED_ERROR = re.compile(r"\b(?:CRITICAL|ERROR) [\w.]+: (?P<message>.+)$")


def start_failure(lines: Iterable[str]) -> str:
    """Why an API process failed, from its output: the exception that ended it, else
    the error it logged, else its last words."""
    kept = [line.strip() for line in lines if line.strip()]
    for line in reversed(kept):
        found = _EXCEPTION.match(line)
        if found and not _LEVEL.match(line):
            return f"{found['name']}: {found['message']}"
    for line in reversed(kept):
        found = _LOGGED_ERROR.search(line)
        if found:
            return found["message"]
    for line in reversed(kept):
        if _LEVEL.match(line) and "startup failed" not in line:
            return _LEVEL.sub("", line)
    return kept[-1] if kept else "it printed nothing"
