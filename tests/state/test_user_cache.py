"""User cache: cache-aside, TTL, invalidation, the email map, stampede protection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from devctl.state import StateServices


class Db:
    """A stand-in database: a dict, with a call counter and an optional delay."""

    def __init__(self, delay: float = 0.0):
        self.rows: dict[str, dict[str, Any]] = {}
        self.calls = 0
        self.delay = delay
        self.lock = threading.Lock()

    def load(self, user_id: str) -> dict[str, Any] | None:
        with self.lock:
            self.calls += 1
        time.sleep(self.delay)
        row = self.rows.get(user_id)
        return dict(row) if row else None


def test_miss_loads_then_hits(state: StateServices) -> None:
    db = Db()
    db.rows["42"] = {"_id": "42", "firstName": "Ada", "password": "$2b$hash"}
    assert state.user_cache.get("42", db.load) == {"_id": "42", "firstName": "Ada"}
    assert state.user_cache.get("42", db.load) == {"_id": "42", "firstName": "Ada"}
    assert db.calls == 1
    assert "password" not in (state.client.get(state.keys.user("42")) or "")
    stats = state.client.hgetall(state.keys.cache_stats())
    assert stats == {"user:lookups": "2", "user:misses": "1"}


def test_ttl_from_settings(make_state: Callable[..., StateServices]) -> None:
    services = make_state(user_cache_ttl=1)
    db = Db()
    db.rows["42"] = {"_id": "42", "firstName": "Ada"}
    services.user_cache.get("42", db.load)
    assert 0 < services.client.pttl(services.keys.user("42")) <= 1000
    time.sleep(1.1)
    services.user_cache.get("42", db.load)
    assert db.calls == 2


def test_invalidation_on_profile_change(state: StateServices) -> None:
    db = Db()
    db.rows["42"] = {"_id": "42", "firstName": "Ada", "emailId": "ada@example.com"}
    state.user_cache.get("42", db.load)
    state.user_cache.remember_email("Ada@Example.com", "42")
    db.rows["42"] = {"_id": "42", "firstName": "Augusta", "emailId": "aug@example.com"}
    assert state.user_cache.invalidate("42", "ada@example.com") is True
    assert state.user_cache.peek("42") is None
    assert state.client.get(state.keys.email("ada@example.com")) is None
    assert state.user_cache.get("42", db.load)["firstName"] == "Augusta"  # type: ignore[index]
    assert state.user_cache.invalidate("nobody") is False


def test_put_writes_through(state: StateServices) -> None:
    state.user_cache.put({"_id": "42", "firstName": "Ada", "password": "x"})
    assert state.user_cache.peek("42") == {"_id": "42", "firstName": "Ada"}


def test_a_fill_racing_an_invalidation_is_dropped(state: StateServices) -> None:
    """Load the old row, the profile changes meanwhile: the old row must not be cached."""

    def slow_stale_loader(user_id: str) -> dict[str, Any]:
        row = {"_id": user_id, "firstName": "Old"}
        state.user_cache.invalidate(user_id)  # the profile edit lands while we load
        return row

    assert state.user_cache.get("42", slow_stale_loader) == {"_id": "42", "firstName": "Old"}
    assert state.user_cache.peek("42") is None
    assert not state.client.exists(state.keys.user_lock("42"))


def test_unknown_user_is_not_cached(state: StateServices) -> None:
    db = Db()
    assert state.user_cache.get("ghost", db.load) is None
    assert not state.client.exists(state.keys.user("ghost"))
    # The lock briefly says "absent", so the loader's waiters do not each ask again...
    assert 0 < state.client.pttl(state.keys.user_lock("ghost")) <= 250
    assert state.user_cache.get("ghost", db.load) is None
    assert db.calls == 1
    time.sleep(0.3)  # ...and then it is gone: an unknown user is not cached
    assert state.user_cache.get("ghost", db.load) is None
    assert db.calls == 2
    db.rows["ghost"] = {"_id": "ghost"}
    state.user_cache.invalidate("ghost")  # a write clears the marker at once
    assert state.user_cache.get("ghost", db.load) == {"_id": "ghost"}


# 2.5 s: a database slower than the old fixed 2 s wait; waiters wait for as long as
# the loader holds its lock (5 s).
@pytest.mark.parametrize("delay", [0.2, 2.5], ids=["fast-db", "slower-than-old-wait"])
def test_stampede_loads_once(state: StateServices, delay: float) -> None:
    db = Db(delay=delay)
    db.rows["hot"] = {"_id": "hot", "firstName": "Popular"}
    barrier = threading.Barrier(20)

    def reader(_: int) -> dict[str, Any] | None:
        barrier.wait()
        return state.user_cache.get("hot", db.load)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(reader, range(20)))
    assert db.calls == 1
    assert all(r == {"_id": "hot", "firstName": "Popular"} for r in results)


def test_loader_failure_releases_the_lock(state: StateServices) -> None:
    def broken(user_id: str) -> dict[str, Any]:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        state.user_cache.get("42", broken)
    assert not state.client.exists(state.keys.user_lock("42"))
    db = Db()
    db.rows["42"] = {"_id": "42"}
    assert state.user_cache.get("42", db.load) == {"_id": "42"}


def test_email_mapping_is_case_insensitive_and_cached(state: StateServices) -> None:
    calls: list[str] = []

    def by_email(email: str) -> str | None:
        calls.append(email)
        return {"ada@example.com": "42"}.get(email)

    assert state.user_cache.user_id_for_email("  Ada@Example.COM ", by_email) == "42"
    assert state.user_cache.user_id_for_email("ada@example.com", by_email) == "42"
    assert calls == ["ada@example.com"]
    assert state.user_cache.user_id_for_email("nobody@example.com", by_email) is None
    state.user_cache.forget_email("ADA@example.com")
    state.user_cache.user_id_for_email("ada@example.com", by_email)
    assert calls == ["ada@example.com", "nobody@example.com", "ada@example.com"]


def test_waiters_take_over_when_the_loader_fails(state: StateServices) -> None:
    db = Db(delay=0.1)
    db.rows["42"] = {"_id": "42"}
    calls: list[int] = []

    def flaky(user_id: str) -> dict[str, Any] | None:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.1)
            raise RuntimeError("database hiccup")
        return db.load(user_id)

    barrier = threading.Barrier(10)

    def reader(_: int) -> Any:
        barrier.wait()
        try:
            return state.user_cache.get("42", flaky)
        except RuntimeError as exc:
            return exc

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(reader, range(10)))
    assert len(calls) == 2  # the failed leader, then one waiter that took over
    assert sum(isinstance(r, RuntimeError) for r in results) == 1
    assert results.count({"_id": "42"}) == 9


def test_an_email_lookup_racing_an_invalidation_is_not_cached(state: StateServices) -> None:
    """Read the old mapping, the email changes meanwhile: the old mapping must not come back."""

    def stale_lookup(email: str) -> str:
        state.user_cache.invalidate("42", email)  # the profile edit lands while we look up
        return "42"

    assert state.user_cache.user_id_for_email("old@example.com", stale_lookup) == "42"
    assert not state.client.exists(state.keys.email("old@example.com"))
    state.user_cache.remember_email("new@example.com", "42")

    def late(email: str) -> str:
        state.user_cache.forget_email(email)
        return "7"

    state.user_cache.forget_email("new@example.com")
    assert state.user_cache.user_id_for_email("new@example.com", late) == "7"
    assert state.client.get(state.keys.email("new@example.com")) is None
