"""`sessions count` counts over a plain socket (PlainRedis): the same answers and the
same errors as Sessions.count over redis-py."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devctl.clients.endpoints import Endpoints
from devctl.clients.redis_client import make_redis
from devctl.config.loader import Settings
from devctl.engines.local import LocalEngine
from devctl.errors import RedisUnavailable
from devctl.state import count_sessions, from_settings
from devctl.state.keys import KeySchema


def _with_prefix(settings: Settings, prefix: str) -> Settings:
    redis = dataclasses.replace(settings.redis, key_prefix=prefix)
    return dataclasses.replace(settings, config=dataclasses.replace(settings.config, redis=redis))


def _with_db(endpoints: Endpoints, db: int) -> Endpoints:
    return dataclasses.replace(
        endpoints, redis_url=endpoints.redis_url.rsplit("/", 1)[0] + f"/{db}"
    )


WriteSessions = Callable[..., None]


@pytest.fixture
def write_sessions(stack: Any) -> Iterator[WriteSessions]:
    """Writes session keys (per user, how many) under a prefix; removes them afterwards."""
    written: list[tuple[str, int]] = []

    def write(prefix: str, per_user: dict[str, int], db: int = 0) -> None:
        written.append((prefix, db))
        keys = KeySchema(prefix)
        with make_redis(_with_db(stack.endpoints, db), stack.settings) as client:
            pipe = client.pipeline(transaction=False)
            for user, n in per_user.items():
                for i in range(n):
                    sid = hashlib.sha256(f"{user}-{i}".encode()).hexdigest()
                    pipe.set(keys.session(user, sid), "{}", ex=300)
                pipe.set(keys.user(user), "{}", ex=300)  # not a session: never counted
            pipe.execute()

    yield write
    for prefix, db in written:
        with make_redis(_with_db(stack.endpoints, db), stack.settings) as client:
            found = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if found:
                client.delete(*found)


def _redis_py_count(settings: Settings, endpoints: Endpoints) -> tuple[int, int]:
    with from_settings(settings, endpoints) as state:
        return state.sessions.count()


def test_counts_as_sessions_count_does(
    stack: Any, unique: str, write_sessions: WriteSessions
) -> None:
    prefix = f"t{unique}:"
    settings = _with_prefix(stack.settings, prefix)
    # More keys than one SCAN page (COUNT 1000), ids that need escaping in key names.
    write_sessions(prefix, {"42": 1500, "a:b}c": 3, "ünï": 1})
    assert count_sessions(settings, stack.endpoints) == (1504, 3)
    assert _redis_py_count(settings, stack.endpoints) == (1504, 3)
    assert count_sessions(_with_prefix(stack.settings, f"x{unique}:"), stack.endpoints) == (0, 0)


def test_counts_in_the_database_of_the_url(
    stack: Any, unique: str, write_sessions: WriteSessions
) -> None:
    prefix = f"t{unique}:"
    settings = _with_prefix(stack.settings, prefix)
    write_sessions(prefix, {"7": 2}, db=3)
    assert count_sessions(settings, _with_db(stack.endpoints, 3)) == (2, 1)
    assert count_sessions(settings, stack.endpoints) == (0, 0)


@pytest.mark.parametrize(
    "endpoints",
    [
        lambda stack: Endpoints("external", "redis://127.0.0.1:1/0", ""),
        lambda stack: Endpoints(
            "local", stack.endpoints.redis_url, "", not_running=("redis",), caps=LocalEngine.caps
        ),
        lambda stack: _with_db(stack.endpoints, 99999),
    ],
    ids=["refused", "not-running", "no-such-db"],
)
def test_fails_as_sessions_count_does(stack: Any, endpoints: Callable[[Any], Endpoints]) -> None:
    where = endpoints(stack)

    def failure(count: Callable[[Settings, Endpoints], tuple[int, int]]) -> tuple[str, str]:
        with pytest.raises(Exception) as caught:
            count(stack.settings, where)
        exc = caught.value
        # An error reply redis-py does not translate: a ResponseError either way.
        return type(exc).__name__, exc.message if isinstance(exc, RedisUnavailable) else str(exc)

    assert failure(count_sessions) == failure(_redis_py_count)


def test_sessions_count_imports_no_redis_py(stack: Any) -> None:
    code = (
        "import sys\n"
        "from devctl.cli.main import main\n"
        "try:\n"
        "    main(['sessions', 'count', '--json'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("[]"), result.stdout
