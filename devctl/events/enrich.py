"""Live state beside events (enriched `devctl tail`): is the subject online, how many sessions.

Reads through the Redis state domain (``devctl.state``): presence in one bulk call
per batch of events, sessions per distinct subject. No Kafka tool can show this.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from devctl.clients.endpoints import Endpoints
from devctl.config.loader import Settings
from devctl.errors import UnsupportedOperation


class _HasEvent(Protocol):
    event: dict[str, Any] | None


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value  # epoch ms or s
        return (
            datetime.fromtimestamp(seconds, UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z")
        )
    return str(value)


class StateEnricher:
    """Callable: a batch of tail records -> {subject: {online, connections, last_seen, sessions}}."""

    def __init__(self, services: Any):
        self.services = services

    @classmethod
    def from_settings(cls, settings: Settings, endpoints: Endpoints) -> StateEnricher:
        try:
            from devctl.state import from_settings
        except ImportError as exc:
            raise UnsupportedOperation(
                "live state needs the Redis state domain (devctl.state), which this build lacks",
                field="enrich",
                data={"value": True},
            ) from exc
        return cls(from_settings(settings, endpoints, stats=False))

    def __call__(self, records: Sequence[_HasEvent]) -> dict[str, dict[str, Any]]:
        subjects = sorted(
            {
                str(r.event["subject"])
                for r in records
                if r.event is not None and isinstance(r.event.get("subject"), str)
            }
        )
        if not subjects:
            return {}
        statuses = self.services.presence.bulk_status(subjects)
        out: dict[str, dict[str, Any]] = {}
        for subject in subjects:
            status = statuses.get(subject)
            sessions = self.services.sessions.list_for_user(subject)
            out[subject] = {
                "online": bool(getattr(status, "online", False)),
                "connections": int(getattr(status, "connections", 0) or 0),
                "last_seen": _iso(getattr(status, "last_seen", None)),
                "sessions": len(sessions),
            }
        return out
