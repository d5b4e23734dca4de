"""Sessions: opaque random tokens, hashed at rest, validated in one round trip.

Token format: ``dc1.<secret>.<user>``, where ``secret`` is 32 random bytes
(256 bits) and ``user`` the user id, both base64url without padding. The user id
is not secret (it appears in URLs); it is in the token so that the session key,
the session index and the cached user share the ``{u:<user>}`` hash tag: one
MGET (or, with sliding expiry, one Lua script) validates the session and returns
the cached user in one round trip, on one Cluster slot. A session is a JSON
string whose key TTL is the session's lifetime, so an expired or revoked session
is gone at once. Redis stores only SHA-256(token): a dump of Redis cannot be
replayed as logins. Plain SHA-256 is enough because the token has 256 bits of
entropy; a slow password hash would only slow down every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from devctl.errors import NotFound
from devctl.state._redis import SyncExecutor, SyncFace, sync_op
from devctl.state.keys import KeySchema, user_from_key
from devctl.state.plan import Plan, Script, cmd, pipeline
from devctl.state.validate import ttl_ms

TOKEN_VERSION = "dc1"
PREFIX_CHARS = len(TOKEN_VERSION) + 1 + 8  # "dc1." + 8 chars (48 of 256 bits) of the secret
# 32 bytes in unpadded base64url are 43 characters, the last one from a 4-bit remainder.
_TOKEN = re.compile(TOKEN_VERSION + r"\.[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]\.([A-Za-z0-9_-]+)")

# KEYS: session, session index. ARGV: ttl ms, user, ip, user agent, token prefix, session id.
# Server time (TIME), so API instances with skewed clocks agree on expiry.
_CREATE = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local expires = now + ttl
local session = cjson.encode({user = ARGV[2], created = now, expires = expires, ttl = ttl,
                              ip = ARGV[3], ua = ARGV[4], prefix = ARGV[5]})
redis.call('SET', KEYS[1], session, 'PX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], expires, ARGV[6])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return {now, expires}
"""
)

# Sliding validation. KEYS: session, cached user, session index. ARGV: session id.
# (Fixed-expiry validation needs no script: one MGET of the session and the user.)
_SLIDE = Script(
    """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local session = cjson.decode(raw)
local t = redis.call('TIME')
session['expires'] = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + session['ttl']
raw = cjson.encode(session)
redis.call('SET', KEYS[1], raw, 'PX', session['ttl'])
redis.call('ZADD', KEYS[3], session['expires'], ARGV[1])
if redis.call('PTTL', KEYS[3]) < session['ttl'] then
  redis.call('PEXPIRE', KEYS[3], session['ttl'])
end
return {raw, redis.call('GET', KEYS[2])}
"""
)

# Revoke every session of a user at once. KEYS: session index. ARGV: session key
# prefix (the index's {u:<user>} hash tag, so these keys are on the script's slot).
# Returns how many sessions still existed (expired ones were just index entries).
_REVOKE_ALL = Script(
    """
local revoked = 0
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  revoked = revoked + redis.call('DEL', ARGV[1] .. sid)
end
redis.call('DEL', KEYS[1])
return revoked
"""
)


@dataclass(frozen=True)
class SessionInfo:
    """What Redis knows about a session. Never holds the token itself."""

    session_id: str  # SHA-256 hex of the token
    user_id: str
    created_at: float  # epoch seconds
    expires_at: float  # epoch seconds
    ttl: float  # seconds; the sliding window when sliding expiry is on
    ip: str | None
    user_agent: str | None
    token_prefix: str

    @property
    def expires_in(self) -> float:
        return max(0.0, self.expires_at - time.time())

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "expires_in": round(self.expires_in, 3),
            "ttl": self.ttl,
            "ip": self.ip,
            "user_agent": self.user_agent,
            "token_prefix": self.token_prefix,
        }


@dataclass(frozen=True)
class NewSession:
    """A created session. ``token`` is the secret handed to the client, exactly once."""

    token: str = field(repr=False)
    info: SessionInfo


