"""devctl.stack: the `up` workflow as a domain function (no CLI), on a stack of its own."""

from __future__ import annotations

from pathlib import Path

from devctl.engines.local import LocalEngine
from devctl.stack import bring_up, doctor_checks
from tests.conftest import stack_settings


def test_bring_up_applies_the_topics_and_is_idempotent(tmp_path: Path) -> None:
    settings = stack_settings(tmp_path / "data", tmp_path)
    engine = LocalEngine(settings)
    steps: list[str] = []
    try:
        first = bring_up(settings, engine, progress=steps.append)
        assert first.ok and first.engine == "local"
        assert sorted(first.created) == sorted(t.name for t in settings.topics)
        assert steps[-1] == "applying topics"
        again = bring_up(settings, LocalEngine(settings))
        assert again.ok and again.created == [] and again.unchanged == len(settings.topics)
        assert again.result.already_running == ["redis", "kafka"]
        names = [c.name for c in doctor_checks(engine)]
        assert names[-1] == "docker engine" and len(names) > 1
    finally:
        engine.down()
