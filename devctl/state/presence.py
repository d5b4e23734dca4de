"""Presence that is right with many tabs and many API instances.

Lease model. A user's connections are a hash ``connection id -> instance id``
under the user's hash tag. Each API instance holds a lease: a heartbeat key with
a short TTL (``state.presence_instance_ttl``), renewed by ``heartbeat`` and listed
in a registry. A connection is live iff the lease of its instance is; a user is
online iff they have a live connection. Instances nobody has heard of (not in the
registry, or registered but never heartbeated) hold no lease: they are dead.

Every write to a user (connect, disconnect, the sweep) is one Lua script on the
user's slot that gets the list of dead instances (registered, lease gone; read
just before, from the ``{instances}`` slot: another slot, so the script cannot
read it itself under Redis Cluster), first drops the user's connections on those,
then applies its change. The script is told who is dead, never who is alive: an
instance that registered after the list was read (another API instance, another
seed run starting at the same moment) is unknown to the writer and its
connections are kept, since a stale view must never drop a live connection.
So the user hash only ever holds connections recorded under a live lease, and
"the hash is not empty" is exactly the online state the events have announced: a
transition is published (from inside the script, once) when the hash goes from
empty to not empty or back, and the event stream follows the same rule as the
reads. A connect from an instance without a live lease records nothing.

An instance whose lease lapsed (paused, partitioned) may have been swept, or had
its connections dropped by other writes: ``heartbeat`` says so by returning False,
and the instance then calls ``resync`` with the connections it really holds. The
same ``resync`` repairs a disconnect that failed (Redis was down) on a live
instance. The sweep finds registered instances whose lease is gone, drops their
connections user by user, reports the users that went offline and forgets them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from devctl.state._redis import SyncExecutor, SyncFace, sync_op
from devctl.state.keys import KeySchema, user_from_key
from devctl.state.plan import Command, Eval, Plan, Script, cmd, pipeline
from devctl.state.validate import InvalidArgument, check_id, ttl_ms

LAST_SEEN_TTL_S = 30 * 24 * 3600
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

# KEYS: user connections, last_seen.
# ARGV: op (connect|disconnect|sweep), connection, instance, user, channel, last_seen ttl,
#       last_seen for connections dropped here ('' to leave it), '1' if the instance
#       held a live lease when the leases were read, dead instances...
# Returns {went offline, went online, recorded or removed (0/1), connections dropped}.
_UPDATE = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op, conn, instance = ARGV[1], ARGV[2], ARGV[3]
local dead_set = {}
for i = 9, #ARGV do dead_set[ARGV[i]] = true end
local function publish(online, via)
  redis.call('PUBLISH', ARGV[5], cjson.encode({type = 'presence', userId = ARGV[4],
                                               online = online, instance = via, ts = now}))
end
local held = redis.call('HGETALL', KEYS[1])
local count, dropped, dead = #held / 2, 0, ''
for i = 1, #held, 2 do
  if dead_set[held[i + 1]] then
    redis.call('HDEL', KEYS[1], held[i])
    dropped = dropped + 1
    dead = held[i + 1]
  end
end
local offline, online, changed = 0, 0, 0
if dropped > 0 then
  count = count - dropped
  if count == 0 then
    publish(false, dead)
    offline = 1
  end
  if ARGV[7] ~= '' and tonumber(ARGV[7]) > tonumber(redis.call('GET', KEYS[2]) or '0') then
    redis.call('SET', KEYS[2], ARGV[7], 'EX', ARGV[6])
  end
end
if op == 'connect' and ARGV[8] == '1' then
  changed = 1
  if redis.call('HSET', KEYS[1], conn, instance) == 1 then
    count = count + 1
    if count == 1 then
      publish(true, instance)
      online = 1
    end
  end
elseif op == 'disconnect' and redis.call('HGET', KEYS[1], conn) == instance then
  changed = 1
  redis.call('HDEL', KEYS[1], conn)
  count = count - 1
  if count == 0 then
    publish(false, instance)
    offline = 1
  end
end
if changed == 1 then
  redis.call('SET', KEYS[2], string.format('%.6f', now), 'EX', ARGV[6])
end
return {offline, online, changed, dropped}
"""
)

