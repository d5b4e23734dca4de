"""Message cache: one cache per conversation, atomic append, chronological reads, loader fills."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from devctl.state import StateServices
from devctl.state.messages import MessageCache


class History:
    """A stand-in message store, oldest first."""

    def __init__(self, count: int = 0):
        self.messages = [msg("a", "b", i) for i in range(count)]
        self.loads = 0

    def load(self, user_a: str, user_b: str, n: int) -> Sequence[dict[str, Any]]:
        self.loads += 1
        return self.messages[-n:]


def msg(sender: str, receiver: str, n: int) -> dict[str, Any]:
    return {"fromUserId": sender, "toUserId": receiver, "text": f"m{n}", "ts": n}


def texts(messages: Sequence[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in messages]


def test_both_directions_share_one_cache(state: StateServices) -> None:
    history = History(3)
    assert texts(state.messages.recent("b", "a", loader=history.load)) == ["m0", "m1", "m2"]
    assert state.messages.append("b", "a", msg("b", "a", 3)) is True
    assert state.messages.append("a", "b", msg("a", "b", 4)) is True
    assert texts(state.messages.recent("a", "b", loader=history.load)) == [
        "m0",
        "m1",
        "m2",
        "m3",
        "m4",
    ]
    assert state.messages.recent("a", "b") == state.messages.recent("b", "a")
    assert history.loads == 1
    assert len(list(state.client.scan_iter(match=f"{state.keys.prefix}*:messages"))) == 1


def test_append_is_trimmed_chronological_and_refreshes_ttl(
    make_state: Callable[..., StateServices],
) -> None:
    services = make_state(message_cache_size=5, message_cache_ttl=30)
    history = History(5)
    services.messages.recent("a", "b", loader=history.load)
    key = services.keys.conversation("a", "b")
    services.client.expire(key, 5)
    for n in range(5, 12):
        services.messages.append("a", "b", msg("a", "b", n))
    assert texts(services.messages.recent("a", "b")) == ["m7", "m8", "m9", "m10", "m11"]
    assert services.client.llen(key) == 5
    assert 25 < services.client.ttl(key) <= 30
    assert texts(services.messages.recent("b", "a", 2)) == ["m10", "m11"]


def test_append_to_a_missing_cache_does_not_create_a_partial_one(state: StateServices) -> None:
    assert state.messages.append("a", "b", msg("a", "b", 99)) is False
    assert not state.client.exists(state.keys.conversation("a", "b"))
    history = History(2)
    history.messages.append(msg("a", "b", 99))
    assert texts(state.messages.recent("a", "b", loader=history.load)) == ["m0", "m1", "m99"]


def test_a_fill_racing_an_append_is_dropped(state: StateServices) -> None:
    history = History(2)

    def racing_loader(a: str, b: str, n: int) -> Sequence[dict[str, Any]]:
        loaded = history.load(a, b, n)
        state.messages.append(a, b, msg(a, b, 2))  # a message is sent while we load
        return loaded

    assert texts(state.messages.recent("a", "b", loader=racing_loader)) == ["m0", "m1"]
    assert not state.client.exists(state.keys.conversation("a", "b"))  # not cached stale


def test_limit_above_the_cache_size_goes_to_the_loader(state: StateServices) -> None:
    history = History(80)
    assert len(state.messages.recent("a", "b", 200, loader=history.load)) == 80
    assert state.messages.recent("a", "b", 200) == []
    assert state.messages.recent("a", "b", 0, loader=history.load) == []


def test_miss_without_loader_is_empty_and_counted(state: StateServices) -> None:
    assert state.messages.recent("x", "y") == []
    stats = state.client.hgetall(state.keys.cache_stats())
    assert stats == {"messages:lookups": "1", "messages:misses": "1"}


def test_concurrent_appends_keep_exactly_the_last_n(state: StateServices) -> None:
    cache = MessageCache(state.client, state.keys, size=50, ttl=60)
    cache.recent("a", "b", loader=History(1).load)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: cache.append("a", "b", msg("a", "b", n)), range(1, 201)))
    kept = cache.recent("a", "b")
    assert len(kept) == 50
    assert len({m["text"] for m in kept}) == 50


def test_invalidate(state: StateServices) -> None:
    history = History(2)
    state.messages.recent("a", "b", loader=history.load)
    assert state.messages.invalidate("b", "a") is True
    assert state.messages.recent("a", "b") == []
    # The version was bumped, so a fill that started before the invalidate is dropped.
    assert state.client.get(state.keys.conversation_version("a", "b")) == "1"
