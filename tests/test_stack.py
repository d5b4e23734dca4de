"""devctl.stack: the `up` workflow as a domain function (no CLI), on a stack of its own."""

from __future__ import annotations

from pathlib import Path

from devctl.engines.local import LocalEngine
from devctl.stack import bring_up, doctor_checks
from tests.conftest import Stack, stack_settings


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


def test_down_names_what_the_consumers_never_consumed_on_a_forgetful_broker(
    stack: Stack, tmp_path: Path
) -> None:
    """Tansu keeps events in memory: `down` after serve says what the consumers left."""
    import uuid

    from devctl.consumers import consumer_group
    from devctl.engines.local import LocalEngine
    from devctl.events.producer import EventProducer
    from devctl.stack import _unconsumed
    from tests.consumers.conftest import commit_offsets

    group_id = f"down-{uuid.uuid4().hex[:8]}"
    settings = stack_settings(
        stack.data_dir,
        tmp_path,
        **{
            "redis.port": stack.settings.redis.port,
            "kafka.port": stack.settings.kafka.port,
            "kafka.group_id": group_id,
        },
    )
    engine = LocalEngine(settings)
    assert _unconsumed(engine) == []  # groups that never consumed: nothing to say
    with EventProducer(stack.endpoints, stack.settings) as producer:
        futures = [
            producer.publish("devconnect.user.login", {"userId": f"u{i}"}, topic="user-events")
            for i in range(5)
        ]
        placed = [f.result(timeout=10) for f in futures]
    # The analytics group committed just before these five: they are its backlog.
    commit_offsets(
        stack,
        consumer_group(settings, "analytics"),
        {
            ("user-events", p.partition): min(
                q.offset for q in placed if q.partition == p.partition and q.offset is not None
            )
            for p in placed
        },
    )
    [warning] = _unconsumed(engine)
    assert warning.startswith("the analytics consumer had")
    assert "not yet consumed" in warning
