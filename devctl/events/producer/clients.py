"""The producer's librdkafka client, and its replacement after a broker restart.

A broker that loses its producer state (the embedded engine after a restart: its
storage is memory) makes librdkafka's idempotent producer fail fatally. The
producer then replaces its client and re-sends the events the broker refused or
never saw (same event ids: consumers' idempotency guards absorb any copy);
events whose fate is unknown (timed out) are reported as failed as usual.

librdkafka does not always fail fatally: when nothing was in flight as the broker
died, it retries UNKNOWN_PRODUCER_ID with epoch bumps forever and every event
times out. Its ``eos`` debug log is watched for that loop (``LibrdkafkaLog``);
a loop with no delivery in between triggers the same replacement. Events the old
client still holds after a grace period are purged and sent again too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from devctl.events._batches import Headers
from devctl.events.envelope import event_headers
from devctl.events.producer.futures import DeliveryFuture
from devctl.events.producer.reports import Reports

log = logging.getLogger("devctl.events.producer")
_rdkafka_log = logging.getLogger("devctl.events.librdkafka")

# A broker that is down makes librdkafka fail every reconnect (and every pending
# request) a few times a second: up to 160 lines/s in a long-running API's log. Each
# kind of warning or error line is written once per this many seconds, the next one
# saying how many like it were left out; debug lines all pass (they were asked for).
_REPEAT_SECONDS = 10.0


class _Repeats:
    """Thread-safe: librdkafka logs and calls error_cb from its own threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[Any, tuple[float, int]] = {}  # kind -> (last written, left out)

    def admit(self, kind: Any) -> tuple[bool, int]:
        """(write this one, how many like it were left out since the last written)."""
        now = time.monotonic()
        with self._lock:
            last, skipped = self._seen.get(kind, (-_REPEAT_SECONDS, 0))
            if now - last < _REPEAT_SECONDS:
                self._seen[kind] = (last, skipped + 1)
                return False, 0
            self._seen[kind] = (now, 0)
            return True, skipped


def _left_out(count: int) -> str:
    return f" ({count} more like it in the last {_REPEAT_SECONDS:g} s not shown)" if count else ""


# Outcomes of a fatally failed client that mean "the broker did not store it":
# such events are sent again through the replacement client.
SEND_AGAIN = frozenset(
    {
        KafkaError._PURGE_QUEUE,
        KafkaError._PURGE_INFLIGHT,  # only from a replaced client (see Clients.rebuild)
        KafkaError._FATAL,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.INVALID_PRODUCER_EPOCH,
    }
)

# How long a replaced client is still served after its replacement.
_RETIRED_SECONDS = 5.0

# The unknown-producer-id loop: this many UNKPID log lines over at least this many
# seconds, with no delivery in between (a normal recovery takes one epoch bump).
_STUCK_LINES = 5
_STUCK_SECONDS = 1.0

# An event waiting to be sent again: (future, topic, value, key, headers).
Resend = tuple[DeliveryFuture, str, bytes | None, bytes | None, Headers | None]