@dataclass(frozen=True)
class ValidSession:
    session: SessionInfo
    user: dict[str, Any] | None  # the cached user, or None on a cache miss


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_token(user_id: str) -> str:
    return f"{TOKEN_VERSION}.{_b64(secrets.token_bytes(32))}.{_b64(user_id.encode('utf-8'))}"


def session_id(token: str) -> str:
    """The at-rest name of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_token(token: str) -> str | None:
    """The user id inside a well-formed token, else None (no Redis call needed)."""
    match = _TOKEN.fullmatch(token.strip())
    if match is None:
        return None
    try:
        user_id = _unb64(match.group(1)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return user_id or None


def _info(sid: str, raw: str) -> SessionInfo:
    data = json.loads(raw)
    return SessionInfo(
        session_id=sid,
        user_id=data["user"],
        created_at=data["created"] / 1000,
        expires_at=data["expires"] / 1000,
        ttl=data["ttl"] / 1000,
        ip=data.get("ip") or None,
        user_agent=data.get("ua") or None,
        token_prefix=data.get("prefix", ""),
    )


class SessionOps:
    """Every session operation as a plan; ``Sessions`` and ``AsyncSessions`` run them."""

    def __init__(self, keys: KeySchema, *, ttl: float, sliding: bool):
        self.keys = keys
        self.ttl = ttl
        self.sliding = sliding

    def create(
        self,
        user_id: str,
        *,
        ttl: float | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> Plan[NewSession]:
        """Create a session; the returned token is the only copy of the secret."""
        lifetime_ms = ttl_ms(self.ttl if ttl is None else ttl, "session ttl")
        token = new_token(user_id)
        sid = session_id(token)
        now_ms, expires_ms = yield _CREATE(
            [self.keys.session(user_id, sid), self.keys.sessions_index(user_id)],
            [lifetime_ms, user_id, ip or "", user_agent or "", token[:PREFIX_CHARS], sid],
        )
        info = SessionInfo(
            sid,
            user_id,
            now_ms / 1000,
            expires_ms / 1000,
            lifetime_ms / 1000,
            ip or None,
            user_agent or None,
            token[:PREFIX_CHARS],
        )
        return NewSession(token, info)

    def validate(self, token: str) -> Plan[ValidSession | None]:
        """The session and cached user for a token, in one round trip; None if invalid.

        With sliding expiry on, a valid token's lifetime restarts.
        """
        return (yield from self._lookup(token, slide=self.sliding))

    def inspect(self, token: str) -> Plan[ValidSession | None]:
        """Like ``validate`` but never extends the session (for operators)."""
        return (yield from self._lookup(token, slide=False))

    def _lookup(self, token: str, *, slide: bool) -> Plan[ValidSession | None]:
        user_id = parse_token(token)
        if user_id is None:
            return None
        sid = session_id(token.strip())
        session_key = self.keys.session(user_id, sid)
        user_key = self.keys.user(user_id)
        if slide:
            reply = yield _SLIDE([session_key, user_key, self.keys.sessions_index(user_id)], [sid])
        else:
            # Both keys carry the {u:<user>} hash tag: one MGET, valid on Redis Cluster too.
            # Not redis-py's mget(): it runs an import statement per call (~4 us).
            reply = yield cmd("execute_command", "MGET", session_key, user_key)
        if not reply or reply[0] is None:
            return None
        info = _info(sid, reply[0])
        if info.user_id != user_id:  # cannot happen unless keys were tampered with
            return None
        return ValidSession(info, json.loads(reply[1]) if reply[1] else None)

    def revoke(self, token: str) -> Plan[bool]:
        """Revoke one session by token; True if it existed."""
        user_id = parse_token(token)
        if user_id is None:
            return False
        return (yield from self.revoke_id(user_id, session_id(token.strip())))

    def revoke_id(self, user_id: str, sid: str) -> Plan[bool]:
        """Revoke one session by its id (as shown by ``list_for_user``)."""
        deleted, _ = yield pipeline(
            cmd("delete", self.keys.session(user_id, sid)),
            cmd("zrem", self.keys.sessions_index(user_id), sid),
            transaction=True,
        )
        return bool(deleted)

    def resolve_id(self, user_id: str, prefix: str) -> Plan[str]:
        """The one live session of ``user_id`` whose id starts with ``prefix``.

        Ids are shown shortened (as git shows commits); NotFound when none or several match.
        """
        sessions = yield from self.list_for_user(user_id)
        matches = [s.session_id for s in sessions if s.session_id.startswith(prefix)]
        if len(matches) != 1:
            found = "no" if not matches else f"{len(matches)}"
            raise NotFound(
                f"user {user_id} has {found} live sessions whose id starts with '{prefix}'",
                hint=f"the ids are in the list of user {user_id}'s sessions"
                if not matches
                else "give more of the id",
            )
        return matches[0]

    def revoke_all(self, user_id: str) -> Plan[int]:
        """Revoke every session of a user atomically (one script on one slot); return how many."""
        revoked = yield _REVOKE_ALL(
            [self.keys.sessions_index(user_id)], [self.keys.session(user_id, "")]
        )
        return int(revoked)

    def list_for_user(self, user_id: str) -> Plan[list[SessionInfo]]:
        """A user's live sessions, newest first; expired or revoked index entries are pruned."""
        index = self.keys.sessions_index(user_id)
        sids: list[Any] = yield cmd("zrange", index, 0, -1)
        if not sids:
            return []
        found = yield pipeline(*(cmd("get", self.keys.session(user_id, sid)) for sid in sids))
        gone = [sid for sid, raw in zip(sids, found, strict=True) if not raw]
        if gone:
            yield cmd("zrem", index, *gone)
        infos = [_info(sid, raw) for sid, raw in zip(sids, found, strict=True) if raw]
        return sorted(infos, key=lambda s: s.created_at, reverse=True)

    def list_all(self, limit: int = 50) -> Plan[list[SessionInfo]]:
        """At most ``limit`` sessions of any users (for operators), newest first among them.

        SCAN stops as soon as ``limit`` live sessions are found, so the cost follows the
        limit, not the number of sessions; which sessions come first is SCAN's order.
        """
        infos: list[SessionInfo] = []
        pattern = self.keys.scan_pattern("session")
        scanned: list[str] = []  # keys SCAN returned that were not read yet
        cursor: int | None = None  # None: not started; 0: SCAN is done
        while len(infos) < limit:
            want = min(500, limit - len(infos))
            while len(scanned) < want and cursor != 0:
                cursor, keys = yield cmd("scan", cursor or 0, match=pattern, count=1000)
                scanned.extend(keys)
            chunk, scanned = scanned[:want], scanned[want:]
            if not chunk:
                break
            found = yield pipeline(*(cmd("get", key) for key in chunk))
            for key, raw in zip(chunk, found, strict=True):
                if raw:  # it may have expired since SCAN saw it
                    infos.append(_info(key.rsplit(":", 1)[1], raw))
        infos.sort(key=lambda s: s.created_at, reverse=True)
        return infos

    def count(self) -> Plan[tuple[int, int]]:
        """(live sessions, users with at least one), by SCAN.

        ``devctl.state.count_sessions`` counts the same without redis-py, for the CLI.
        """
        sessions = 0
        users: set[str] = set()
        cursor = 0
        while True:
            cursor, keys = yield cmd(
                "scan", cursor, match=self.keys.scan_pattern("session"), count=1000
            )
            sessions += len(keys)
            users.update(user_from_key(key, self.keys.prefix) for key in keys)
            if not cursor:
                return sessions, len(users)


class Sessions(SyncFace[SessionOps]):
    """Create, validate, list and revoke sessions."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        ttl: float,
        sliding: bool,
        executor: SyncExecutor | None = None,
    ):
        super().__init__(client, keys, SessionOps(keys, ttl=ttl, sliding=sliding), executor)

    create = sync_op(SessionOps.create)
    validate = sync_op(SessionOps.validate)
    inspect = sync_op(SessionOps.inspect)
    revoke = sync_op(SessionOps.revoke)
    revoke_id = sync_op(SessionOps.revoke_id)
    resolve_id = sync_op(SessionOps.resolve_id)
    revoke_all = sync_op(SessionOps.revoke_all)
    list_for_user = sync_op(SessionOps.list_for_user)
    list_all = sync_op(SessionOps.list_all)
    count = sync_op(SessionOps.count)
