"""The integration checks behind `devctl test`.

A check is one small function decorated with ``@check(group, name)``. It gets a
``CheckContext``, raises ``CheckFailed`` (or any exception) to fail, and registers
clean-up with ``ctx.defer`` so nothing is left behind. The first check of each
group may be a ``gate``: when it fails because the server is unreachable, the
rest of that group is skipped and `devctl test` exits 3.

Every check and every clean-up runs in a worker thread with a deadline
(``check_deadline``): one that has not finished by then is reported failed and
left behind (a daemon thread), so a hung server can never hang the run. Once a
server failed to answer, the groups that need it are skipped, and any later use
of it by a check (a command on ``ctx.redis``, or ``ctx.admin``) fails at once;
such a check is skipped rather than left to wait out its own timeouts or retry
for ever. A check can fail of a server that stops answering in ways no error
type tells (a timeout of its own, a delivery that never completes), so after any
failure the servers the run still needs are probed (one PING, one metadata
request, each within its timeout): one that does not answer is down from then
on, hung or dead, at the start of the run or in the middle. A server the engine
already knows is not running is down from the start.

Adding checks for a new area: write a module here and add it to CHECK_MODULES.
"""

from __future__ import annotations

import importlib
import re
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import redis

from devctl.clients.endpoints import Endpoints
from devctl.config.loader import Settings
from devctl.errors import KafkaUnavailable, RedisUnavailable, StackNotRunning
from devctl.events.markers import CHECK_TOPIC_PREFIX

CHECK_MODULES = (
    "devctl.checks.redis_checks",
    "devctl.checks.kafka_checks",
    "devctl.checks.event_checks",
    "devctl.checks.state_checks",
    "devctl.checks.api_checks",
    "devctl.checks.realtime_checks",
)


# The server each group's checks need first (the one its gate reaches). Checks that
# also use another server (the events checks use Redis for the idempotency guard)
# are found out when they touch it: see CheckContext.redis.
GROUP_SERVER = {"redis": "redis", "kafka": "kafka", "events": "kafka", "state": "redis"}
# Every server a group's checks may use: probed after one of them fails.
GROUP_USES = {
    "redis": ("redis",),
    "kafka": ("kafka",),
    "events": ("kafka", "redis"),
    "api": ("redis", "kafka"),
    "realtime": ("redis", "kafka"),
}
# Servers a group cannot pass without, when it has no GROUP_SERVER of its own: the api
# group's gate reaches the API, which needs both (and a database, which the API's own
# readiness reports). The group is skipped once one of them is down; a gate that fails
# for a reason of its own (the API) marks no server down.
GROUP_NEEDS = {"api": ("redis", "kafka"), "realtime": ("redis", "kafka")}

# A check gets this many times the longest configured timeout (Kafka request, or Redis
# connect + reply) before it is abandoned: checks wait for at most a few such timeouts
# each, and a healthy run takes well under a second per check.
DEADLINE_FACTOR = 4
DEADLINE_SLACK = 5.0


def check_deadline(settings: Settings) -> float:
    """Seconds a check (or a clean-up) may run before it is abandoned."""
    kafka = settings.kafka.request_timeout_ms / 1000
    redis_ = settings.redis.connect_timeout + settings.redis.socket_timeout
    return DEADLINE_FACTOR * max(kafka, redis_) + DEADLINE_SLACK


# A run removes what interrupted runs (SIGKILL, a crash, a lost machine) left behind
# once it is this old: a whole run takes seconds, a hung one is cut off by its timeouts
# well within this, so no live run is ever this old. Clocks of machines sharing a
# stack must agree to within it.
LEFTOVER_AGE = 600.0

# A run id carries its start time, so any later run can tell a leftover from the
# resources of a run still going: devctl-test-<unix seconds, 8 hex>-<8 random hex>.
# Before, it was devctl-test-<12 random hex>: those can only come from an older
# devctl, and are removed as leftovers whatever their age.
_RUN_ID = re.compile(
    re.escape(CHECK_TOPIC_PREFIX) + r"(?:(?P<started>[0-9a-f]{8})-[0-9a-f]{8}|[0-9a-f]{12})"
    r"(?![0-9a-f])"
)


def new_run_id(now: float | None = None) -> str:
    started = int(time.time() if now is None else now)
    return f"{CHECK_TOPIC_PREFIX}{started:08x}-{secrets.token_hex(4)}"


