"""Seeding for demos and load tests: runs never share instances or connections, and
long steps report progress (issue 9, task 11)."""

from __future__ import annotations

import threading
import time
from typing import Any

from devctl.state import StateServices
from devctl.state.admin import SEED_BATCH, SeededPresence, seed_presence, seed_sessions


def test_seed_presence_reports_progress_and_each_run_has_its_own_ids(
    state: StateServices,
) -> None:
    calls: list[tuple[int, int]] = []
    users = SEED_BATCH + 10  # more than one batch of connections
    first = seed_presence(state, users, 3, ttl=60, progress=lambda d, t: calls.append((d, t)))
    total = 3 + first.connections
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) >= 3
    assert first.went_online == users
    second = seed_presence(state, users, 3, ttl=0.2)
    assert not set(first.instances) & set(second.instances) and second.run_id != first.run_id
    assert second.went_online == 0
    time.sleep(0.3)
    swept: list[tuple[int, int]] = []
    result = state.presence.sweep(progress=lambda d, t: swept.append((d, t)))
    assert sorted(result.dead_instances) == sorted(second.instances)
    assert result.went_offline == [] and swept == [(1, 3), (2, 3), (3, 3)]
    statuses = state.presence.bulk_status(first.users)
    assert all(s.online and s.stale_connections == 0 for s in statuses.values())


def test_seed_sessions_reports_progress_per_batch(state: StateServices) -> None:
    calls: list[tuple[int, int]] = []
    seed_sessions(state, SEED_BATCH + 1, ttl=60, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(SEED_BATCH, SEED_BATCH + 1), (SEED_BATCH + 1, SEED_BATCH + 1)]


def test_concurrent_seeds_never_drop_each_others_connections(
    state: StateServices, make_state: Any
) -> None:
    """Two seeds at once (defect: a seed whose view of the leases predates the other's
    heartbeats took the other's connections for dead ones, dropped them and published
    offline then online). Each run starts fresh instances; repeated to meet the race."""
    users = 300

    def seed(
        services: StateServices, start: threading.Barrier, id_prefix: str, out: list[Any]
    ) -> None:
        start.wait()
        out.append(seed_presence(services, users, 3, ttl=60, id_prefix=id_prefix))

    for round_ in range(8):
        # Two clients of their own, as two processes would have.
        runs = [make_state(), make_state()]
        barrier = threading.Barrier(2)
        seeded: list[SeededPresence] = []
        threads = [
            threading.Thread(target=seed, args=(s, barrier, f"r{round_}-", seeded)) for s in runs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(seeded) == 2
        statuses = state.presence.bulk_status(seeded[0].users)
        assert sum(s.connections for s in statuses.values()) == 2 * seeded[0].connections
        assert all(s.stale_connections == 0 for s in statuses.values())
        # Exactly one online transition per user across both runs, and no offline one.
        assert seeded[0].went_online + seeded[1].went_online == users
