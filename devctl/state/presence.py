"""Presence that is right with many tabs and many API instances.

Model: a user's connections are a hash ``connection id -> instance id`` under the
user's hash tag. Each API instance proves it is alive with a heartbeat key that
has a short TTL (``state.presence_instance_ttl``) and is listed in a registry.
A user is online iff at least one of their connections is held by a live
instance. Transitions are decided inside Lua scripts on the user's slot (the
first connection added, the last one removed), so each is reported exactly once
however many connects and disconnects race; the same script publishes the change
on the presence channel, so the channel carries exactly one event per transition.

The sweep finds dead instances (in the registry, heartbeat key gone), removes
their connections user by user (again a Lua script that reports the transition)
and returns the users that went offline because of it. Until the sweep runs,
reads already ignore connections of dead instances.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from devctl.state._redis import Script, execute_with_scripts, redis_operation
from devctl.state.keys import KeySchema, user_from_key

LAST_SEEN_TTL_S = 30 * 24 * 3600
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: user connections, last_seen. ARGV: connection, instance, payload, channel, last_seen ttl.
_CONNECT = Script(
    _NOW
    + """
local before = redis.call('HLEN', KEYS[1])
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], string.format('%.6f', now), 'EX', ARGV[5])
if before == 0 and added == 1 then
  local event = cjson.decode(ARGV[3])
  event['ts'] = now
  redis.call('PUBLISH', ARGV[4], cjson.encode(event))
  return 1
end
return 0
"""
)

# KEYS: user connections, last_seen. ARGV: connection, payload, channel, last_seen ttl.
_DISCONNECT = Script(
    _NOW
    + """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], string.format('%.6f', now), 'EX', ARGV[4])
if redis.call('HLEN', KEYS[1]) == 0 then
  local event = cjson.decode(ARGV[2])
  event['ts'] = now
  redis.call('PUBLISH', ARGV[3], cjson.encode(event))
  return 1
end
return 0
"""
)

# KEYS: user connections, last_seen. ARGV: dead instance, payload, channel, last_seen ttl,
# the dead instance's last heartbeat. Returns {connections removed, went offline (0/1)}.
_SWEEP_USER = Script(
    _NOW
    + """
local conns = redis.call('HGETALL', KEYS[1])
local removed = 0
for i = 1, #conns, 2 do
  if conns[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[1], conns[i])
    removed = removed + 1
  end
end
if removed == 0 then return {0, 0} end
local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[5]) > seen then
  redis.call('SET', KEYS[2], ARGV[5], 'EX', ARGV[4])
end
if redis.call('HLEN', KEYS[1]) == 0 then
  local event = cjson.decode(ARGV[2])
  event['ts'] = now
  redis.call('PUBLISH', ARGV[3], cjson.encode(event))
  return {removed, 1}
end
return {removed, 0}
"""
)

# KEYS: heartbeat key, registry. ARGV: ttl ms, instance id.
_HEARTBEAT = Script(
    _NOW
    + """
redis.call('SET', KEYS[1], string.format('%.6f', now), 'PX', ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], string.format('%.6f', now))
return 1
"""
)

# KEYS: registry. ARGV: heartbeat key prefix (same {instances} hash tag as the registry,
# so these derived keys live on the registry's slot). Returns id, last heartbeat, alive.
_INSTANCES = Script(
    """
