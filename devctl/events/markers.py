"""Records that are not DevConnect events but travel on its topics: `devctl test` probes.

Every record a check writes carries ``CHECK_HEADER`` and is a valid CloudEvent of
``CHECK_EVENT_TYPE`` (structured mode), so any CloudEvents reader parses it and
devctl's readers skip it: the consumer runtime always, ``tail`` unless asked to
show checks. Both the checks and the readers import these names from here.
"""

from __future__ import annotations

import json
import time

CHECK_HEADER = "devctl-check"
CHECK_EVENT_TYPE = "devctl.check.probe"
CHECK_SOURCE = "/devctl/test"
CHECK_TOPIC_PREFIX = "devctl-test-"  # topics and groups a `devctl test` run creates


def check_event(run_id: str, topic: str, event_id: str) -> bytes:
    """The value of one check record: a CloudEvent naming the run and the topic it probes."""
    from devctl.events.envelope import iso_millis

    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": CHECK_SOURCE,
            "type": CHECK_EVENT_TYPE,
            "time": iso_millis(int(time.time() * 1000)),
            "subject": run_id,
            "datacontenttype": "application/json",
            "data": {"run": run_id, "topic": topic},
        },
        separators=(",", ":"),
    ).encode()
