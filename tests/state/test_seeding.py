"""Seeding for demos and load tests: runs never share instances or connections, and
long steps report progress (issue 9, task 11)."""

from __future__ import annotations

import time

from devctl.state import StateServices
from devctl.state.admin import SEED_BATCH, seed_presence, seed_sessions


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
