"""The one module that owns every Redis key and channel name of DevConnect.

Every name starts with the configured prefix (``redis.key_prefix``, default
``devconnect:``). Keys that an atomic operation (a Lua script or a MULTI) touches
together share a hash tag, so they land in one Redis Cluster slot:

    {u:<user>}        a user's sessions, session index, cached profile, presence
    {c:<a>:<b>}       one conversation's message cache and its version counter
    {instances}       every API instance's heartbeat key and the instance registry
    {i:<instance>}    one instance's connection index
    {rl:<policy>:<subject>}  one rate-limit bucket (single key)
    {an}              the analytics counters (one slot: a handler's MULTI spans them)

Identifiers are escaped (``%7B`` for ``{`` and so on) so that an id can never
close a hash tag early, inject a glob character into a SCAN pattern, or make two
different (a, b) pairs collide in a conversation key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from devctl.config.schema import StateSettings
from devctl.errors import ConfigError
from devctl.state.validate import InvalidArgument

# Characters that would break a hash tag, a SCAN glob or our ':' separators.
_ESCAPED = frozenset("%{}:*?[]\\")
# Ordinary ids (the common case, on every request) skip the per-character loop.
_PLAIN = re.compile(r"[A-Za-z0-9._@+-]+")


def escape_id(value: str) -> str:
    """Escape an id for use inside a key: reversible, and a no-op for ordinary ids."""
    if _PLAIN.fullmatch(value):
        return value
    if not value:
        raise InvalidArgument("an id must not be empty")
    out: list[str] = []
    for char in value:
        if char in _ESCAPED or char.isspace() or not char.isprintable():
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
        else:
            out.append(char)
    return "".join(out)


def unescape_id(value: str) -> str:
    """Invert ``escape_id``."""
    if "%" not in value:
        return value
    raw = bytearray()
    i = 0
    while i < len(value):
        if value[i] == "%" and _is_hex(value[i + 1 : i + 3]):
            raw.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(value[i].encode("utf-8"))
            i += 1
    return raw.decode("utf-8")


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so ``text`` matches literally in SCAN MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True)
class KeySpec:
    """One row of `devctl keys`."""

    kind: str
    pattern: str
    type: str
    ttl: str
    purpose: str
    hash_tag: str


class KeySchema:
    """Builds every key and channel name; ``table()`` describes them all."""

    def __init__(self, prefix: str = "devconnect:"):
        if "{" in prefix or "}" in prefix:
            # A hash tag in the prefix would be the first one of every key: one Cluster slot.
            raise ConfigError(
                f"must not contain '{{' or '}}', got {prefix!r}",
                key="redis.key_prefix",
                hint="every key would land in one Redis Cluster slot; use e.g. 'devconnect:'",
            )
        self.prefix = prefix

    # --- users: sessions, cache, presence (hash tag {u:<user>}) ------------

    def _user(self, user_id: str) -> str:
        return f"{self.prefix}{{u:{escape_id(user_id)}}}"

    def session(self, user_id: str, session_id: str) -> str:
        """STRING (JSON) of one session, named by the SHA-256 of its token."""
        return f"{self._user(user_id)}:session:{session_id}"

    def sessions_index(self, user_id: str) -> str:
        """ZSET of a user's session ids scored by expiry (epoch ms)."""
        return f"{self._user(user_id)}:sessions"

    def user(self, user_id: str) -> str:
        """STRING: the cached user object (JSON)."""
        return f"{self._user(user_id)}:user"

    def user_version(self, user_id: str) -> str:
        """STRING counter bumped by every invalidation; a fill that raced one is dropped."""
        return self.version_of(self.user(user_id))

    def user_lock(self, user_id: str) -> str:
        """STRING single-flight lock held by the one caller refilling the user cache."""
        return f"{self._user(user_id)}:user:lock"

    def connections(self, user_id: str) -> str:
        """HASH connection id -> instance id of a user's live connections."""
        return f"{self._user(user_id)}:conns"

    def last_seen(self, user_id: str) -> str:
        """STRING epoch seconds of the user's last connect or disconnect."""
        return f"{self._user(user_id)}:last_seen"

    def email(self, email: str) -> str:
        """STRING user id for a (lower-cased, trimmed) email."""
        return f"{self.prefix}{{e:{escape_id(normalise_email(email))}}}:uid"

    def email_version(self, email: str) -> str:
        """STRING counter bumped when a mapping is dropped; a lookup that raced it is dropped."""
        return self.version_of(self.email(email))

    # --- API instances -----------------------------------------------------

    def instance_alive(self, instance_id: str) -> str:
        """STRING heartbeat of an API instance; its TTL is the instance's liveness."""
        return f"{self.prefix}{{instances}}:alive:{escape_id(instance_id)}"

    def instance_registry(self) -> str:
        """HASH instance id -> epoch seconds of its last heartbeat (alive or dead)."""
        return f"{self.prefix}{{instances}}:registry"

    def instance_connections(self, instance_id: str) -> str:
        """HASH connection id -> user id of the connections an instance holds."""
        return f"{self.prefix}{{i:{escape_id(instance_id)}}}:conns"

    # --- rate limits, messages, idempotency, stats -------------------------

    def ratelimit(self, policy: str, subject: str) -> str:
        """STRING: the GCRA theoretical arrival time of one (policy, subject) bucket."""
        return f"{self.prefix}{{rl:{escape_id(policy)}:{escape_id(subject)}}}"

    def conversation(self, user_a: str, user_b: str) -> str:
        """LIST of a conversation's recent messages, oldest first; direction-independent."""
        return f"{self._conversation(user_a, user_b)}:messages"

    def conversation_version(self, user_a: str, user_b: str) -> str:
        """STRING counter bumped by each append; a fill that raced an append is dropped."""
        return self.version_of(self.conversation(user_a, user_b))

    def _conversation(self, user_a: str, user_b: str) -> str:
        low, high = sorted((escape_id(user_a), escape_id(user_b)))
        return f"{self.prefix}{{c:{low}:{high}}}"

    @staticmethod
    def version_of(cache_key: str) -> str:
        """The version counter beside a ``user``, ``email`` or ``messages`` cache key."""
        return f"{cache_key}:ver"

    def idempotency(self, group: str, event_id: str) -> str:
        """STRING marker (SET NX EX) that a consumer group already handled an event."""
        return f"{self.prefix}idem:{escape_id(group)}:{escape_id(event_id)}"

    def cache_stats(self) -> str:
        """HASH of cache counters: <kind>:lookups, <kind>:misses."""
        return f"{self.prefix}stats:cache"

    # --- notifications (hash tag {u:<user>}) ---------------------------------

    def notifications(self, user_id: str) -> str:
        """LIST of a user's notifications (JSON), newest first, capped."""
        return f"{self._user(user_id)}:notifications"

    def notifications_unread(self, user_id: str) -> str:
        """STRING count of a user's unread notifications."""
        return f"{self._user(user_id)}:notifications:unread"

    # --- analytics (hash tag {an}: one consumer transaction touches several) --

    def analytics_counts(self, granularity: str, bucket: str) -> str:
        """HASH event type -> count for one minute/hour/day bucket.

        ``granularity`` is ``m``, ``h`` or ``d``; ``bucket`` the UTC period's start as
        digits (``YYYYMMDDHHMM``, ``YYYYMMDDHH``, ``YYYYMMDD``).
        """
        return f"{self.prefix}{{an}}:events:{granularity}:{bucket}"

    def analytics_active(self, period: str, bucket: str) -> str:
        """HYPERLOGLOG of active user ids: ``period`` ``d`` (YYYYMMDD) or ``m`` (YYYYMM)."""
        return f"{self.prefix}{{an}}:active:{period}:{bucket}"

    def analytics_signups(self, day: str) -> str:
        """STRING count of signups on one UTC day (YYYYMMDD)."""
        return f"{self.prefix}{{an}}:signups:{day}"

    def analytics_user(self, user_id: str) -> str:
        """HASH of one user's activity counters (messages, requests, ...)."""
        return f"{self.prefix}{{an}}:user:{escape_id(user_id)}"

    # --- pub/sub channels (not keys: no slot, no TTL) -----------------------

    def socketio_channel(self) -> str:
        """Socket.IO's Redis manager channel: emits shared by every API instance."""
        return f"{self.prefix}socketio"

    def presence_channel(self) -> str:
        return f"{self.prefix}presence"

    def notification_channel(self, user_id: str) -> str:
        return f"{self.prefix}notify:{escape_id(user_id)}"

    def notification_pattern(self) -> str:
        return f"{glob_escape(self.prefix)}notify:*"

    # --- scanning ------------------------------------------------------------

    def scan_pattern(self, kind: str) -> str:
        """A SCAN MATCH glob for every key of one kind (see ``KINDS``)."""
        try:
            tail = _SCAN_TAILS[kind]
        except KeyError:
            raise InvalidArgument(f"unknown key kind '{kind}'") from None
        return glob_escape(self.prefix) + tail

    def kind_of(self, key: str) -> str | None:
        """The kind (see ``KINDS``) of a key under this prefix, else None; no Redis call."""
        if not key.startswith(self.prefix):
            return None
        match = _KIND.fullmatch(key, len(self.prefix))
        return match.lastgroup if match else None

    def table(self, state: StateSettings | None = None) -> list[KeySpec]:
        """Pattern, type, TTL and purpose of every key and channel, for `devctl keys`."""

        def ttl(name: str, fallback: str) -> str:
            if state is None:
                return fallback
            return f"{getattr(state, name)} s (state.{name})"

        p = self.prefix
        return [
            KeySpec(
                "session",
                f"{p}{{u:<user>}}:session:<sha256(token)>",
                "string",
                ttl("session_ttl", "state.session_ttl"),
                "one session (JSON): user, created, expires, ttl, ip, user agent, token prefix",
                "{u:<user>}",
            ),
            KeySpec(
                "sessions_index",
                f"{p}{{u:<user>}}:sessions",
                "zset",
                "latest session expiry",
                "a user's session ids scored by expiry (ms); pruned on create and list",
                "{u:<user>}",
            ),
            KeySpec(
                "user",
                f"{p}{{u:<user>}}:user",
                "string",
                ttl("user_cache_ttl", "state.user_cache_ttl"),
                "cached user object (JSON, never the password)",
                "{u:<user>}",
            ),
            KeySpec(
                "user_version",
                f"{p}{{u:<user>}}:user:ver",
                "string",
                "2 x user cache TTL",
                "bumped on invalidation; a cache fill that raced it is dropped",
                "{u:<user>}",
            ),
            KeySpec(
                "user_lock",
                f"{p}{{u:<user>}}:user:lock",
                "string",
                "5 s",
                "single-flight lock: one caller reloads a missing user",
                "{u:<user>}",
            ),
            KeySpec(
                "email",
                f"{p}{{e:<email>}}:uid",
                "string",
                ttl("user_cache_ttl", "state.user_cache_ttl"),
                "lower-cased email -> user id",
                "{e:<email>}",
            ),
            KeySpec(
                "email_version",
                f"{p}{{e:<email>}}:uid:ver",
                "string",
                "2 x user cache TTL",
                "bumped when the mapping is dropped; a lookup that raced it is not cached",
                "{e:<email>}",
            ),
            KeySpec(
                "connections",
                f"{p}{{u:<user>}}:conns",
                "hash",
                "none (swept)",
                "connection id -> instance id; online iff a live instance holds one",
                "{u:<user>}",
            ),
            KeySpec(
                "last_seen",
                f"{p}{{u:<user>}}:last_seen",
                "string",
                "30 days",
                "epoch seconds of the last connect/disconnect",
                "{u:<user>}",
            ),
            KeySpec(
                "instance_alive",
                f"{p}{{instances}}:alive:<instance>",
                "string",
                ttl("presence_instance_ttl", "state.presence_instance_ttl"),
                "an API instance's heartbeat; gone = instance dead",
                "{instances}",
            ),
            KeySpec(
                "instance_registry",
                f"{p}{{instances}}:registry",
                "hash",
                "none",
                "instance id -> last heartbeat (s); the sweep removes dead ones",
                "{instances}",
            ),
            KeySpec(
                "instance_connections",
                f"{p}{{i:<instance>}}:conns",
                "hash",
                "none (swept)",
                "connection id -> user id held by one instance, for the sweep",
                "{i:<instance>}",
            ),
            KeySpec(
                "ratelimit",
                f"{p}{{rl:<policy>:<subject>}}",
                "string",
                "until the bucket is full again",
                "GCRA theoretical arrival time (us) of one policy + subject",
                "{rl:<policy>:<subject>}",
            ),
            KeySpec(
                "messages",
                f"{p}{{c:<low user>:<high user>}}:messages",
                "list",
                ttl("message_cache_ttl", "state.message_cache_ttl"),
                "last state.message_cache_size messages (JSON), oldest first",
                "{c:<low>:<high>}",
            ),
            KeySpec(
                "messages_version",
                f"{p}{{c:<low user>:<high user>}}:messages:ver",
                "string",
                ttl("message_cache_ttl", "state.message_cache_ttl"),
                "bumped on append; a cache fill that raced it is dropped",
                "{c:<low>:<high>}",
            ),
            KeySpec(
                "idempotency",
                f"{p}idem:<group>:<event id>",
                "string",
                "set by the consumer (SET NX EX)",
                "an event already handled by a consumer group",
                "-",
            ),
            KeySpec(
                "notifications",
                f"{p}{{u:<user>}}:notifications",
                "list",
                "30 d after the last one",
                "a user's notifications (JSON), newest first, capped",
                "{u:<user>}",
            ),
            KeySpec(
                "notifications_unread",
                f"{p}{{u:<user>}}:notifications:unread",
                "string",
                "30 d after the last one",
                "count of a user's unread notifications",
                "{u:<user>}",
            ),
            KeySpec(
                "analytics_counts",
                f"{p}{{an}}:events:<m|h|d>:<UTC bucket>",
                "hash",
                "m 48 h, h 31 d, d 400 d",
                "events per type in one minute, hour or day",
                "{an}",
            ),
            KeySpec(
                "analytics_active",
                f"{p}{{an}}:active:<d|m>:<YYYYMMDD|YYYYMM>",
                "hyperloglog",
                "d 400 d, m 800 d",
                "daily and monthly active users",
                "{an}",
            ),
            KeySpec(
                "analytics_signups",
                f"{p}{{an}}:signups:<YYYYMMDD>",
                "string",
                "400 d",
                "signups on one UTC day",
                "{an}",
            ),
            KeySpec(
                "analytics_user",
                f"{p}{{an}}:user:<user>",
                "hash",
                "90 d after the last event",
                "one user's activity counters (messages, requests, ...)",
                "{an}",
            ),
            KeySpec(
                "stats",
                f"{p}stats:cache",
                "hash",
                "none",
                "cache counters <kind>:lookups and <kind>:misses",
                "-",
            ),
            KeySpec(
                "channel:presence",
                f"{p}presence",
                "pub/sub",
                "-",
                "presence changes {type, userId, online, instance, ts}",
                "-",
            ),
            KeySpec(
                "channel:notify",
                f"{p}notify:<user>",
                "pub/sub",
                "-",
                "notifications for one user {type, userId, kind, data, ts}",
                "-",
            ),
            KeySpec(
                "channel:socketio",
                f"{p}socketio",
                "pub/sub",
                "-",
                "Socket.IO emits between API instances and from consumers (python-socketio)",
                "-",
            ),
        ]


