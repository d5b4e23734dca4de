"""The key schema: escaping, hash tags (one slot per atomic operation), scan patterns, the table."""

from __future__ import annotations

from typing import Any

import pytest
from redis.crc import key_slot

from devctl.config.loader import load_settings
from devctl.errors import EXIT_USAGE, ConfigError
from devctl.state import StateServices
from devctl.state.keys import KINDS, KeySchema, escape_id, glob_escape, unescape_id
from devctl.state.validate import InvalidArgument

keys = KeySchema("devconnect:")


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


@pytest.mark.parametrize(
    "value", ["42", "65f0c0ffee", "a:b", "{x}", "50%", "a*b?[c]\\", "é ✓ tab\t"]
)
def test_escape_round_trips_and_leaves_ordinary_ids_alone(value: str) -> None:
    escaped = escape_id(value)
    assert unescape_id(escaped) == value
    assert not set(escaped) & set("{}:*?[]\\ \t")
    if value.isalnum():
        assert escaped == value


def test_empty_id_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        escape_id("")
    assert caught.value.exit_code == EXIT_USAGE
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("prefix", ["dev{x}:", "{devconnect}:", "a}b:"])
def test_prefix_with_a_hash_tag_is_a_config_error(prefix: str) -> None:
    with pytest.raises(ConfigError, match=r"redis\.key_prefix"):
        KeySchema(prefix)


def test_user_keys_share_one_slot_even_with_hostile_ids() -> None:
    for user in ["42", "a}b", "{evil}", "x:y"]:
        user_keys = [
            keys.session(user, "ab" * 32),
            keys.sessions_index(user),
            keys.user(user),
            keys.user_version(user),
            keys.user_lock(user),
            keys.connections(user),
            keys.last_seen(user),
        ]
        assert len({slot(k) for k in user_keys}) == 1, user_keys
        assert keys.user(user).startswith("devconnect:{u:")


def test_conversation_key_is_direction_independent_and_collision_free() -> None:
    assert keys.conversation("a", "b") == keys.conversation("b", "a")
    assert slot(keys.conversation("a", "b")) == slot(keys.conversation_version("b", "a"))
    # Without escaping, ("a:b", "c") and ("a", "b:c") would share a key.
    assert keys.conversation("a:b", "c") != keys.conversation("a", "b:c")


def test_instance_keys_share_the_registry_slot() -> None:
    assert slot(keys.instance_alive("api-1")) == slot(keys.instance_registry())
    assert slot(keys.instance_alive("api-2")) == slot(keys.instance_registry())


def test_idempotency_key_per_group_and_event() -> None:
    a = keys.idempotency("analytics", "0190-abc")
    assert a == "devconnect:idem:analytics:0190-abc"
    assert a != keys.idempotency("notifications", "0190-abc")
    assert keys.idempotency("g:1", "e") != keys.idempotency("g", "1:e")


def test_prefix_is_configurable() -> None:
    other = KeySchema("staging:")
    assert other.user("1") == "staging:{u:1}:user"
    assert other.presence_channel() == "staging:presence"
    assert KeySchema("we*ird:").notification_pattern() == "we\\*ird:notify:*"
    assert glob_escape("a*b") == "a\\*b"


def test_table_documents_every_kind_with_settings_ttls() -> None:
    settings = load_settings(environ={}, flags={"state.session_ttl": (600, "x")})
    rows = {r.kind: r for r in keys.table(settings.state)}
    assert set(KINDS) <= set(rows)
    assert rows["session"].ttl == "600 s (state.session_ttl)"
    assert rows["idempotency"].pattern == "devconnect:idem:<group>:<event id>"
    assert all(r.purpose and r.type for r in rows.values())


def test_scan_patterns_match_exactly_their_kind(state: StateServices) -> None:
    """Create one key of every kind on the server; each pattern must find exactly its own."""
    k = state.keys
    made: dict[str, str] = {
        "session": k.session("u1", "f" * 64),
        "sessions_index": k.sessions_index("u1"),
        "user": k.user("u1"),
        "user_version": k.user_version("u1"),
        "user_lock": k.user_lock("u1"),
        "email": k.email("A@B.c"),
        "email_version": k.email_version("A@B.c"),
        "connections": k.connections("u1"),
        "last_seen": k.last_seen("u1"),
        "instance_alive": k.instance_alive("api-1"),
        "instance_connections": k.instance_connections("api-1"),
        "ratelimit": k.ratelimit("login_ip", "::1"),
        "messages": k.conversation("u1", "u2"),
        "messages_version": k.conversation_version("u1", "u2"),
        "idempotency": k.idempotency("g", "e1"),
        "notifications": k.notifications("u1"),
        "notifications_unread": k.notifications_unread("u1"),
        "analytics_counts": k.analytics_counts("m", "202612012030"),
        "analytics_active": k.analytics_active("d", "20261201"),
        "analytics_signups": k.analytics_signups("20261201"),
        "analytics_user": k.analytics_user("u1"),
    }
    assert set(made) == set(KINDS)
    pipe: Any = state.client.pipeline()
    for key in made.values():
        pipe.set(key, "x", ex=60)
    pipe.execute()
    for kind, key in made.items():
        found = set(state.client.scan_iter(match=k.scan_pattern(kind), count=1000))
        assert found == {key}, kind
        assert k.kind_of(key) == kind  # the classifier agrees with SCAN MATCH
    assert k.kind_of(k.instance_registry()) is None
    assert k.kind_of("other:" + k.user("u1")) is None
