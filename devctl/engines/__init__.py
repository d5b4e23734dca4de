"""Engines behind one interface. Adding one is a class and a line in ENGINES."""

from __future__ import annotations

from devctl.config.loader import Settings
from devctl.engines.base import Engine, read_stack_file
from devctl.engines.external import ExternalEngine
from devctl.engines.local import LocalEngine
from devctl.errors import UsageError

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


def ensure_no_other_stack(settings: Settings, chosen: Engine) -> None:
    """Refuse to switch engines while another engine's servers run in this data dir.

    Otherwise `down` would address the new engine and leave the old servers running.
    """
    for name, engine_class in ENGINES.items():
        if name != chosen.name and engine_class(settings).is_active():
            raise UsageError(
                f"a {name} stack is running in {settings.data_dir}",
                hint=f"`devctl down` it first, or use another data dir for the {chosen.name} engine",
                field="data_dir",
            )


__all__ = ["ENGINES", "Engine", "ensure_no_other_stack", "select_engine"]
