"""Stack workflows every front end shares (the CLI today; `serve` and an API next).

``bring_up`` is what `devctl up` means: refuse to start beside another stack, start
(or verify) the servers, apply the configured topics, and judge the result: a topic
the config asks for but the broker cannot provide makes a failed `up`, while the
servers stay up. ``doctor_checks`` gathers the engine's own checks and the Docker
probe. For `devctl serve`: ``serve_stack`` (the stack for as long as a serve
runs: brought up only when it is not running, stopped again when the serve
brought it up), ``apply_migrations``; ``take_down`` is `devctl down`: a running
serve first, then the stack. None of them prints or exits.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devctl.config.loader import Settings
    from devctl.db.migrate import MigrationReport
    from devctl.engines.base import DoctorCheck, DownResult, Engine, UpResult
    from devctl.streams.topics import PlanRow


@dataclass
class UpReport:
    engine: str
    result: UpResult
    topics: list[PlanRow] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def created(self) -> list[str]:
        return [row.topic for row in self.topics if row.result.startswith("created")]

    @property
    def failed(self) -> list[PlanRow]:
        """Topics the broker could not provide as configured (the `up` failed)."""
        return [
            row
            for row in self.topics
            if row.result.startswith("failed") or row.action == "unsupported"
        ]

    @property
    def unchanged(self) -> int:
        return len(self.topics) - len(self.created) - len(self.failed)

    @property
    def ok(self) -> bool:
        return not self.failed


def bring_up(
    settings: Settings,
    engine: Engine,
    *,
    keep: bool = False,
    progress: Callable[[str], None] | None = None,
) -> UpReport:
    """Start or verify the stack and apply the configured topics; see the module doc."""
    from devctl.engines import ensure_no_other_stack
    from devctl.streams.topics import TopicAdmin

    started = time.perf_counter()
    ensure_no_other_stack(settings, engine)
    result = engine.up(keep=keep, progress=progress)
    if progress is not None:
        progress("applying topics")
    admin = TopicAdmin(result.endpoints, settings)
    applied = admin.apply(admin.plan(settings.topics))
    return UpReport(engine.name, result, applied, time.perf_counter() - started)


@dataclass
class ServeStack:
    """The stack under a serve (see ``serve_stack``): what the serve had to start of it."""

    engine: Engine
    report: UpReport | None  # None: it was running already
    kept: bool = False

    @property
    def owned(self) -> bool:
        """The serve started every server of it: nobody relied on it before the serve.

        Only such a stack is stopped with the serve. One that ran before, even in
        part (the serve restarted a server that was down), is left running.
        """
        if self.report is None:
            return False
        result = self.report.result
        return bool(result.started) and not result.already_running

    def keep(self) -> None:
        """Leave it running when the serve's block ends: a detached serve runs on it now
        (`devctl down` stops both)."""
        self.kept = True


@contextlib.contextmanager
def serve_stack(
    settings: Settings,
    engine: Engine,
    *,
    progress: Callable[[str], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Iterator[ServeStack]:
    """The stack for the life of a serve: up on entry, down again if the serve owned it.

    On entry, a running stack is used as it is; else it is brought up as `devctl up`
    does (a stack of which one server is down counts as not running: `up` restarts
    that one). On exit, whether the block ended normally, raised, or was
    interrupted (Ctrl-C), an ``owned`` stack that was not ``kept`` is taken down
    (``take_down``), after whatever the block ran on it; ``on_notice`` gets a line
    saying so, then one per server. Raises OperationFailed when the broker cannot
    provide the configured topics (an owned stack is stopped first).
    """
    from devctl.errors import OperationFailed, StackNotRunning

    report = None
    try:
        engine.endpoints()
    except StackNotRunning:
        report = bring_up(settings, engine, progress=progress)
    held = ServeStack(engine, report)
    try:
        if report is not None and not report.ok:
            failed = ", ".join(row.topic for row in report.failed)
            then = "stopped it again" if held.owned else "the servers keep running, as after `up`"
            raise OperationFailed(
                f"the {engine.name} stack started, but these topics differ from the config: "
                f"{failed}; {then}",
                hint="`devctl up` starts the stack and shows why for each topic",
            )
        yield held
    finally:
        if held.owned and not held.kept:
            _stop_owned(held, on_notice or (lambda _line: None))


def _stop_owned(held: ServeStack, say: Callable[[str], None]) -> None:
    from devctl.errors import DevctlError

    assert held.report is not None
    engine = held.engine
    say(f"stopping the {engine.name} stack serve started ({', '.join(held.report.result.started)})")
    try:
        result = take_down(engine)
    except DevctlError as exc:
        # Said, not raised: the error that ended the serve, if any, is the one to show.
        say(
            f"warning: could not stop the {engine.name} stack: {exc.message}; `devctl down` stops it"
        )
        return
    for line in result.lines:
        say(line)
    for warning in result.warnings:
        say(f"warning: {warning}")


def apply_migrations(settings: Settings) -> MigrationReport | None:
    """Bring the API's database schema to the newest revision (devctl.db, Alembic).

    Safe while API instances start on the same database (devctl.db.migrate takes
    a lock). None when there is no devctl.db package to migrate with.
    """
    from importlib.util import find_spec

    if find_spec("devctl.db") is None or find_spec("devctl.db.migrate") is None:
        return None
    from devctl.db.engine import database_url
    from devctl.db.migrate import upgrade

    return upgrade(database_url(settings))


def take_down(engine: Engine, *, purge: bool = False) -> DownResult:
    """`devctl down`: stop a running serve (gracefully, API first), then the stack."""
    from devctl.supervisor.control import stop_serve

    served = stop_serve(engine.data_dir)
    unconsumed = _unconsumed(engine) if served is not None else []
    result = engine.down(purge=purge)
    if served is not None:
        result.lines.insert(0, served)
    result.warnings.extend(unconsumed)
    return result


def _unconsumed(engine: Engine) -> list[str]:
    """What serve's consumers had not consumed yet, when the broker forgets it on stop.

    The consumers have committed and left by now, so their groups' lag is exactly
    what they will never see: said once, not silently dropped. Best effort: a broker
    that does not answer in time (or is down already) says nothing.
    """
    from devctl.consumers import CONSUMERS, consumer_group
    from devctl.errors import DevctlError, NotFound
    from devctl.streams.groups import GroupAdmin

    try:
        endpoints = engine.endpoints(("kafka",))
        if endpoints.caps.keeps_events:
            return []
        admin = GroupAdmin(endpoints, engine.settings)
    except DevctlError:
        return []
    admin.timeout = 3.0
    warnings = []
    for name in CONSUMERS:
        try:
            left = sum(row.lag for row in admin.lag(consumer_group(engine.settings, name)))
        except NotFound:
            continue  # this consumer never committed anything on this broker
        except Exception:  # a warning's lookup never stops `down`
            logging.getLogger("devctl.stack").debug("lag of %s not read", name, exc_info=True)
            continue
        if left:
            warnings.append(
                f"the {name} consumer had {left:,} events not yet consumed; the local "
                "broker keeps events in memory, so they are gone with it (let "
                "`devctl groups lag` reach 0 before `devctl down` to keep them)"
            )
    return warnings


def doctor_checks(engine: Engine | None) -> list[DoctorCheck]:
    """The engine's checks (none when the config did not load) and the Docker probe."""
    checks = list(engine.doctor()) if engine is not None else []
    checks.append(docker_check())
    return checks


def docker_check() -> DoctorCheck:
    """Docker is optional: only the docker engine needs it, so a miss is a warning."""
    from devctl.engines.base import DoctorCheck

    docker = shutil.which("docker")
    if docker is None:
        return DoctorCheck(
            "docker engine",
            False,
            "no docker client on PATH",
            "only needed for the docker engine",
            required=False,
        )
    try:
        out = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return DoctorCheck(
            "docker engine", False, f"docker info failed: {exc}", None, required=False
        )
    if out.returncode == 0 and out.stdout.strip():
        return DoctorCheck(
            "docker engine", True, f"reachable, server {out.stdout.strip()}", required=False
        )
    reason = (out.stderr.strip().splitlines() or ["no answer"])[-1]
    return DoctorCheck(
        "docker engine",
        False,
        f"not reachable: {reason}",
        "start Docker if you want the docker engine; local and external work without it",
        required=False,
    )
