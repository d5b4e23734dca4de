"""The stack under a serve (devctl.stack.serve_stack), on real Valkey and Tansu.

A stack the serve brought up is stopped when the serve's block ends, whichever way
it ends; one that ran before, even in part, or one a detached serve keeps, stays.
Each test that starts a stack of its own stops it on the way out, even when it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devctl import processes
from devctl.engines.local import LocalEngine
from devctl.errors import StackNotRunning
from devctl.processes import ProcessRecord
from devctl.stack import serve_stack
from tests.conftest import Stack, stack_settings


class _Boom(Exception):
    pass


def _records(engine: LocalEngine) -> dict[str, ProcessRecord]:
    out = {}
    for service in ("redis", "kafka"):
        record = processes.read_pidfile(engine.pidfile(service))
        if record is not None:
            out[service] = record
    return out


def _alive(record: ProcessRecord) -> bool:
    try:
        return psutil.Process(record.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[LocalEngine, list[ProcessRecord]]]:
    """An engine on a data dir where nothing runs; whatever it started is stopped after."""
    engine = LocalEngine(stack_settings(tmp_path / "data", tmp_path))
    seen: list[ProcessRecord] = []
    try:
        yield engine, seen
    finally:
        engine.down()
        for record in seen:
            processes.stop(record, 5)


def test_a_stack_the_serve_started_stops_when_the_serve_fails(
    fresh: tuple[LocalEngine, list[ProcessRecord]],
) -> None:
    engine, seen = fresh
    notices: list[str] = []
    with (
        pytest.raises(_Boom),
        serve_stack(engine.settings, engine, on_notice=notices.append) as held,
    ):
        records = _records(engine)
        seen.extend(records.values())
        assert held.owned and held.report is not None
        assert held.report.result.started == ["redis", "kafka"]
        assert all(_alive(r) for r in records.values())
        raise _Boom  # migrations failed, the supervisor crashed, Ctrl-C: any way out
    assert notices[0] == "stopping the local stack serve started (redis, kafka)"
    assert notices[1:] == [
        f"redis: stopped (pid {records['redis'].pid})",
        f"kafka: stopped (pid {records['kafka'].pid})",
    ]
    assert not any(_alive(r) for r in records.values())
    with pytest.raises(StackNotRunning):
        engine.endpoints()


def test_a_kept_stack_outlives_the_block(fresh: tuple[LocalEngine, list[ProcessRecord]]) -> None:
    engine, seen = fresh
    notices: list[str] = []
    with serve_stack(engine.settings, engine, on_notice=notices.append) as held:
        seen.extend(_records(engine).values())
        held.keep()  # a detached serve runs on it now
    assert notices == []
    assert all(_alive(r) for r in _records(engine).values())
    engine.endpoints()


def test_a_partly_running_stack_is_left_running(
    fresh: tuple[LocalEngine, list[ProcessRecord]],
) -> None:
    engine, seen = fresh
    engine.up()
    before = _records(engine)
    seen.extend(before.values())
    processes.stop(before["kafka"], 5)  # kafka down, redis up: someone relies on it
    with serve_stack(engine.settings, engine) as held:
        seen.extend(_records(engine).values())
        assert held.report is not None
        assert held.report.result.started == ["kafka"]
        assert held.report.result.already_running == ["redis"]
        assert not held.owned
    after = _records(engine)
    assert after["redis"] == before["redis"] and _alive(after["redis"])
    assert _alive(after["kafka"])


def test_a_running_stack_is_used_and_left_alone(stack: Stack) -> None:
    before = _records(stack.engine)
    notices: list[str] = []
    with serve_stack(stack.settings, stack.engine, on_notice=notices.append) as held:
        assert held.report is None and not held.owned
    assert notices == []
    assert _records(stack.engine) == before
    assert all(_alive(r) for r in before.values())
    stack.engine.endpoints()