# KEYS: heartbeat key, registry. ARGV: ttl ms, instance id.
# Returns 1 if the lease was still held (renewed), 0 if it had lapsed or never existed.
_HEARTBEAT = Script(
    """
local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local held = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], now, 'PX', ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], now)
return held
"""
)

# KEYS: registry. ARGV: heartbeat key prefix (same {instances} hash tag as the registry,
# so these derived keys live on the registry's slot). Returns id, last heartbeat, alive
# (flat).
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
    stale_connections: int = 0  # held by dead instances, not yet dropped

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
    last_heartbeat: float | None  # None: registered by a connect, never heartbeated


@dataclass(frozen=True)
class Connected:
    """What one ``connect`` did; true iff it took the user offline -> online.

    ``went_offline``: before recording, the user's connections on dead instances were
    dropped and that took them offline (the transition a sweep would have reported);
    it comes first, so publish it before the online one. ``recorded`` is False when
    the instance holds no live lease: nothing was recorded (heartbeat, then resync).
    """

    went_online: bool
    went_offline: bool = False
    recorded: bool = True

    def __bool__(self) -> bool:
        return self.went_online


@dataclass(frozen=True)
class Leases:
    """The instances as one read of the registry saw them."""

    live: frozenset[str]
    dead: tuple[str, ...]  # registered, lease gone: writes drop their connections

    def with_dead(self, more: Iterable[str]) -> Leases:
        extra = set(more)
        return Leases(self.live - extra, tuple(sorted(set(self.dead) | extra)))


@dataclass
class SweepResult:
    dead_instances: list[str] = field(default_factory=list)
    went_offline: list[str] = field(default_factory=list)
    connections_removed: int = 0


@dataclass
class ResyncResult:
    """What ``resync`` changed. A user in both lists went offline first, then online."""

    went_online: list[str] = field(default_factory=list)
    went_offline: list[str] = field(default_factory=list)
    recorded: int = 0  # connections (re)recorded
    removed: int = 0  # connections the instance no longer holds


def check_instance_id(instance_id: str) -> str:
    if not _INSTANCE_ID.match(instance_id):
        raise InvalidArgument(
            f"invalid instance id {instance_id!r}: use 1-128 of A-Z a-z 0-9 . _ -"
        )
    return instance_id