def is_leftover(name: str, now: float | None = None, max_age: float = LEFTOVER_AGE) -> bool:
    """Whether a topic, group or key name holds the run id of a run ``max_age`` old or more."""
    found = _RUN_ID.search(name)
    if found is None:
        return False
    if found["started"] is None:
        return True  # the old format: no start time, and no run of this devctl uses it
    started = int(found["started"], 16)
    return (time.time() if now is None else now) - started >= max_age


class CheckFailed(Exception):
    """A check's expectation was not met; the message is the reason shown."""


class CheckContext:
    """What a check needs: settings, endpoints, lazily made clients, a unique run id."""

    def __init__(
        self,
        settings: Settings,
        endpoints: Endpoints,
        deadline: float | None = None,
        *,
        api_url: str | None = None,
    ):
        self.settings = settings
        self.endpoints = endpoints
        # The API the api group drives; None: a running serve's, else one of its own.
        self.api_url = api_url
        self.run_id = new_run_id()
        self.deadline = check_deadline(settings) if deadline is None else deadline
        # Servers that did not answer earlier in this run -> why.
        self.down: dict[str, str] = {server: "not running" for server in endpoints.not_running}
        self._redis: redis.Redis | None = None
        self._admin: Any = None
        # (what it removes, the clean-up); `what` names it when it cannot run.
        self._cleanups: list[tuple[str, Callable[[], Any]]] = []
        self.current_check = ""

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            from devctl.clients.redis_client import make_redis

            client = make_redis(self.endpoints, self.settings)
            # Every command, pipeline and subscription takes a connection from the pool:
            # once Redis is known down, that fails at once, also for objects (a consumer
            # runtime, the state services) that were given this client earlier.
            pool = client.connection_pool
            connect = pool.get_connection

            def get_connection(*args: Any, **kwargs: Any) -> Any:
                self._fail_if_down("redis")
                return connect(*args, **kwargs)

            setattr(pool, "get_connection", get_connection)  # noqa: B010 - an instance override
            self._redis = client
        # Handing out the client is fine: a check that never sends a command (a consumer
        # runtime without the idempotency guard) does not need Redis.
        return self._redis

    def _fail_if_down(self, server: str) -> None:
        if server in self.down:
            error = RedisUnavailable if server == "redis" else KafkaUnavailable
            raise error(f"not sent: {server} did not answer earlier in this run")

    def probe(self, servers: Collection[str]) -> dict[str, str]:
        """The servers among ``servers`` (not already down) that do not answer now -> why.

        They are probed in parallel, each within its own timeout (Redis connect + reply,
        one Kafka metadata request) and the check deadline: a hung server costs one
        timeout, not one per check still to run.
        """
        wanted = [s for s in dict.fromkeys(servers) if s not in self.down]
        found: dict[str, str] = {}

        def one(server: str) -> None:
            try:
                if server == "redis":
                    self.redis.ping()
                else:
                    self.admin.list_topics(timeout=self.timeout)
            except Exception as exc:
                found[server] = f"stopped answering: {_describe(exc)}"

        workers = [
            threading.Thread(target=one, args=(s,), name=f"devctl probe {s}", daemon=True)
            for s in wanted
        ]
        for worker in workers:
            worker.start()
        limit = time.monotonic() + self.deadline
        for server, worker in zip(wanted, workers, strict=True):
            worker.join(max(0.0, limit - time.monotonic()))
            if worker.is_alive():
                found[server] = f"stopped answering: no answer within {self.deadline:g}s"
        return {s: found[s] for s in wanted if s in found}

    @property
    def admin(self) -> Any:
        self._fail_if_down("kafka")
        if self._admin is None:
            from devctl.clients.kafka_client import make_admin

            self._admin = make_admin(self.endpoints, self.settings)
        return self._admin

    @property
    def timeout(self) -> float:
        return self.settings.kafka.request_timeout_ms / 1000

    def key(self, name: str) -> str:
        """A Redis key unique to this run; deleted at the end."""
        key = f"{self.settings.redis.key_prefix}{self.run_id}:{name}"
        self.defer(lambda: self.redis.delete(key), what=f"Redis key {key}")
        return key

    def defer(self, cleanup: Callable[[], Any], what: str | None = None) -> None:
        """Run ``cleanup`` at the end of the run; ``what`` says what it removes."""
        if what is None:
            name = getattr(cleanup, "__name__", "<lambda>")
            what = f"clean-up {name}" if not name.startswith("<") else "a clean-up"
            if self.current_check:
                what += f" of check '{self.current_check}'"
        self._cleanups.append((what, cleanup))

    def close(self) -> list[str]:
        """Run every clean-up (newest first); return the ones that failed, each saying
        what was left behind."""
        problems = []
        interrupted: KeyboardInterrupt | None = None
        left = f"left behind under run id {self.run_id}"
        for what, cleanup in reversed(self._cleanups):
            try:
                finished, _ = within(cleanup, self.deadline, f"clean-up {what}")
                if not finished:
                    problems.append(f"{what}: no answer within {self.deadline:g}s; {left}")
            except KeyboardInterrupt as exc:
                # Ctrl-C or SIGTERM that lands during the clean-up: finish the others
                # first, then stop; a second one stops at once.
                if interrupted is not None:
                    raise
                interrupted = exc
                problems.append(f"{what}: interrupted; {left}")
            except Exception as exc:
                problems.append(f"{what}: {_describe(exc)}; {left}")
        self._cleanups.clear()
        if self._redis is not None:
            self._redis.close()
        if interrupted is not None:
            raise interrupted
        return problems


