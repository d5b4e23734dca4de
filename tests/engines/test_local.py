"""The local engine's data-dir handling, without servers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devctl.engines.local import LocalEngine
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