local reg = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #reg, 2 do
  out[#out + 1] = reg[i]
  out[#out + 1] = reg[i + 1]
  out[#out + 1] = redis.call('EXISTS', ARGV[1] .. reg[i])
end
return out
"""
)

# KEYS: heartbeat key, registry. ARGV: instance. Forget an instance only if still dead.
_FORGET = Script(
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
return redis.call('HDEL', KEYS[2], ARGV[1])
"""
)


@dataclass(frozen=True)
class PresenceStatus:
    user_id: str
    online: bool
    connections: int  # live connections (on live instances)
    last_seen: float | None  # epoch seconds
    instances: tuple[str, ...] = ()
    stale_connections: int = 0  # held by dead instances, not yet swept

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "online": self.online,
            "connections": self.connections,
            "instances": list(self.instances),
            "last_seen": self.last_seen,
            "stale_connections": self.stale_connections,
        }


@dataclass(frozen=True)
class InstanceInfo:
    instance_id: str
    alive: bool
    last_heartbeat: float


@dataclass
class SweepResult:
    dead_instances: list[str] = field(default_factory=list)
    went_offline: list[str] = field(default_factory=list)
    connections_removed: int = 0


def check_instance_id(instance_id: str) -> str:
    if not _INSTANCE_ID.match(instance_id):
        raise ValueError(f"invalid instance id {instance_id!r}: use 1-128 of A-Z a-z 0-9 . _ -")
    return instance_id


class Presence:
    """Connections, instance heartbeats, sweeps and bulk reads."""

    def __init__(self, client: redis.Redis, keys: KeySchema, *, instance_ttl: float):
        self.client = client
        self.keys = keys
        self.instance_ttl = instance_ttl

    def _event(self, user_id: str, online: bool, instance: str) -> str:
        return json.dumps(
            {"type": "presence", "userId": user_id, "online": online, "instance": instance, "ts": 0}
        )

    @redis_operation
    def connect(self, user_id: str, connection_id: str, instance_id: str) -> bool:
        """Record a connection; True iff the user just went from offline to online."""
        check_instance_id(instance_id)
        keys = [self.keys.connections(user_id), self.keys.last_seen(user_id)]
        args = [
            connection_id,
            instance_id,
            self._event(user_id, True, instance_id),
            self.keys.presence_channel(),
            LAST_SEEN_TTL_S,
        ]

        def build(pipe: Any) -> None:
            # The instance index first: it must always cover the user's connections.
            pipe.hset(self.keys.instance_connections(instance_id), connection_id, user_id)
            _CONNECT.queue(pipe, keys, args)

        return bool(execute_with_scripts(self.client, build, [_CONNECT])[1])

    @redis_operation
    def disconnect(self, user_id: str, connection_id: str, instance_id: str) -> bool:
        """Forget a connection; True iff it was the user's last one (online -> offline)."""
        check_instance_id(instance_id)
        keys = [self.keys.connections(user_id), self.keys.last_seen(user_id)]
        args = [
            connection_id,
            self._event(user_id, False, instance_id),
            self.keys.presence_channel(),
            LAST_SEEN_TTL_S,
        ]

        def build(pipe: Any) -> None:
            _DISCONNECT.queue(pipe, keys, args)
            pipe.hdel(self.keys.instance_connections(instance_id), connection_id)

        return bool(execute_with_scripts(self.client, build, [_DISCONNECT])[0])

    @redis_operation
    def heartbeat(self, instance_id: str, ttl: float | None = None) -> None:
        """Say an instance is alive for ``ttl`` seconds (default state.presence_instance_ttl)."""
        check_instance_id(instance_id)
        ttl_ms = max(1, round((self.instance_ttl if ttl is None else ttl) * 1000))
        _HEARTBEAT(
            self.client,
            [self.keys.instance_alive(instance_id), self.keys.instance_registry()],
            [ttl_ms, instance_id],
        )

    @redis_operation
    def instances(self) -> list[InstanceInfo]:
        """Every registered instance, alive or dead (dead until swept)."""
        return self._instances(_INSTANCES(self.client, *self._instances_call()))

    def _instances_call(self) -> tuple[list[str], list[str]]:
        return [self.keys.instance_registry()], [self.keys.instance_alive("x")[:-1]]

    @staticmethod
    def _instances(flat: list[Any]) -> list[InstanceInfo]:
        return [
            InstanceInfo(str(flat[i]), bool(int(flat[i + 2])), float(flat[i + 1]))
            for i in range(0, len(flat), 3)
        ]

    @redis_operation
    def retire(self, instance_id: str) -> SweepResult:
        """Graceful shutdown of an instance: drop its heartbeat and sweep its connections now."""
        check_instance_id(instance_id)
        self.client.delete(self.keys.instance_alive(instance_id))
        registry = {i.instance_id: i.last_heartbeat for i in self.instances()}
        return self._sweep([instance_id], registry)

    @redis_operation
    def sweep(self, only: Iterable[str] | None = None) -> SweepResult:
        """Remove the connections of dead instances; report users who went offline."""
        wanted = set(only) if only is not None else None
        known = self.instances()
        dead = [
            i.instance_id
            for i in known
            if not i.alive and (wanted is None or i.instance_id in wanted)
        ]
        return self._sweep(dead, {i.instance_id: i.last_heartbeat for i in known})

    def _sweep(self, dead: list[str], registry: dict[str, float]) -> SweepResult:
        result = SweepResult(dead_instances=list(dead))
        for instance_id in dead:
            index = self.keys.instance_connections(instance_id)
            held: dict[Any, Any] = self.client.hgetall(index)
            users = sorted(set(held.values()))
            last = registry.get(instance_id, time.time())

            def build(
                pipe: Any,
                users: list[str] = users,
                instance_id: str = instance_id,
                last: float = last,
            ) -> None:
                for user_id in users:
                    _SWEEP_USER.queue(
                        pipe,
                        [self.keys.connections(user_id), self.keys.last_seen(user_id)],
                        [
                            instance_id,
                            self._event(user_id, False, instance_id),
                            self.keys.presence_channel(),
                            LAST_SEEN_TTL_S,
                            f"{last:.6f}",
                        ],
                    )

            outcomes = execute_with_scripts(self.client, build, [_SWEEP_USER]) if users else []
            for user_id, (removed, offline) in zip(users, outcomes, strict=True):
                result.connections_removed += int(removed)
                if int(offline):
                    result.went_offline.append(user_id)
            if held:
                self.client.hdel(index, *held)
            _FORGET(
                self.client,
                [self.keys.instance_alive(instance_id), self.keys.instance_registry()],
                [instance_id],
            )
        return result

    @redis_operation
    def bulk_status(self, user_ids: list[str]) -> dict[str, PresenceStatus]:
        """Presence of many users in one round trip (one pipeline)."""
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return {}
        registry_keys, registry_args = self._instances_call()

        def build(pipe: Any) -> None:
            for user_id in wanted:
                pipe.hgetall(self.keys.connections(user_id))
                pipe.get(self.keys.last_seen(user_id))
            _INSTANCES.queue(pipe, registry_keys, registry_args)

        replies = execute_with_scripts(self.client, build, [_INSTANCES])
        instances = {i.instance_id: i.alive for i in self._instances(replies[-1])}
        out: dict[str, PresenceStatus] = {}
        for n, user_id in enumerate(wanted):
            conns: dict[str, str] = replies[2 * n]
            seen = replies[2 * n + 1]
            # An instance missing from the registry has just registered or was never
            # registered (heartbeat pending): count it as alive rather than hide a user.
            live = [inst for inst in conns.values() if instances.get(inst, True)]
            out[user_id] = PresenceStatus(
                user_id=user_id,
                online=bool(live),
                connections=len(live),
                last_seen=float(seen) if seen is not None else None,
                instances=tuple(sorted(set(live))),
                stale_connections=len(conns) - len(live),
            )
        return out

    @redis_operation
    def status(self, user_id: str) -> PresenceStatus:
        return self.bulk_status([user_id])[user_id]

    @redis_operation
    def known_users(self, limit: int = 1000) -> list[str]:
        """Users with connections or a last_seen (SCAN; for operators)."""
        found: dict[str, None] = {}
        for kind in ("connections", "last_seen"):
            for key in self.client.scan_iter(match=self.keys.scan_pattern(kind), count=1000):
                found[user_from_key(key, self.keys.prefix)] = None
                if len(found) >= limit:
                    return list(found)
        return list(found)
