"""`devctl test --group events` against the session stack: passes and leaves nothing behind."""

from __future__ import annotations

import json
from typing import Any

from devctl.clients.kafka_client import make_admin
from devctl.streams.groups import GroupAdmin


def test_event_checks_pass_and_clean_up(stack: Any, devctl: Any) -> None:
    admin = make_admin(stack.endpoints, stack.settings)
    topics_before = set(admin.list_topics(timeout=10).topics)
    groups_before = {g.group for g in GroupAdmin(stack.endpoints, stack.settings).summaries()}
    client = stack.redis()
    keys_before = set(client.scan_iter(match="*devctl-test-*"))
    result = devctl("test", "--group", "events", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert [c["name"] for c in report["checks"]] == [
        "envelope round trip through Kafka",
        "invalid event routed to the dead-letter topic",
        "consumer restart: no loss, no duplicate effect",
        "binary-mode and legacy records are read as typed events",
    ]
    assert all(c["status"] == "pass" for c in report["checks"]) and not report["cleanup_problems"]
    assert set(admin.list_topics(timeout=10).topics) == topics_before
    assert {
        g.group for g in GroupAdmin(stack.endpoints, stack.settings).summaries()
    } == groups_before
    assert set(client.scan_iter(match="*devctl-test-*")) == keys_before
    client.close()
