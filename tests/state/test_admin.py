"""Operator views: key counts and cache stats in one SCAN pass."""

from __future__ import annotations

from typing import Any

import pytest

from devctl.state import StateServices
from devctl.state.admin import cache_stats, key_counts
from devctl.state.keys import KINDS


def test_key_counts_walk_the_keyspace_once(
    state: StateServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    state.sessions.create("1")
    state.sessions.create("2")
    state.user_cache.put({"_id": "1"})
    state.user_cache.remember_email("a@b.c", "1")
    state.ratelimits.check("login_ip", "::1")
    passes: list[Any] = []
    real_scan_iter = state.client.scan_iter

    def counting_scan_iter(*args: Any, **kwargs: Any) -> Any:
        passes.append(kwargs.get("match"))
        return real_scan_iter(*args, **kwargs)

    monkeypatch.setattr(state.client, "scan_iter", counting_scan_iter)
    counts = key_counts(state)
    assert passes == [f"{state.keys.prefix}*"]
    assert set(counts) == set(KINDS)
    assert counts["session"] == 2 and counts["sessions_index"] == 2
    assert counts["user"] == 1 and counts["user_version"] == 1
    assert counts["email"] == 1 and counts["email_version"] == 1
    assert counts["ratelimit"] == 1 and counts["messages"] == 0
    passes.clear()
    assert cache_stats(state).keys == counts
    assert len(passes) == 1
