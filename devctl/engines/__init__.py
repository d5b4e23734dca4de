"""Engines behind one interface. Adding one is a class and a line in ENGINES."""

from __future__ import annotations

from devctl.config.loader import Settings
from devctl.engines.base import Engine, read_stack_file
from devctl.engines.external import ExternalEngine
from devctl.engines.local import LocalEngine

ENGINES: dict[str, type[Engine]] = {
    "local": LocalEngine,
    "external": ExternalEngine,
}


def select_engine(settings: Settings) -> Engine:
    """The engine named by flag/env/config; else the one that brought the stack up; else local."""
    name = settings.engine
    if not settings.engine_is_explicit:
        recorded = read_stack_file(settings.data_dir)
        if recorded and recorded.get("engine") in ENGINES:
            name = str(recorded["engine"])
    return ENGINES[name](settings)


__all__ = ["ENGINES", "Engine", "select_engine"]
