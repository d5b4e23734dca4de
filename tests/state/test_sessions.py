"""Sessions against a real Valkey: hashing at rest, one round trip, expiry, sliding, revocation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from devctl.errors import EXIT_USAGE
from devctl.state import StateServices
from devctl.state.sessions import PREFIX_CHARS, parse_token, session_id
from devctl.state.validate import InvalidArgument


def test_token_is_random_256_bits_and_names_its_user(state: StateServices) -> None:
    a = state.sessions.create("42")
    b = state.sessions.create("42")
    version, secret, _ = a.token.split(".")
    assert version == "dc1" and len(secret) == 43  # 32 bytes, base64url without padding
    assert a.token != b.token
    assert parse_token(a.token) == "42"
    assert a.info.session_id == session_id(a.token) != a.token
    assert a.info.token_prefix == a.token[:PREFIX_CHARS]
    assert a.token not in repr(a) and secret not in repr(a)


def test_only_a_hash_of_the_token_is_stored(state: StateServices) -> None:
    new = state.sessions.create("42", ip="10.0.0.1", user_agent="pytest")
    secret = new.token.split(".")[1]
    for key in state.client.scan_iter(match=f"{state.keys.prefix}*"):
        dumped = state.client.dump(key) or b""
        assert secret[PREFIX_CHARS - 4 :].encode() not in dumped, key
    stored = json.loads(state.client.get(state.keys.session("42", new.info.session_id)) or "")
    assert stored["ip"] == "10.0.0.1" and stored["ua"] == "pytest" and stored["user"] == "42"


def test_validate_returns_session_and_cached_user_in_one_round_trip(
    state: StateServices, round_trips: Callable[[], Any]
) -> None:
    state.user_cache.put({"_id": "42", "firstName": "Ada", "password": "secret-hash"})
    new = state.sessions.create("42", ip="1.2.3.4")
    state.sessions.validate(new.token)  # loads the script once
    with round_trips() as sent:
        valid = state.sessions.validate(new.token)
    assert sent.round_trips == 1 and sent.commands == ["MGET"]
    assert valid is not None
    assert valid.session.user_id == "42" and valid.session.ip == "1.2.3.4"
    assert valid.user == {"_id": "42", "firstName": "Ada"}


def test_validate_reports_a_cache_miss_as_no_user(state: StateServices) -> None:
    new = state.sessions.create("7")
    valid = state.sessions.validate(new.token)
    assert valid is not None and valid.user is None


def test_malformed_tampered_and_foreign_tokens_are_rejected(state: StateServices) -> None:
    new = state.sessions.create("42")
    version, secret, user = new.token.split(".")
    other = state.sessions.create("43")
    forged = f"{version}.{secret}.{other.token.split('.')[2]}"  # 42's secret claiming user 43
    for bad in [
        "",
        "garbage",
        "dc1.x.y",
        new.token[:-1],
        f"dc2.{secret}.{user}",
        forged,
        f"{version}.{secret[:-1]}{'B' if secret.endswith('A') else 'A'}.{user}",
    ]:
        assert state.sessions.validate(bad) is None, bad
    assert state.sessions.validate(new.token) is not None


def test_sliding_validation_is_one_round_trip_too(
    make_state: Callable[..., StateServices], round_trips: Callable[[], Any]
) -> None:
    sliding = make_state(session_sliding=True)
    new = sliding.sessions.create("42")
    sliding.sessions.validate(new.token)
    with round_trips() as sent:
        assert sliding.sessions.validate(new.token) is not None
    assert sent.round_trips == 1 and sent.commands == ["EVALSHA"]


def test_scripts_survive_a_script_flush(make_state: Callable[..., StateServices]) -> None:
    state = make_state(session_sliding=True)
    new = state.sessions.create("42")
    state.client.script_flush()
    assert state.sessions.validate(new.token) is not None
    state.client.script_flush()
    assert state.presence.bulk_status(["42"])["42"].online is False


def test_short_ttl_expires_and_is_rejected_at_once(state: StateServices) -> None:
    new = state.sessions.create("42", ttl=0.25)
    assert 0 < state.client.pttl(state.keys.session("42", new.info.session_id)) <= 250
    assert state.sessions.validate(new.token) is not None
    time.sleep(0.3)
    assert state.sessions.validate(new.token) is None
    assert state.sessions.list_for_user("42") == []
    assert state.client.zcard(state.keys.sessions_index("42")) == 0  # pruned by list


def test_default_ttl_comes_from_settings(make_state: Callable[..., StateServices]) -> None:
    services = make_state(session_ttl=120)
    new = services.sessions.create("42")
    ttl_ms = services.client.pttl(services.keys.session("42", new.info.session_id))
    assert 119_000 < ttl_ms <= 120_000
    assert abs(new.info.expires_at - new.info.created_at - 120) < 0.01
    assert abs(new.info.expires_in - 120) < 2


def test_sliding_expiry_extends_each_validation(make_state: Callable[..., StateServices]) -> None:
    sliding = make_state(session_sliding=True)
    new = sliding.sessions.create("42", ttl=0.6)
    for _ in range(4):  # 4 x 0.25 s = 1 s, well past the 0.6 s lifetime
        time.sleep(0.25)
        valid = sliding.sessions.validate(new.token)
        assert valid is not None
    assert sliding.client.pttl(sliding.keys.session("42", new.info.session_id)) > 500
    # inspect() never slides: left alone, the session ends.
    time.sleep(0.3)
    assert sliding.sessions.inspect(new.token) is not None
    time.sleep(0.4)
    assert sliding.sessions.validate(new.token) is None


def test_fixed_expiry_does_not_slide(state: StateServices) -> None:
    new = state.sessions.create("42", ttl=0.5)
    time.sleep(0.3)
    assert state.sessions.validate(new.token) is not None
    assert state.client.pttl(state.keys.session("42", new.info.session_id)) <= 200
    time.sleep(0.25)
    assert state.sessions.validate(new.token) is None


def test_revoke_one_and_revoke_all(state: StateServices) -> None:
    first, second, third = (state.sessions.create("42") for _ in range(3))
    bystander = state.sessions.create("43")
    assert state.sessions.revoke(first.token) is True
    assert state.sessions.revoke(first.token) is False
    assert state.sessions.validate(first.token) is None
    assert {s.session_id for s in state.sessions.list_for_user("42")} == {
        second.info.session_id,
        third.info.session_id,
    }
    assert state.sessions.revoke_id("42", second.info.session_id) is True
    assert state.sessions.revoke_all("42") == 1
    assert state.sessions.validate(third.token) is None
    assert state.sessions.list_for_user("42") == []
    assert not state.client.exists(state.keys.sessions_index("42"))
    assert state.sessions.validate(bystander.token) is not None
    assert state.sessions.revoke_all("nobody") == 0


def test_list_for_user_is_newest_first_with_metadata(state: StateServices) -> None:
    old = state.sessions.create("42", ip="1.1.1.1", user_agent="old")
    time.sleep(0.01)
    new = state.sessions.create("42", ip="2.2.2.2", user_agent="new")
    listed = state.sessions.list_for_user("42")
    assert [s.session_id for s in listed] == [new.info.session_id, old.info.session_id]
    assert listed[0].user_agent == "new" and listed[1].ip == "1.1.1.1"


def test_index_keeps_the_longest_expiry(state: StateServices) -> None:
    state.sessions.create("42", ttl=100)
    state.sessions.create("42", ttl=1)
    assert state.client.pttl(state.keys.sessions_index("42")) > 99_000


def test_list_all_and_count(state: StateServices) -> None:
    for user in ("a", "b", "b"):
        state.sessions.create(user)
    assert state.sessions.count() == (3, 2)
    assert len(state.sessions.list_all(limit=2)) == 2
    assert {s.user_id for s in state.sessions.list_all()} == {"a", "b"}


def test_list_all_reads_only_as_many_sessions_as_asked(
    state: StateServices, round_trips: Callable[[], Any]
) -> None:
    made = [state.sessions.create(f"user-{n}", ttl=60) for n in range(3)]
    payload = state.client.get(state.keys.session("user-0", made[0].info.session_id))
    pipe: Any = state.client.pipeline(transaction=False)
    for n in range(3000):  # many more sessions, written directly (creating them is slow)
        pipe.set(state.keys.session(f"bulk-{n}", f"{n:064x}"), payload or "", ex=60)
    pipe.execute()
    with round_trips() as sent:
        found = state.sessions.list_all(limit=5)
    assert len(found) == 5
    assert sent.commands.count("GET") == 5  # not one per session in Redis
    assert len(state.sessions.list_all(limit=10_000)) == 3003


def test_bad_ttls_are_refused_before_anything_is_written(state: StateServices) -> None:
    for ttl in (float("inf"), float("nan"), 1e18, 0, -5):
        with pytest.raises(InvalidArgument, match="session ttl") as caught:
            state.sessions.create("42", ttl=ttl)
        assert caught.value.exit_code == EXIT_USAGE
    with pytest.raises(InvalidArgument, match="must not be empty"):
        state.sessions.create("")
    assert list(state.client.scan_iter(match=f"{state.keys.prefix}*")) == []


def test_a_session_id_prefix_resolves_to_exactly_one_session(state: StateServices) -> None:
    from devctl.errors import NotFound

    first = state.sessions.create("77")
    state.sessions.create("77")
    sids = [s.session_id for s in state.sessions.list_for_user("77")]
    mine = sids[0]
    unique_prefix = next(
        mine[:n] for n in range(1, len(mine) + 1) if sum(s.startswith(mine[:n]) for s in sids) == 1
    )
    assert state.sessions.resolve_id("77", unique_prefix) == mine
    with pytest.raises(NotFound, match="2 live sessions"):
        state.sessions.resolve_id("77", "")
    with pytest.raises(NotFound, match="no live sessions"):
        state.sessions.resolve_id("77", "not-an-id")
    assert first.token  # the sessions were real