CheckFunc = Callable[[CheckContext], "str | None"]


@dataclass(frozen=True)
class Check:
    group: str
    name: str
    func: CheckFunc
    gate: bool = False


@dataclass
class CheckResult:
    group: str
    name: str
    status: str  # pass | fail | skip
    millis: float
    reason: str = ""
    detail: str = field(default="", repr=False)

    @property
    def passed(self) -> bool:
        return self.status == "pass"


REGISTRY: list[Check] = []


def check(group: str, name: str, *, gate: bool = False) -> Callable[[CheckFunc], CheckFunc]:
    """Register a check. The function may return a short note shown on success."""

    def decorate(func: CheckFunc) -> CheckFunc:
        REGISTRY.append(Check(group, name, func, gate))
        return func

    return decorate


def servers_used(checks: list[Check]) -> set[str]:
    """Every server some of ``checks`` may use."""
    return {s for c in checks for s in GROUP_USES.get(c.group, (GROUP_SERVER.get(c.group),)) if s}


def all_checks() -> list[Check]:
    for module in CHECK_MODULES:
        importlib.import_module(module)
    return list(REGISTRY)


@dataclass
class Report:
    results: list[CheckResult]
    unreachable: dict[str, str]  # group -> why its gate failed: the stack is not reachable
    cleanup_problems: list[str]
    seconds: float
    # server -> why: did not answer (hung or dead) at some point of the run
    down: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            all(r.status == "pass" for r in self.results)
            and not self.cleanup_problems
            and not self.down
        )