def normalise_email(email: str) -> str:
    return email.strip().lower()


# SCAN globs (after the escaped prefix) for each kind of key.
_SCAN_TAILS: dict[str, str] = {
    "session": "{u:*}:session:*",
    "sessions_index": "{u:*}:sessions",
    "user": "{u:*}:user",
    "user_version": "{u:*}:user:ver",
    "user_lock": "{u:*}:user:lock",
    "email": "{e:*}:uid",
    "email_version": "{e:*}:uid:ver",
    "connections": "{u:*}:conns",
    "last_seen": "{u:*}:last_seen",
    "instance_alive": "{instances}:alive:*",
    "instance_connections": "{i:*}:conns",
    "ratelimit": "{rl:*}",
    "messages": "{c:*}:messages",
    "messages_version": "{c:*}:messages:ver",
    "idempotency": "idem:*",
    "notifications": "{u:*}:notifications",
    "notifications_unread": "{u:*}:notifications:unread",
    "analytics_counts": "{an}:events:*",
    "analytics_active": "{an}:active:*",
    "analytics_signups": "{an}:signups:*",
    "analytics_user": "{an}:user:*",
}

KINDS = tuple(_SCAN_TAILS)


def _glob_to_regex(glob: str) -> str:
    # The tails use only '*' (any characters, as in Redis) and literal characters.
    return ".*".join(re.escape(part) for part in glob.split("*"))


# One pattern classifying a key (after the prefix) by kind, exactly as SCAN MATCH would.
_KIND = re.compile(
    "|".join(f"(?P<{kind}>{_glob_to_regex(tail)})" for kind, tail in _SCAN_TAILS.items()),
    re.DOTALL,
)


def user_from_key(key: str, prefix: str) -> str:
    """The user id inside a ``{u:<user>}`` key."""
    start = len(prefix) + len("{u:")
    return unescape_id(key[start : key.index("}", start)])
