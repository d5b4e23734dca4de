"""Presence: multi-tab, multi-instance, exactly-once transitions, sweep, bulk reads."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from devctl.state import StateServices
from devctl.state.pubsub import PresenceChange, Subscriber
from devctl.state.validate import InvalidArgument


def drain(sub: Subscriber, *users: str, quiet: float = 0.3) -> list[PresenceChange]:
    """Every presence change of ``users`` until the channel stays quiet for ``quiet`` s."""
    out: list[PresenceChange] = []
    while True:
        got = sub.get(timeout=quiet)
        if got is None:
            return out
        if got.message is not None and got.message.user_id in users:
            out.append(got.message)


def test_two_tabs_one_online_one_offline(state: StateServices) -> None:
    p = state.presence
    p.heartbeat("api-1")
    assert p.connect("42", "tab-1", "api-1").went_online is True
    assert p.connect("42", "tab-2", "api-1").went_online is False
    assert not p.connect("42", "tab-2", "api-1")  # re-registering is idempotent
    assert p.status("42").connections == 2
    assert p.disconnect("42", "tab-1", "api-1") is False
    assert p.status("42").online is True
    assert p.disconnect("42", "tab-1", "api-1") is False  # unknown connection: no transition
    assert p.disconnect("42", "tab-2", "api-1") is True
    status = p.status("42")
    assert not status.online and status.connections == 0
    assert status.last_seen is not None and abs(status.last_seen - time.time()) < 5


def test_50_concurrent_connects_and_disconnects_over_3_instances(state: StateServices) -> None:
    p = state.presence
    instances = ["api-1", "api-2", "api-3"]
    for inst in instances:
        p.heartbeat(inst)
    with state.pubsub.subscribe([state.pubsub.presence_channel()]) as sub:
        barrier = threading.Barrier(50)

        def connect(n: int) -> bool:
            barrier.wait()
            return bool(p.connect("busy", f"conn-{n}", instances[n % 3]))

        def disconnect(n: int) -> bool:
            barrier.wait()
            return p.disconnect("busy", f"conn-{n}", instances[n % 3])

        with ThreadPoolExecutor(50) as pool:
            online = list(pool.map(connect, range(50)))
            assert p.status("busy").connections == 50
            offline = list(pool.map(disconnect, range(50)))
        events = drain(sub, "busy")
    assert online.count(True) == 1
    assert offline.count(True) == 1
    assert [e.online for e in events] == [True, False]
    assert not p.status("busy").online
    for inst in instances:  # the instance indexes are emptied too
        assert not state.client.exists(state.keys.instance_connections(inst))


def test_interleaved_churn_transitions_alternate_exactly(state: StateServices) -> None:
    """Random concurrent connects/disconnects: reported and published transitions alternate."""
    p = state.presence
    p.heartbeat("api-1")
    p.heartbeat("api-2")
    reported: list[bool] = []
    lock = threading.Lock()

    def churn(worker: int) -> None:
        rng = random.Random(worker)
        for round_ in range(15):
            conn, inst = f"w{worker}-{round_}", rng.choice(["api-1", "api-2"])
            if p.connect("churny", conn, inst):
                with lock:
                    reported.append(True)
            time.sleep(rng.random() / 500)
            if p.disconnect("churny", conn, inst):
                with lock:
                    reported.append(False)

    with state.pubsub.subscribe([state.pubsub.presence_channel()]) as sub:
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(churn, range(12)))
        events = [e.online for e in drain(sub, "churny")]
    assert events, "no transitions at all"
    assert events == [True, False] * (len(events) // 2)  # strictly alternating, ends offline
    assert sorted(reported) == sorted(events)
    assert not p.status("churny").online


def test_killed_instance_users_go_offline_after_the_sweep(state: StateServices) -> None:
    p = state.presence
    p.heartbeat("doomed", ttl=0.3)
    p.heartbeat("healthy", ttl=30)
    for n in range(5):
        p.connect(f"u{n}", f"c{n}", "doomed")
    p.connect("u0", "c0-b", "healthy")  # u0 also has a tab on a live instance
    assert p.sweep().went_offline == []  # nothing is dead yet
    time.sleep(0.4)  # the doomed instance stops heartbeating: it is "killed"
    before = p.bulk_status([f"u{n}" for n in range(5)])
    assert [before[f"u{n}"].online for n in range(5)] == [True, False, False, False, False]
    assert before["u1"].stale_connections == 1
    with state.pubsub.subscribe([state.pubsub.presence_channel()]) as sub:
        result = p.sweep()
        published = drain(sub, "u0", "u1", "u2", "u3", "u4")
    assert result.dead_instances == ["doomed"]
    assert sorted(result.went_offline) == ["u1", "u2", "u3", "u4"]
    assert result.connections_removed == 5
    assert sorted(e.user_id for e in published) == ["u1", "u2", "u3", "u4"]
    assert not any(e.online for e in published)
    assert p.status("u0").online and p.status("u0").connections == 1
    assert {i.instance_id for i in p.instances()} == {"healthy"}
    assert not state.client.exists(state.keys.instance_connections("doomed"))
    assert p.sweep().went_offline == []
    # last_seen of a swept user is the dead instance's last heartbeat, not the sweep time
    seen = p.status("u1").last_seen
    assert seen is not None and time.time() - seen >= 0.35


def test_concurrent_sweeps_report_each_user_once(state: StateServices) -> None:
    p = state.presence
    p.heartbeat("gone", ttl=0.2)
    for n in range(30):
        p.connect(f"s{n}", f"c{n}", "gone")
    time.sleep(0.3)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: p.sweep(), range(4)))
    offline = [u for r in results for u in r.went_offline]
    assert sorted(offline) == sorted(f"s{n}" for n in range(30))


def test_heartbeat_ttl_and_registry(make_state: Callable[..., StateServices]) -> None:
    services = make_state(presence_instance_ttl=1)
    p = services.presence
    p.heartbeat("api-1")
    assert 0 < services.client.pttl(services.keys.instance_alive("api-1")) <= 1000
    assert [(i.instance_id, i.alive) for i in p.instances()] == [("api-1", True)]
    time.sleep(1.1)
    assert [(i.instance_id, i.alive) for i in p.instances()] == [("api-1", False)]
    p.heartbeat("api-1")  # came back before any sweep: alive again
    assert p.instances()[0].alive
    assert p.sweep().dead_instances == []


def test_retire_marks_an_instance_users_offline_now(state: StateServices) -> None:
    p = state.presence
    p.heartbeat("api-1")
    p.connect("42", "c1", "api-1")
    result = p.retire("api-1")
    assert result.went_offline == ["42"]
    assert not p.status("42").online


def test_bulk_status_is_one_round_trip(
    state: StateServices, round_trips: Callable[[], Any]
) -> None:
    p = state.presence
    p.heartbeat("api-1")
    users = [f"b{n}" for n in range(100)]
    for user in users[::2]:
        p.connect(user, f"conn-{user}", "api-1")
    p.bulk_status(users[:1])  # loads the script once
    with round_trips() as sent:
        statuses = p.bulk_status(users)
    assert sent.round_trips == 1
    assert sorted(set(sent.commands)) == ["EVALSHA", "GET", "HGETALL"]
    assert [statuses[u].online for u in users] == [n % 2 == 0 for n in range(100)]
    assert statuses["b0"].connections == 1 and statuses["b0"].last_seen is not None
    assert statuses["b1"].last_seen is None
    assert p.bulk_status([]) == {}


def test_instance_ids_are_validated(state: StateServices) -> None:
    with pytest.raises(InvalidArgument):
        state.presence.connect("42", "c", "bad id with spaces")
    with pytest.raises(InvalidArgument):
        state.presence.heartbeat("{evil}")
    with pytest.raises(InvalidArgument, match="must not be empty"):
        state.presence.status("")
    with pytest.raises(InvalidArgument):
        state.presence.heartbeat("api-1", ttl=float("inf"))


def test_an_instance_without_a_lease_makes_nobody_online(state: StateServices) -> None:
    """Never heartbeated, or unknown to the registry: its connections count for nothing."""
    p = state.presence
    ghost = p.connect("ghost", "c1", "never-heartbeat")
    assert not ghost and not ghost.recorded
    assert not p.status("ghost").online
    result = p.sweep()  # connect registered the instance, so the sweep finds it
    assert result.dead_instances == ["never-heartbeat"] and result.went_offline == []
    assert p.instances() == []
    # A connection on an instance the registry does not know (swept and forgotten while
    # a late write landed) is dead for reads too.
    state.client.hset(state.keys.connections("ghost"), "c2", "forgotten")
    assert not p.status("ghost").online and p.status("ghost").stale_connections == 1


def test_a_connect_racing_the_sweep_of_its_instance_leaves_nobody_online(
    state: StateServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = state.presence
    p.heartbeat("paused", ttl=0.2)
    p.connect("u1", "c1", "paused")
    time.sleep(0.3)
    index = state.keys.instance_connections("paused")
    real_hgetall = state.client.hgetall

    def hgetall_then_late_connect(name: str) -> Any:
        found = real_hgetall(name)
        if name == index:  # the paused instance wakes up right after the sweep read its index
            p.connect("u2", "c2", "paused")
        return found

    monkeypatch.setattr(state.client, "hgetall", hgetall_then_late_connect)
    result = p.sweep()
    monkeypatch.undo()
    assert result.went_offline == ["u1"]
    statuses = p.bulk_status(["u1", "u2"])
    assert not statuses["u1"].online and not statuses["u2"].online
    assert p.sweep().went_offline == []
    assert not state.client.exists(state.keys.connections("u2"))


def test_a_write_with_a_stale_view_keeps_connections_of_instances_it_does_not_know(
    state: StateServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instance B registers after instance A's write read the leases: A must not take B's
    connections for dead ones (defect: concurrent seeds dropped each other's)."""
    p = state.presence
    p.heartbeat("api-a")
    p.heartbeat("crashed", ttl=0.2)
    p.connect("u1", "c-crashed", "crashed")
    time.sleep(0.3)
    stale = p._leases()  # what A read before B existed
    p.heartbeat("api-b")
    assert p.connect("u1", "c-b", "api-b").went_offline  # B's write drops the crashed tab
    with state.pubsub.subscribe([state.pubsub.presence_channel()]) as sub:
        monkeypatch.setattr(p, "_leases", lambda: stale)
        connected = p.connect("u1", "c-a", "api-a")
        assert not connected.went_online and not connected.went_offline
        assert drain(sub, "u1") == []
    monkeypatch.undo()
    status = p.status("u1")
    assert status.connections == 2 and status.instances == ("api-a", "api-b")


