"""GCRA rate limits: exact under concurrency, retry-after, tiers, config, always an expiry."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from devctl.errors import ConfigError, UsageError
from devctl.state import StateServices
from devctl.state.ratelimit import DEFAULT_POLICIES, Policy, load_policies


def test_1000_concurrent_checks_against_a_limit_of_100_allow_exactly_100(
    state: StateServices,
) -> None:
    policy = Policy("burst", limit=100, period=3600)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda _: state.ratelimits.check(policy, "hot"), range(1000)))
    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 100
    assert sorted(r.remaining for r in allowed) == list(range(100))  # each slot handed out once
    assert all(r.retry_after > 0 for r in results if not r.allowed)


def test_boundary_remaining_and_retry_after(state: StateServices) -> None:
    policy = Policy("b", limit=4, period=2.0)  # one every 0.5 s
    results = [state.ratelimits.check(policy, "k") for _ in range(5)]
    assert [r.allowed for r in results] == [True, True, True, True, False]
    assert [r.remaining for r in results[:4]] == [3, 2, 1, 0]
    assert [r.used for r in results[:4]] == [1, 2, 3, 4]
    denied = results[4]
    assert 0.45 < denied.retry_after <= 0.5
    assert 1.9 < denied.reset_after <= 2.0
    time.sleep(denied.retry_after + 0.02)
    assert state.ratelimits.check(policy, "k").allowed
    assert not state.ratelimits.check(policy, "k").allowed


def test_the_bucket_key_always_has_an_expiry(state: StateServices) -> None:
    policy = Policy("exp", limit=10, period=60)
    state.ratelimits.check(policy, "k")
    key = state.keys.ratelimit("exp", "k")
    assert 0 < state.client.pttl(key) <= 6_000  # one emission interval
    for _ in range(9):
        state.ratelimits.check(policy, "k")
    assert 54_000 < state.client.pttl(key) <= 60_000


def test_short_period_replenishes_fully(state: StateServices) -> None:
    policy = Policy("short", limit=3, period=0.3)
    assert all(state.ratelimits.check(policy, "k").allowed for _ in range(3))
    assert not state.ratelimits.check(policy, "k").allowed
    time.sleep(0.35)
    assert not state.client.exists(state.keys.ratelimit("short", "k"))
    assert all(state.ratelimits.check(policy, "k").allowed for _ in range(3))


def test_peek_does_not_consume_and_reset_empties(state: StateServices) -> None:
    state.ratelimits.check("login_email", "Ada@Example.com")
    peeked = state.ratelimits.peek("login_email", "ada@example.com")  # same bucket: normalised
    assert (peeked.allowed, peeked.used, peeked.remaining) == (True, 1, 4)
    assert state.ratelimits.peek("login_email", "ada@example.com").used == 1
    for _ in range(4):
        state.ratelimits.check("login_email", "ada@example.com")
    full = state.ratelimits.peek("login_email", "ada@example.com")
    assert not full.allowed and full.remaining == 0 and full.retry_after > 170
    assert state.ratelimits.reset("login_email", "ADA@example.com") is True
    assert state.ratelimits.peek("login_email", "ada@example.com").used == 0
    assert state.ratelimits.reset("login_email", "ada@example.com") is False


def test_connection_requests_per_day_by_tier(state: StateServices) -> None:
    free = [state.ratelimits.check("connection_request", "u1", tier="free") for _ in range(11)]
    assert [r.allowed for r in free].count(True) == 10 and not free[10].allowed
    assert free[10].limit == 10 and free[10].used == 10
    assert free[10].retry_after > 8000  # one request per 2.4 h after the daily burst
    silver = [state.ratelimits.check("connection_request", "u2", tier="silver") for _ in range(101)]
    assert [r.allowed for r in silver].count(True) == 100
    gold = [state.ratelimits.check("connection_request", "u3", tier="gold") for _ in range(500)]
    assert all(r.allowed and r.limit is None for r in gold)
    assert not state.client.exists(state.keys.ratelimit("connection_request", "u3"))
    assert state.ratelimits.check("connection_request", "u4").limit == 10  # default tier: free
    with pytest.raises(UsageError):
        state.ratelimits.check("connection_request", "u1", tier="platinum")


def test_unknown_policy_is_a_usage_error(state: StateServices) -> None:
    with pytest.raises(UsageError, match="unknown rate-limit policy"):
        state.ratelimits.check("nope", "k")


def test_default_policies() -> None:
    assert set(DEFAULT_POLICIES) == {
        "login_ip",
        "login_email",
        "signup_ip",
        "api_user",
        "connection_request",
        "chat_message",
    }
    assert DEFAULT_POLICIES["connection_request"].tiers == {"free": 10, "silver": 100, "gold": None}
    assert DEFAULT_POLICIES["connection_request"].period == 86400


def test_policies_from_config(make_state: Callable[..., StateServices]) -> None:
    services = make_state(
        rate_limits={
            "login_ip": {"limit": 2},
            "connection_request": {"tiers": {"free": 1, "silver": 5, "gold": None}},
            "search": {"limit": 3, "period": 10, "subject": "user"},
        }
    )
    limits = services.ratelimits.policies
    assert limits["login_ip"].limit == 2 and limits["login_ip"].period == 900
    assert limits["search"].limit == 3 and limits["search"].period == 10
    assert [services.ratelimits.check("login_ip", "1.2.3.4").allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert services.ratelimits.check("connection_request", "u", tier="free").limit == 1


@pytest.mark.parametrize(
    "config",
    [
        {"login_ip": 5},
        {"login_ip": {"limit": 0}},
        {"login_ip": {"limit": "ten"}},
        {"login_ip": {"period": -1}},
        {"login_ip": {"burst": 3}},
        {"brand_new": {"period": 60}},
        {"connection_request": {"tiers": {"free": 1.5}}},
        {"connection_request": {"default_tier": "platinum"}},
        {"connection_request": {"tiers": {"basic": 1, "pro": 5}}},  # inherited 'free' is gone
        {"login_ip": {"default_tier": "free"}},
        {"login_ip": {"subject": "ipp"}},
        {"search": {"limit": 3, "period": 60, "subject": None}},
        # Out of the bounds GCRA handles exactly (defect: accepted, then OverflowError or
        # a negative remaining when a bucket was checked).
        {"login_ip": {"period": float("inf")}},
        {"login_ip": {"period": float("nan")}},
        {"login_ip": {"period": 1.0e20}},
        {"login_ip": {"period": 31_536_001}},  # over a year
        {"login_ip": {"period": 0.000001}},  # under a millisecond
        {"login_ip": {"limit": 99999999999999999999, "period": 60}},
        {"login_ip": {"limit": 1_000_000_001, "period": 86400}},
        {"login_ip": {"limit": 2000, "period": 0.001}},  # an emission interval under 1 us
        {"connection_request": {"tiers": {"free": 10**12}}},
        {"connection_request": {"tiers": {"free": 10}, "period": 0.0001}},
    ],
)
def test_bad_policy_config_is_a_config_error(config: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"state\.rate_limits"):
        load_policies(config)


def test_an_empty_subject_is_a_usage_error(state: StateServices) -> None:
    for subject in ("", "  "):
        with pytest.raises(UsageError, match="must not be empty"):
            state.ratelimits.peek("login_ip", subject)
        with pytest.raises(UsageError, match="must not be empty"):
            state.ratelimits.reset("login_ip", subject)
    with pytest.raises(UsageError, match="must not be empty"):
        state.ratelimits.check("connection_request", " ", tier="gold")  # even without Redis


@pytest.mark.parametrize(
    ("limit", "period"), [(1, 0.001), (1000, 0.001), (1_000_000_000, 31_536_000), (1, 31_536_000)]
)
def test_policies_at_the_bounds_are_exact(state: StateServices, limit: int, period: float) -> None:
    policies = load_policies({"edge": {"limit": limit, "period": period}})
    first = state.ratelimits.check(policies["edge"], "k")
    assert first.allowed and first.remaining == limit - 1 and first.used == 1
    assert 0 < first.reset_after <= period


def test_a_policy_built_in_code_out_of_bounds_is_refused(state: StateServices) -> None:
    with pytest.raises(UsageError, match="period"):
        state.ratelimits.peek(Policy("inf", 5, float("inf")), "k")
