"""Where the running stack can be reached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devctl.config.loader import redact_url


@dataclass(frozen=True)
class Capabilities:
    """What an engine's servers can do and how devctl reaches them.

    Set by the engine; code outside devctl/engines reads these, never the engine's name.
    The defaults describe servers devctl did not start (any Kafka, any Redis).
    """

    # devctl starts the servers: `devctl up` is the remedy when one does not answer,
    # and the Redis URL carries the password the server was started with (or none),
    # so a later command's configured password must not replace it.
    starts_servers: bool = False
    # The broker implements CreatePartitions (Tansu 0.6 does not).
    can_grow_partitions: bool = True
    # Group joins settle faster with shorter session/heartbeat timings (Tansu's
    # coordinator waits a full session for members that left).
    short_group_session: bool = False
    # The broker keeps its events when it stops (Tansu's memory storage does not).
    keeps_events: bool = True


@dataclass(frozen=True)
class Endpoints:
    engine: str  # the engine's name, for display only: branch on ``caps``
    redis_url: str
    kafka_brokers: str
    # Services known not to run: a command that does not need them still works, and
    # a client for one of them fails at once, naming it (never a stranger on its port).
    not_running: tuple[str, ...] = ()
    caps: Capabilities = Capabilities()

    def as_env(self, *, redact: bool = True) -> dict[str, str]:
        """The endpoints under the environment names DevConnect uses."""
        url = redact_url(self.redis_url) if redact else self.redis_url
        return {"REDIS_URL": url, "KAFKA_BROKERS": self.kafka_brokers}

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "redis_url": self.redis_url,
            "kafka_brokers": self.kafka_brokers,
        }

    @property
    def unreachable_hint(self) -> str:
        return unreachable_hint(self.caps)


def unreachable_hint(caps: Capabilities) -> str:
    """What to do when a server does not answer: start it, or check where it is said to be."""
    if caps.starts_servers:
        return "start the stack with `devctl up`; `devctl status` shows what runs"
    return "check REDIS_URL / KAFKA_BROKERS and that those servers are up (`devctl status`)"