def run_checks(
    settings: Settings,
    endpoints: Endpoints,
    *,
    groups: list[str] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    checks: list[Check] | None = None,
    deadline: float | None = None,
    api_url: str | None = None,
) -> Report:
    """Run the checks (all registered ones unless ``checks``) in order; never hangs.

    ``deadline`` (default ``check_deadline(settings)``) bounds each check and clean-up.
    ``api_url``: the API the api group drives (default: a running serve's, else an
    instance the group starts and stops).
    """
    started = time.perf_counter()
    ctx = CheckContext(settings, endpoints, deadline, api_url=api_url)
    results: list[CheckResult] = []
    unreachable: dict[str, str] = {}
    chosen = [
        item
        for item in (all_checks() if checks is None else checks)
        if not groups or item.group in groups
    ]
    # A server known not to run counts only if these checks use it.
    used = servers_used(chosen)
    ctx.down = {s: why for s, why in ctx.down.items() if s in used}
    try:
        for index, item in enumerate(chosen):
            server = GROUP_SERVER.get(item.group)
            needed = _needs(item.group)
            missing = next((s for s in needed if s in ctx.down), None)
            if item.group in unreachable:
                result = CheckResult(
                    item.group, item.name, "skip", 0.0, f"{item.group} not reachable"
                )
            elif missing is not None:
                result = CheckResult(
                    item.group, item.name, "skip", 0.0, f"needs {missing}, not reachable"
                )
            else:
                known_down = set(ctx.down)
                ctx.current_check = item.name
                result, failed_server = _run_one(item, ctx)
                ctx.current_check = ""
                if result.detail == "unreachable":
                    failed_server = failed_server or server
                    if failed_server in known_down:
                        # It touched a server that had already failed: not a new failure.
                        result = CheckResult(
                            item.group,
                            item.name,
                            "skip",
                            result.millis,
                            f"needs {failed_server}, not reachable",
                        )
                    else:
                        if failed_server is not None:
                            ctx.down[failed_server] = result.reason
                        if item.gate:
                            unreachable[item.group] = result.reason
                elif result.status == "fail":
                    # Did it fail because a server stopped answering? Ask the servers
                    # this check and the ones still to run use, so those checks are
                    # skipped instead of each waiting out its own timeouts.
                    wanted = [*GROUP_USES.get(item.group, ()), *needed]
                    wanted += [s for later in chosen[index + 1 :] for s in _needs(later.group)]
                    silent = ctx.probe(wanted)
                    ctx.down.update(silent)
                    mine = [s for s in GROUP_USES.get(item.group, (server,)) if s in silent]
                    if mine:
                        result.reason += f" ({' and '.join(mine)} stopped answering)"
            results.append(result)
            if on_result:
                on_result(result)
    finally:
        problems = ctx.close()
    return Report(results, unreachable, problems, time.perf_counter() - started, dict(ctx.down))


def _needs(group: str) -> tuple[str, ...]:
    """The servers without which ``group`` is skipped."""
    server = GROUP_SERVER.get(group)
    return (server,) if server else GROUP_NEEDS.get(group, ())


def within(func: Callable[[], Any], seconds: float, name: str) -> tuple[bool, Any]:
    """``(True, func())`` if it returns within ``seconds``, re-raising what it raises;
    ``(False, None)`` if not: it is then left running in a daemon thread, which neither
    blocks the run nor the process's exit."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name=f"devctl {name}", daemon=True)
    worker.start()
    worker.join(seconds)  # Ctrl-C and SIGTERM still interrupt this wait
    if worker.is_alive():
        return False, None
    if "error" in outcome:
        raise outcome["error"]
    return True, outcome.get("value")


def _run_one(item: Check, ctx: CheckContext) -> tuple[CheckResult, str | None]:
    """The result of one check, and the server that did not answer if that is why it failed."""
    started = time.perf_counter()
    try:
        finished, note = within(lambda: item.func(ctx), ctx.deadline, f"check {item.name}")
        if not finished:
            reason = f"no result within {ctx.deadline:g}s: abandoned (is a server hung?)"
            # A gate that hangs means its server does not answer; another check may hang
            # for reasons of its own, so it only fails.
            detail = "unreachable" if item.gate else reason
            return CheckResult(item.group, item.name, "fail", _ms(started), reason, detail), None
        return CheckResult(item.group, item.name, "pass", _ms(started), note or ""), None
    except StackNotRunning as exc:
        server = (
            "redis"
            if isinstance(exc, RedisUnavailable)
            else "kafka"
            if isinstance(exc, KafkaUnavailable)
            else None
        )
        result = CheckResult(
            item.group, item.name, "fail", _ms(started), exc.message, "unreachable"
        )
        return result, server
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        result = CheckResult(
            item.group, item.name, "fail", _ms(started), f"Redis: {exc}", "unreachable"
        )
        return result, "redis"
    except CheckFailed as exc:
        return CheckResult(item.group, item.name, "fail", _ms(started), str(exc)), None
    except Exception as exc:
        # A C extension interrupted by Ctrl-C reports SystemError; let Ctrl-C win.
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        reason = _describe(exc)
        result = CheckResult(
            item.group, item.name, "fail", _ms(started), reason, traceback.format_exc()
        )
        return result, None


def _describe(exc: BaseException) -> str:
    """``Type: message``; a timeout raised without a message (a future's result) says so."""
    message = str(exc)
    if not message and isinstance(exc, TimeoutError):
        message = "no answer in time"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``1 key``, ``2 keys`` (the CLI has its own; the checks do not import the CLI)."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def expect(condition: bool, reason: str) -> None:
    """Fail the running check with ``reason`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(reason)
