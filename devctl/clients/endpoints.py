"""Where the running stack can be reached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devctl.config.loader import redact_url


@dataclass(frozen=True)
class Endpoints:
    engine: str
    redis_url: str
    kafka_brokers: str
    # Services known not to run: a command that does not need them still works, and
    # a client for one of them fails at once, naming it (never a stranger on its port).
    not_running: tuple[str, ...] = ()

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
        return unreachable_hint(self.engine)


def unreachable_hint(engine: str) -> str:
    """What to do when a server does not answer, by engine."""
    if engine == "external":
        return "check REDIS_URL / KAFKA_BROKERS and that those servers are up (`devctl status`)"
    return "start the stack with `devctl up`; `devctl status` shows what runs"
