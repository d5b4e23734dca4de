"""Operations as plans: each operation of the Redis domain is written once, without I/O.

A plan is a generator. It yields requests (``Command``, ``Eval``, ``Pipeline``,
``Call``, ``Sleep``), receives each one's reply and returns the operation's result:

    def peek(self, user_id: str) -> Plan[dict[str, Any] | None]:
        cached = yield cmd("get", self.keys.user(user_id))
        return json.loads(cached) if cached is not None else None

An executor runs it: ``SyncExecutor`` (``devctl.state._redis``) with ``redis.Redis``
for the CLI, ``AsyncExecutor`` (``devctl.state.aio``) with ``redis.asyncio.Redis``
for the API. Both send the same commands, so the two faces cannot drift apart, and
a multi-step operation (a lock, a wait, a loader, a retry) stays one definition:
``yield from`` composes plans. An error of a request (an unreachable Redis, a
failing loader) is thrown into the plan at its ``yield``, so ``try`` in a plan works.

This module imports no Redis client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

R = TypeVar("R")


class Script:
    """A Lua script, run by EVALSHA and loaded on demand (again after a server restart)."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Eval:
        """The request that runs this script on ``keys`` with ``args``."""
        return Eval(self, tuple(keys), tuple(args))


# Requests are made on every call of the hot paths (validate, a cache hit), so they
# are plain slotted dataclasses: a frozen one costs ~0.3 us more to build. Treat
# them as values all the same: nothing changes a request once it is yielded.


@dataclass(slots=True)
class Command:
    """One command, named as the redis-py method that sends it (``get``, ``hgetall``...).

    The method, not the raw command, so its reply is parsed as that method parses it
    (``hgetall`` -> dict, ``set(nx=True)`` -> bool or None), alike in both clients.
    """

    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Eval:
    """A script call (EVALSHA; SCRIPT LOAD and once more if the server lost it)."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[Any, ...]


@dataclass(slots=True)
class Pipeline:
    """Commands and script calls sent together: one round trip; the reply is their list."""

    steps: tuple[Command | Eval, ...]
    transaction: bool = False  # MULTI/EXEC around them


@dataclass(slots=True)
class Call:
    """Call a function the caller supplied (a database loader); the reply is its result.

    The async executor awaits the result when it is awaitable, so the API passes
    ``async def`` loaders and the CLI plain ones.
    """

    func: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(slots=True)
class Sleep:
    """Wait (``time.sleep`` or ``asyncio.sleep``); the reply is None."""

    seconds: float


Request: TypeAlias = Command | Eval | Pipeline | Call | Sleep
Plan: TypeAlias = Generator[Request, Any, R]


def cmd(name: str, *args: Any, **kwargs: Any) -> Command:
    """``cmd("set", key, value, px=1000)``: the command redis-py's ``set`` sends."""
    return Command(name, args, kwargs)


def pipeline(*steps: Command | Eval, transaction: bool = False) -> Pipeline:
    return Pipeline(steps, transaction)


def scripts_of(steps: Sequence[Command | Eval]) -> list[Script]:
    """The distinct scripts a pipeline calls, to load them when the server lost them."""
    found: dict[str, Script] = {}
    for step in steps:
        if isinstance(step, Eval):
            found.setdefault(step.script.sha, step.script)
    return list(found.values())