def test_reconnect_before_the_sweep_reports_offline_then_online(state: StateServices) -> None:
    """The transitions follow the read rule: a dead instance's tab does not keep anyone online."""
    p = state.presence
    p.heartbeat("crashed", ttl=0.2)
    p.heartbeat("api-2", ttl=30)
    with state.pubsub.subscribe([state.pubsub.presence_channel()]) as sub:
        assert p.connect("42", "old-tab", "crashed")
        time.sleep(0.3)
        assert not p.status("42").online  # reads already say offline
        again = p.connect("42", "new-tab", "api-2")  # the client reconnects elsewhere
        assert again.went_online and again.went_offline and again.recorded
        assert p.sweep().went_offline == []  # the connect already dropped the dead tab
        events = [(e.online, e.instance) for e in drain(sub, "42")]
    assert events == [(True, "crashed"), (False, "crashed"), (True, "api-2")]
    status = p.status("42")
    assert status.online and status.connections == 1 and status.stale_connections == 0


def test_a_lapsed_lease_is_reported_and_resync_restores_the_connections(
    state: StateServices,
) -> None:
    p = state.presence
    assert p.heartbeat("api-1", ttl=0.2) is False  # a new lease: nothing to resync yet
    assert p.heartbeat("api-1", ttl=0.2) is True
    p.connect("42", "tab", "api-1")
    time.sleep(0.3)  # the instance pauses past its TTL...
    assert p.sweep().went_offline == ["42"]  # ...and is swept
    assert p.heartbeat("api-1", ttl=30) is False  # on waking up it learns it lost its lease
    result = p.resync("api-1", {"tab": "42"})
    assert result.went_online == ["42"] and result.recorded == 1
    assert p.status("42").online
    assert p.heartbeat("api-1", ttl=30) is True


def test_resync_clears_connections_whose_disconnect_failed(state: StateServices) -> None:
    p = state.presence
    p.heartbeat("api-1")
    p.connect("42", "tab-1", "api-1")
    p.connect("42", "tab-2", "api-1")
    p.connect("43", "tab-3", "api-1")
    # Disconnects of tab-2 and tab-3 failed (Redis was away): the instance tells the truth.
    result = p.resync("api-1", {"tab-1": "42"})
    assert result.removed == 2 and result.went_offline == ["43"] and result.went_online == []
    assert p.status("42").connections == 1 and not p.status("43").online
    assert state.client.hgetall(state.keys.instance_connections("api-1")) == {"tab-1": "42"}
    assert p.resync("api-1", {}).went_offline == ["42"]
