"""DevConnect's event consumers, each run by `devctl serve` as a process of its own.

``CONSUMERS`` is the one registry: name -> "module:function", imported when the
consumer runs (as ``python -m devctl.consumers NAME``), never by the CLI or the
supervisor, which only read the names. The function takes the effective
``Settings`` and runs until SIGTERM or SIGINT, then stops the way the consumer
runtime does (finish the batch in flight, commit, leave the group) and returns
(None or an exit status). Adding one is a module and a line here.
``notifications``: connection and chat events become notifications (docs/notifications.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import TYPE_CHECKING

from devctl.errors import UsageError

if TYPE_CHECKING:
    from devctl.config.loader import Settings

CONSUMERS: dict[str, str] = {
    "analytics": "devctl.consumers.analytics:main",
    "notifications": "devctl.consumers.notifications:main",
}

ConsumerMain = Callable[["Settings"], "int | None"]


def registered() -> str:
    """The registered names, for messages ("none yet" when there are none)."""
    return ", ".join(CONSUMERS) or "none yet"


def check_names(names: Sequence[str], registry: Mapping[str, str] | None = None) -> None:
    """UsageError naming the first unknown consumer and listing the registered ones.

    ``registry`` defaults to CONSUMERS (tests pass their own).
    """
    known = CONSUMERS if registry is None else registry
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(
            f"unknown consumer {unknown[0]!r}",
            hint=f"registered consumers: {', '.join(known) or 'none yet'}",
            field="consumers",
            data={"value": ",".join(names), "unknown": unknown, "choices": list(known)},
        )


def consumer_group(settings: Settings, name: str) -> str:
    """The consumer group of consumer ``name``: ``<kafka.group_id>.<name>``."""
    return f"{settings.kafka.group_id}.{name}"


def consumer_main(name: str) -> ConsumerMain:
    """The function that runs consumer ``name`` (imported now)."""
    check_names([name])
    module, _, attr = CONSUMERS[name].partition(":")
    function: ConsumerMain = getattr(import_module(module), attr)
    return function


__all__ = ["CONSUMERS", "check_names", "consumer_group", "consumer_main", "registered"]
