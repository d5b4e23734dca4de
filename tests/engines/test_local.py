"""The local engine's data-dir handling, and pidfiles written by an older devctl."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devctl.engines.local import LocalEngine
from devctl.processes import ProcessRecord, read_pidfile, stop
from tests.conftest import stack_settings


def test_concurrent_data_dir_probes_do_not_collide(tmp_path: Path) -> None:
    # Concurrent `up`s each probe the data dir before taking the lock; with one
    # shared probe file name, one deleted another's and failed "not writable".
    engines = [LocalEngine(stack_settings(tmp_path / "data", tmp_path)) for _ in range(6)]

    def probe_often(engine: LocalEngine) -> None:
        for _ in range(300):
            engine._prepare_data_dir()

    with ThreadPoolExecutor(len(engines)) as pool:
        for future in [pool.submit(probe_often, e) for e in engines]:
            future.result()
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".write")] == []


# The pidfile keys `devctl up` wrote before the general process record (no format, no name).
OLD_PIDFILE_KEYS = (
    "pid",
    "create_time",
    "executable",
    "port",
    "version",
    "argv",
    "process_name",
    "pgid",
)


def test_servers_started_before_an_upgrade_are_still_recognised(tmp_path: Path) -> None:
    engine = LocalEngine(stack_settings(tmp_path / "data", tmp_path))
    records: list[ProcessRecord] = []
    try:
        first = engine.up()
        for service in ("redis", "kafka"):
            path = engine.pidfile(service)
            record = read_pidfile(path)
            assert record is not None
            records.append(record)
            current = json.loads(path.read_text())
            path.write_text(json.dumps({k: current[k] for k in OLD_PIDFILE_KEYS}, indent=2))

        upgraded = LocalEngine(engine.settings)
        assert [s.health for s in upgraded.status()] == ["ok", "ok"]
        assert [s.pid for s in upgraded.status()] == [r.pid for r in records]
        again = upgraded.up()
        assert again.already_running == ["redis", "kafka"] and again.started == []
        assert again.endpoints == first.endpoints
        lines = upgraded.down().lines
        assert lines == [f"{r.name}: stopped (pid {r.pid})" for r in records]
    finally:
        engine.down()
        for record in records:  # if down found no pidfile, stop by record
            stop(record, 5)
