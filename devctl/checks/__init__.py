"""The integration checks behind `devctl test`.

A check is one small function decorated with ``@check(group, name)``. It gets a
``CheckContext``, raises ``CheckFailed`` (or any exception) to fail, and registers
clean-up with ``ctx.defer`` so nothing is left behind. The first check of each
group may be a ``gate``: when it fails because the server is unreachable, the
rest of that group is skipped and `devctl test` exits 3.

Adding checks for a new area: write a module here and add it to CHECK_MODULES.
"""

from __future__ import annotations

import importlib
import re
import secrets
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from devctl.clients.endpoints import Endpoints
from devctl.config.loader import Settings
from devctl.errors import StackNotRunning
from devctl.events.markers import CHECK_TOPIC_PREFIX

CHECK_MODULES = (
    "devctl.checks.redis_checks",
    "devctl.checks.kafka_checks",
    "devctl.checks.event_checks",
    "devctl.checks.state_checks",
)


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

    def __init__(self, settings: Settings, endpoints: Endpoints):
        self.settings = settings
        self.endpoints = endpoints
        self.run_id = new_run_id()
        self._redis: redis.Redis | None = None
        self._admin: Any = None
        self._cleanups: list[Callable[[], Any]] = []

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            from devctl.clients.redis_client import make_redis

            self._redis = make_redis(self.endpoints, self.settings)
        return self._redis

    @property
    def admin(self) -> Any:
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
        self.defer(lambda: self.redis.delete(key))
        return key

    def defer(self, cleanup: Callable[[], Any]) -> None:
        self._cleanups.append(cleanup)

    def close(self) -> list[str]:
        """Run every clean-up (newest first); return the ones that failed."""
        problems = []
        interrupted: KeyboardInterrupt | None = None
        for cleanup in reversed(self._cleanups):
            name = getattr(cleanup, "__name__", "cleanup")
            try:
                cleanup()
            except KeyboardInterrupt as exc:
                # Ctrl-C or SIGTERM that lands during the clean-up: finish the others
                # first, then stop; a second one stops at once.
                if interrupted is not None:
                    raise
                interrupted = exc
                problems.append(f"{name}: interrupted")
            except Exception as exc:
                problems.append(f"{name}: {exc}")
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

    @property
    def ok(self) -> bool:
        return all(r.status == "pass" for r in self.results) and not self.cleanup_problems


def run_checks(
    settings: Settings,
    endpoints: Endpoints,
    *,
    groups: list[str] | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
) -> Report:
    started = time.perf_counter()
    ctx = CheckContext(settings, endpoints)
    results: list[CheckResult] = []
    unreachable: dict[str, str] = {}
    try:
        for item in all_checks():
            if groups and item.group not in groups:
                continue
            if item.group in unreachable:
                result = CheckResult(
                    item.group, item.name, "skip", 0.0, f"{item.group} not reachable"
                )
            else:
                result = _run_one(item, ctx)
                if item.gate and result.status == "fail" and result.detail == "unreachable":
                    unreachable[item.group] = result.reason
            results.append(result)
            if on_result:
                on_result(result)
    finally:
        problems = ctx.close()
    return Report(results, unreachable, problems, time.perf_counter() - started)


def _run_one(item: Check, ctx: CheckContext) -> CheckResult:
    started = time.perf_counter()
    try:
        note = item.func(ctx)
        return CheckResult(item.group, item.name, "pass", _ms(started), note or "")
    except StackNotRunning as exc:
        return CheckResult(item.group, item.name, "fail", _ms(started), exc.message, "unreachable")
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return CheckResult(
            item.group, item.name, "fail", _ms(started), f"Redis: {exc}", "unreachable"
        )
    except CheckFailed as exc:
        return CheckResult(item.group, item.name, "fail", _ms(started), str(exc))
    except Exception as exc:
        # A C extension interrupted by Ctrl-C reports SystemError; let Ctrl-C win.
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        reason = f"{type(exc).__name__}: {exc}"
        return CheckResult(
            item.group, item.name, "fail", _ms(started), reason, traceback.format_exc()
        )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def expect(condition: bool, reason: str) -> None:
    """Fail the running check with ``reason`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(reason)
