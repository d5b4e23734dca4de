"""The newest events as they arrive: a group-less reader from the end of every topic.

It reads as `devctl tail` does (``devctl.events.tail.Tail``: partitions assigned,
nothing committed, so it never disturbs a consumer group), in a daemon thread
that keeps the last few lines. When the broker is away or the topics change, the
reader starts again from the (new) end.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from devctl.clients.endpoints import Endpoints
from devctl.config.loader import Settings
from devctl.events.tail import TailRecord

# How often the reader checks for new or deleted topics (a new topic is not read
# until it restarts).
TOPICS_CHECK_S = 10.0
RETRY_S = 1.0


@dataclass(frozen=True)
class EventLine:
    timestamp_ms: int
    topic: str
    partition: int
    offset: int
    type: str  # the event type; the legacy name; or "(not a valid event)"
    subject: str | None  # the event's subject, else the record's key

    def to_json(self) -> dict[str, object]:
        from devctl.events.envelope import iso_millis

        return {
            "time": iso_millis(self.timestamp_ms),
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "type": self.type,
            "subject": self.subject,
        }


def event_line(record: TailRecord) -> EventLine:
    event = record.event
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    if event is None:
        kind, subject = "(not a valid event)", key
    else:
        kind = str(event.get("type") or record.legacy or "?")
        found = event.get("subject")
        subject = str(found) if found is not None else key
    return EventLine(
        record.timestamp_ms, record.topic, record.partition, record.offset, kind, subject
    )


class EventFeed:
    """Keeps the last ``size`` events of all topics; ``lines()`` and ``error`` read it."""

    def __init__(
        self,
        endpoints_of: Callable[[], Endpoints],
        settings: Settings,
        *,
        size: int = 10,
    ):
        self._endpoints_of = endpoints_of
        self._settings = settings
        self._lines: deque[EventLine] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # None while reading; else why not (the broker is away, no topics yet, ...).
        self.error: str | None = "starting"
        self.seen = 0  # events read since the start

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="top-events", daemon=True)
            self._thread.start()

    def lines(self) -> list[EventLine]:
        """The newest last."""
        with self._lock:
            return list(self._lines)

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from devctl.observe.sources import reason

        while not self._stop.is_set():
            try:
                self._read()
            except Exception as exc:
                self.error = reason(exc)
            self._stop.wait(RETRY_S)

    def _topics(self, endpoints: Endpoints) -> list[str]:
        from devctl.clients.kafka_client import fetch_metadata, make_admin

        timeout = self._settings.kafka.request_timeout_ms / 1000
        metadata, _ = fetch_metadata(make_admin(endpoints, self._settings), endpoints, timeout)
        return sorted(t for t in metadata.topics if not t.startswith("__"))

    def _read(self) -> None:
        from devctl.events.tail import Start, Tail
        from devctl.observe.sources import SourceDown

        endpoints = self._endpoints_of()
        if "kafka" in endpoints.not_running:
            raise SourceDown(f"kafka of the {endpoints.engine} stack is not running")
        topics = self._topics(endpoints)
        if not topics:
            raise SourceDown("no topics yet")

        def notice(text: str) -> None:
            # The reader says when the broker stops answering and when it is back.
            self.error = None if "answers again" in text else text

        reader = Tail(
            endpoints,
            self._settings,
            topics,
            start=Start("end"),
            follow=True,
            poll_timeout=0.2,
            on_notice=notice,
        )
        checked = time.monotonic()
        for record in reader.records():  # closes the reader when left
            if self._stop.is_set():
                return
            if record is None:
                if self.error == "starting":
                    self.error = None
                if time.monotonic() - checked > TOPICS_CHECK_S:
                    checked = time.monotonic()
                    if self._topics(endpoints) != topics:
                        return  # read again, with the new topics
                continue
            line = event_line(record)
            with self._lock:
                self._lines.append(line)
                self.seen += 1