def is_fatal(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and (error.fatal() or error.code() == KafkaError._FATAL)


def resend_headers(pending: DeliveryFuture) -> Headers | None:
    """The headers of a record to send again: an event's are rebuilt from its id and
    type, plus whatever else the future kept (see EventProducer._produce)."""
    if pending.event_id is not None and pending.type is not None:
        return [*event_headers(pending.type, pending.event_id), *(pending.kept_headers or ())]
    return pending.kept_headers


class LibrdkafkaLog:
    """librdkafka's ``logger``: forwards its log, and spots the unknown-producer-id loop."""

    def __init__(self, clients: Clients, generation: int):
        self._clients = clients
        self._generation = generation  # the client it watches (a replaced one is ignored)
        self._lines = 0
        self._since = 0.0
        self._delivered = -1

    def log(self, level: int, fmt: str, *args: Any) -> None:
        # confluent-kafka calls log(python_level, "%s [%s] %s", facility, name, text).
        if args and args[0] == "UNKPID":
            self._unknown_producer_id()
        elif args and args[0] == "IDEMPSTATE" and str(args[-1]).endswith("-> Assigned"):
            self._clients.id_assigned(self._generation)
        if _rdkafka_log.isEnabledFor(level):
            if level >= logging.WARNING:
                write, skipped = self._clients.repeats.admit(("rdkafka", level, args[:1]))
                if not write:
                    return
                if skipped:
                    fmt += _left_out(skipped).replace("%", "%%")
            _rdkafka_log.log(level, fmt, *args)

    def _unknown_producer_id(self) -> None:
        now = time.monotonic()
        delivered = self._clients.delivered()
        if delivered != self._delivered:
            self._delivered, self._lines, self._since = delivered, 0, now
        self._lines += 1
        if self._lines >= _STUCK_LINES and now - self._since >= _STUCK_SECONDS:
            self._lines, self._since = 0, now
            self._clients.mark_failed(
                self._generation,
                "the broker keeps refusing the producer id (UNKNOWN_PRODUCER_ID) and "
                "librdkafka does not recover",
            )


class Clients:
    """The current client (with its generation), the ones it replaced, and what waits
    to be sent again through it."""

    def __init__(self, conf: dict[str, Any], reports: Reports, brokers: str):
        self._reports = reports
        self._brokers = brokers
        self.repeats = _Repeats()  # throttles repeated warning lines (broker down)
        # Each client gets its own error callback and log watcher (see _new_client).
        self._own_error_cb = "error_cb" not in conf
        self.watch_log = bool(conf.get("enable.idempotence")) and "logger" not in conf
        if self.watch_log:
            debug = str(conf.get("debug") or "")
            conf["debug"] = f"{debug},eos" if debug else "eos"
        self._conf = conf
        # Set once the first client has its idempotent producer id (see warm_up).
        self.has_id = threading.Event()
        self._swap = threading.Lock()  # guards current, _fatal, _again and _retired
        self._fatal: str | None = None
        # Set by close() once the clients are drained: nothing is sent again after it.
        self.closed = threading.Event()
        # (client, generation), replaced whole: a reader never pairs one client with
        # another's generation.
        self.current: tuple[Producer, int] = (self._new_client(0), 0)
        self._again: list[Resend] = []
        self._retired: list[tuple[Producer, float]] = []  # replaced clients, still served

    def _new_client(self, generation: int) -> Producer:
        conf = dict(self._conf)
        if self._own_error_cb:
            conf["error_cb"] = functools.partial(self.client_error, generation=generation)
        if self.watch_log:
            conf["logger"] = LibrdkafkaLog(self, generation)
        return Producer(conf)

    @property
    def failed(self) -> bool:
        """The current client failed fatally and waits for its replacement."""
        return self._fatal is not None

    @property
    def has_work(self) -> bool:
        """Replaced clients to serve, or events to send again."""
        return bool(self._again or self._retired)

    def generation(self) -> int:
        return self.current[1]

    def delivered(self) -> int:
        return self._reports.stats.delivered

    def id_assigned(self, generation: int) -> None:
        if generation == 0:
            self.has_id.set()

    def mark_failed(self, generation: int, reason: str) -> bool:
        """Flag the client of ``generation`` for replacement; False if it is replaced already.

        A replaced client (still served for a while) can report fatal errors too: they
        must not condemn its healthy successor.
        """
        with self._swap:
            if generation != self.current[1]:
                return False
            self._fatal = self._fatal or reason
            return True

    def client_error(self, err: KafkaError, generation: int = 0) -> None:
        """librdkafka's ``error_cb`` of the client of ``generation``."""
        with self._reports.lock:
            self._reports.stats.errors += 1
        text = f"Kafka client error ({self._brokers}): {err.str()}"
        if not err.fatal():
            write, skipped = self.repeats.admit(("client", err.code()))
            if write:
                log.warning("%s%s", text, _left_out(skipped))
        elif self.mark_failed(generation, err.str()):
            log.error("%s (fatal: the client will be replaced)", text)
        else:
            log.warning("%s (from a client already replaced)", text)
        self._reports.tell(text)

    def take_back(self, pending: DeliveryFuture, err: KafkaError, msg: Message) -> bool:
        """Keep a refused event to send again if its client failed or was replaced."""
        if (
            err.code() in SEND_AGAIN
            and (self._fatal is not None or pending.generation != self.current[1])
            and not self.closed.is_set()
        ):
            # Delivery reports carry no headers: rebuilt from what the future kept.
            with self._swap:
                self._again.append(
                    (pending, msg.topic() or "", msg.value(), msg.key(), resend_headers(pending))
                )
            return True
        return False

    def take_again(self) -> list[Resend]:
        """The events waiting to be sent again (the list is emptied)."""
        with self._swap:
            again, self._again = self._again, []
        return again

    def rebuild(self, seen_generation: int) -> bool:
        """Replace a fatally failed client; True when this call did it (the caller then
        sends ``take_again()`` through the new one)."""
        with self._swap:
            old, generation = self.current
            if generation != seen_generation or self.closed.is_set():
                return False  # another thread did it, or close() has drained everything
            reason = self._fatal or "fatal error"
            self.current = (self._new_client(generation + 1), generation + 1)
            self._fatal = None
        with self._reports.lock:
            self._reports.stats.rebuilds += 1
        text = (
            f"the Kafka producer failed fatally ({reason}); continuing with a new one and "
            "re-sending the events the broker did not store"
        )
        log.error("%s", text)
        self._reports.tell(text)
        # Events the old client still holds come back as purged (never sent) and are
        # kept by take_back; in-flight ones report their own outcome.
        with contextlib.suppress(KafkaException):
            old.purge(in_queue=True, in_flight=False)
        deadline = time.monotonic() + 2.0
        while len(old) and time.monotonic() < deadline:
            with contextlib.suppress(KafkaException):
                old.poll(0.05)
        if len(old):
            # Still held (e.g. retried for ever against a broker that forgot the producer):
            # purged in-flight events are sent again through the new client.
            with contextlib.suppress(KafkaException):
                old.purge(in_queue=True, in_flight=True)
                old.poll(0.5)
        # A publisher that read the client just before the swap may still queue into the
        # old one: it stays served (and purged) for a while, so nothing waits there for ever.
        with self._swap:
            self._retired.append((old, time.monotonic()))
        return True

    def serve_retired(self) -> None:
        with self._swap:
            retired = list(self._retired)
        now = time.monotonic()
        done = []
        for client, since in retired:
            with contextlib.suppress(KafkaException):
                if len(client):
                    client.purge(in_queue=True, in_flight=True)
                client.poll(0)
            if not len(client) and now - since >= _RETIRED_SECONDS:
                done.append(client)
        if done:
            with self._swap:
                self._retired = [(c, t) for c, t in self._retired if not any(c is d for d in done)]

    def backlog(self, client: Producer) -> tuple[int, bool]:
        """(events waiting to be sent again or held by replaced clients, whether ``client``
        is still the current one and healthy): what flush() waits for besides ``client``."""
        with self._swap:
            waiting = len(self._again) + sum(len(c) for c, _since in self._retired)
            settled = client is self.current[0] and self._fatal is None
        return waiting, settled

    def retire_all(self) -> list[Producer]:
        """Every client still around (current first), for close() to drain."""
        with self._swap:
            clients = [self.current[0], *(c for c, _since in self._retired)]
            self._retired = []
        return clients