class PresenceOps:
    """Every presence operation as a plan; ``Presence`` and ``AsyncPresence`` run them."""

    def __init__(self, keys: KeySchema, *, instance_ttl: float):
        self.keys = keys
        self.instance_ttl = instance_ttl

    # --- writes ----------------------------------------------------------------

    def connect(self, user_id: str, connection_id: str, instance_id: str) -> Plan[Connected]:
        """Record a connection held by a live instance; say which transitions it caused."""
        check_instance_id(instance_id)
        check_id(connection_id, "connection id")
        leases = yield from self.leases()
        [(offline, online, recorded, _)] = yield from self._run(
            self._connect_steps(leases, instance_id, user_id, connection_id)
        )
        return Connected(bool(online), bool(offline), bool(recorded))

    def connect_many(self, connections: list[tuple[str, str, str]]) -> Plan[list[Connected]]:
        """``connect`` for many (user, connection, instance) at once: one pipeline.

        For bulk loads (seeding): the leases are read once for the whole batch.
        """
        for _user, connection_id, instance_id in connections:
            check_instance_id(instance_id)
            check_id(connection_id, "connection id")
        if not connections:
            return []
        leases = yield from self.leases()
        steps = [
            step
            for user_id, connection_id, instance_id in connections
            for step in self._connect_steps(leases, instance_id, user_id, connection_id)
        ]
        return [
            Connected(bool(online), bool(offline), bool(recorded))
            for offline, online, recorded, _ in (yield from self._run(steps))
        ]

    def disconnect(self, user_id: str, connection_id: str, instance_id: str) -> Plan[bool]:
        """Forget a connection; True iff the user went online -> offline (once per transition)."""
        check_instance_id(instance_id)
        check_id(connection_id, "connection id")
        leases = yield from self.leases()
        [(offline, *_)] = yield from self._run(
            self._disconnect_steps(leases, instance_id, user_id, connection_id)
        )
        return bool(offline)

    def resync(self, instance_id: str, connections: Mapping[str, str]) -> Plan[ResyncResult]:
        """Make Redis agree with the connections (id -> user) an instance really holds.

        Call it when ``heartbeat`` returns False (the lease had lapsed: a sweep may have
        dropped them), and now and then to repair disconnects that failed.
        """
        check_instance_id(instance_id)
        index = self.keys.instance_connections(instance_id)
        recorded, flat = yield pipeline(cmd("hgetall", index), self._instances_call())
        leases = self._leases_of(self._instances(flat))
        gone = [(user, conn) for conn, user in recorded.items() if connections.get(conn) != user]
        held = list(connections.items())
        result = ResyncResult()
        for start in range(0, max(len(held), len(gone)), 500):
            adds, drops = held[start : start + 500], gone[start : start + 500]
            steps: list[Command | Eval] = []
            for conn, user in adds:
                steps += self._connect_steps(leases, instance_id, user, conn)
            for user, conn in drops:
                steps += self._disconnect_steps(leases, instance_id, user, conn)
            outcomes = yield from self._run(steps)
            users = [user for _, user in adds] + [user for user, _ in drops]
            for user, (offline, online, *_) in zip(users, outcomes, strict=True):
                if offline:
                    result.went_offline.append(user)
                if online:
                    result.went_online.append(user)
            result.recorded += sum(int(o[2]) for o in outcomes[: len(adds)])
            result.removed += sum(int(o[2]) for o in outcomes[len(adds) :])
        return result

    def _connect_steps(
        self, leases: Leases, instance_id: str, user_id: str, connection_id: str
    ) -> list[Command | Eval]:
        registry = self.keys.instance_registry()
        # Registry, then instance index, then the user: each covers the next, so the
        # sweep always finds what a connect left behind, even from a dead instance.
        steps: list[Command | Eval] = [cmd("hsetnx", registry, instance_id, "0")]
        if instance_id in leases.live:
            index = self.keys.instance_connections(instance_id)
            steps.append(cmd("hset", index, connection_id, user_id))
        steps.append(self._update(leases, "connect", user_id, connection_id, instance_id))
        # Once more after the user: a connect that lands after a sweep forgot this
        # instance registers it again (dead, never heartbeated), so its connection is
        # not left on an instance nobody knows (writes keep those: they may be new).
        steps.append(cmd("hsetnx", registry, instance_id, "0"))
        return steps

    def _disconnect_steps(
        self, leases: Leases, instance_id: str, user_id: str, connection_id: str
    ) -> list[Command | Eval]:
        return [
            self._update(leases, "disconnect", user_id, connection_id, instance_id),
            cmd("hdel", self.keys.instance_connections(instance_id), connection_id),
        ]

    def _update(
        self,
        leases: Leases,
        op: str,
        user_id: str,
        connection_id: str,
        instance_id: str,
        dropped_seen: str = "",
    ) -> Eval:
        return _UPDATE(
            [self.keys.connections(user_id), self.keys.last_seen(user_id)],
            [
                op,
                connection_id,
                instance_id,
                user_id,
                self.keys.presence_channel(),
                LAST_SEEN_TTL_S,
                dropped_seen,
                "1" if instance_id in leases.live else "0",
                *leases.dead,
            ],
        )

    @staticmethod
    def _run(steps: list[Command | Eval]) -> Plan[list[list[int]]]:
        """Run a pipeline of writes; the replies of its update scripts, in order.

        The other commands beside them (HSET, HSETNX, HDEL) reply with integers.
        """
        replies = yield pipeline(*steps)
        return [[int(x) for x in r] for r in replies if isinstance(r, list)]

    def leases(self) -> Plan[Leases]:
        """The instances' leases as one read of the registry sees them (for a write)."""
        return self._leases_of((yield from self.instances()))

    @staticmethod
    def _leases_of(known: list[InstanceInfo]) -> Leases:
        return Leases(
            frozenset(i.instance_id for i in known if i.alive),
            tuple(i.instance_id for i in known if not i.alive),
        )

    # --- leases ----------------------------------------------------------------

    def heartbeat(self, instance_id: str, ttl: float | None = None) -> Plan[bool]:
        """Renew an instance's lease for ``ttl`` s (default state.presence_instance_ttl).

        True if the lease was still held. False if it had lapsed or is new: while it
        was lapsed, a sweep or another write may have dropped the instance's
        connections, so the instance must ``resync`` the connections it holds.
        """
        check_instance_id(instance_id)
        lease_ms = ttl_ms(self.instance_ttl if ttl is None else ttl, "instance ttl")
        held = yield self._heartbeat(instance_id, lease_ms)
        return bool(held)

    def heartbeat_many(self, instance_ids: list[str], ttl: float | None = None) -> Plan[list[bool]]:
        """``heartbeat`` for many instances in one pipeline (bulk loads, seeding)."""
        lease_ms = ttl_ms(self.instance_ttl if ttl is None else ttl, "instance ttl")
        for instance_id in instance_ids:
            check_instance_id(instance_id)
        replies = yield pipeline(*(self._heartbeat(i, lease_ms) for i in instance_ids))
        return [bool(held) for held in replies]

    def _heartbeat(self, instance_id: str, lease_ms: int) -> Eval:
        return _HEARTBEAT(
            [self.keys.instance_alive(instance_id), self.keys.instance_registry()],
            [lease_ms, instance_id],
        )

    def instances(self) -> Plan[list[InstanceInfo]]:
        """Every registered instance, alive or dead (dead until swept)."""
        return self._instances((yield self._instances_call()))

    def _instances_call(self) -> Eval:
        return _INSTANCES([self.keys.instance_registry()], [self.keys.instance_alive("x")[:-1]])

    @staticmethod
    def _instances(flat: list[Any]) -> list[InstanceInfo]:
        return [
            InstanceInfo(str(flat[i]), bool(int(flat[i + 2])), float(flat[i + 1]) or None)
            for i in range(0, len(flat), 3)
        ]

    def retire(self, instance_id: str) -> Plan[SweepResult]:
        """Graceful shutdown of an instance: end its lease and sweep its connections now."""
        check_instance_id(instance_id)
        yield cmd("delete", self.keys.instance_alive(instance_id))
        known = yield from self.instances()
        return (yield from self._sweep([instance_id], known))

    def sweep(
        self,
        only: Iterable[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Plan[SweepResult]:
        """Drop the connections of dead instances; report users who went offline.

        ``progress(done, total)`` is called after each dead instance.
        """
        wanted = set(only) if only is not None else None
        known = yield from self.instances()
        dead = [
            i.instance_id
            for i in known
            if not i.alive and (wanted is None or i.instance_id in wanted)
        ]
        return (yield from self._sweep(dead, known, progress))

    def _sweep(
        self,
        dead: list[str],
        known: list[InstanceInfo],
        progress: Callable[[int, int], None] | None = None,
    ) -> Plan[SweepResult]:
        result = SweepResult(dead_instances=list(dead))
        leases = self._leases_of(known).with_dead(dead)
        last_beat = {i.instance_id: i.last_heartbeat for i in known}
        registry = self.keys.instance_registry()
        for done, instance_id in enumerate(dead, start=1):
            index = self.keys.instance_connections(instance_id)
            held: dict[Any, Any] = yield cmd("hgetall", index)
            users = sorted(set(held.values()))
            last = last_beat.get(instance_id)
            seen = f"{last:.6f}" if last else ""
            if users:
                outcomes = yield from self._run(
                    [self._update(leases, "sweep", user_id, "", "", seen) for user_id in users]
                )
                for user_id, (offline, _, _, dropped) in zip(users, outcomes, strict=True):
                    result.connections_removed += dropped
                    if offline:
                        result.went_offline.append(user_id)
            if held:
                yield cmd("hdel", index, *held)
            yield _FORGET([self.keys.instance_alive(instance_id), registry], [instance_id])
            # A connect from this instance that raced the sweep wrote its index entry
            # after our read: keep the instance registered so the next sweep gets it.
            if (yield cmd("hlen", index)):
                yield cmd("hsetnx", registry, instance_id, seen or "0")
            if progress is not None:
                progress(done, len(dead))
        return result

    # --- reads -----------------------------------------------------------------

    def bulk_status(
        self, user_ids: list[str], *, alive: Collection[str] | None = None
    ) -> Plan[dict[str, PresenceStatus]]:
        """Presence of many users in one round trip (one pipeline).

        ``alive``: the live instances, read by the caller (``instances()``) for many
        calls; without it the leases are read in the same pipeline as the users.
        """
        wanted = list(dict.fromkeys(user_ids))
        if not wanted:
            return {}
        steps: list[Command | Eval] = []
        for user_id in wanted:
            steps += [cmd("hgetall", self.keys.connections(user_id))]
            steps += [cmd("get", self.keys.last_seen(user_id))]
        if alive is None:
            steps.append(self._instances_call())
        replies = yield pipeline(*steps)
        if alive is None:
            alive = {i.instance_id for i in self._instances(replies[-1]) if i.alive}
        elif not isinstance(alive, set | frozenset):
            alive = set(alive)
        out: dict[str, PresenceStatus] = {}
        for n, user_id in enumerate(wanted):
            conns: dict[str, str] = replies[2 * n]
            seen = replies[2 * n + 1]
            # Only a live lease makes a connection count; an unknown instance has none.
            live = [inst for inst in conns.values() if inst in alive]
            out[user_id] = PresenceStatus(
                user_id=user_id,
                online=bool(live),
                connections=len(live),
                last_seen=float(seen) if seen is not None else None,
                instances=tuple(sorted(set(live))),
                stale_connections=len(conns) - len(live),
            )
        return out

    def status(self, user_id: str) -> Plan[PresenceStatus]:
        return (yield from self.bulk_status([user_id]))[user_id]

    def known_users(self, limit: int = 1000) -> Plan[list[str]]:
        """Users with connections or a last_seen (SCAN; for operators)."""
        found: dict[str, None] = {}
        for kind in ("connections", "last_seen"):
            pattern = self.keys.scan_pattern(kind)
            cursor = 0
            while True:
                cursor, keys = yield cmd("scan", cursor, match=pattern, count=1000)
                for key in keys:
                    found[user_from_key(key, self.keys.prefix)] = None
                    if len(found) >= limit:
                        return list(found)
                if not cursor:
                    break
        return list(found)


class Presence(SyncFace[PresenceOps]):
    """Connections, instance leases (heartbeats), resync, sweeps and bulk reads."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        instance_ttl: float,
        executor: SyncExecutor | None = None,
    ):
        super().__init__(client, keys, PresenceOps(keys, instance_ttl=instance_ttl), executor)

    @property
    def instance_ttl(self) -> float:
        return self.ops.instance_ttl

    def _leases(self) -> Leases:
        """The leases as a write would read them now (writes run ``ops.leases`` inside)."""
        return self.executor.run(self.ops.leases(), "Presence.leases")

    connect = sync_op(PresenceOps.connect)
    connect_many = sync_op(PresenceOps.connect_many)
    disconnect = sync_op(PresenceOps.disconnect)
    resync = sync_op(PresenceOps.resync)
    heartbeat = sync_op(PresenceOps.heartbeat)
    heartbeat_many = sync_op(PresenceOps.heartbeat_many)
    instances = sync_op(PresenceOps.instances)
    retire = sync_op(PresenceOps.retire)
    sweep = sync_op(PresenceOps.sweep)
    bulk_status = sync_op(PresenceOps.bulk_status)
    status = sync_op(PresenceOps.status)
    known_users = sync_op(PresenceOps.known_users)
