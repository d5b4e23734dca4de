"""Engines behind one interface. Adding one is a module and a line in ENGINES.

This module imports no engine: the config schema and the CLI read the names from
ENGINES at import time, and `--help` must not pay for an engine's dependencies.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from devctl.errors import UsageError

if TYPE_CHECKING:
    from devctl.config.loader import Settings
    from devctl.engines.base import Engine

# The one list of engines: name -> "module:Class", imported when chosen.
ENGINES: dict[str, str] = {
    "local": "devctl.engines.local:LocalEngine",
    "external": "devctl.engines.external:ExternalEngine",
    "docker": "devctl.engines.docker:DockerEngine",
}
DEFAULT_ENGINE = "local"


def engine_class(name: str) -> type[Engine]:
    module, _, attr = ENGINES[name].partition(":")
    cls: type[Engine] = getattr(import_module(module), attr)
    return cls


def select_engine(settings: Settings) -> Engine:
    """The engine named by flag/env/config; else the one that brought the stack up; else local."""
    from devctl.engines.base import read_stack_file

    name = settings.engine
    if not settings.engine_is_explicit:
        recorded = read_stack_file(settings.data_dir)
        if recorded and recorded.get("engine") in ENGINES:
            name = str(recorded["engine"])
    return engine_class(name)(settings)


def ensure_no_other_stack(settings: Settings, chosen: Engine) -> None:
    """Refuse to switch engines while another engine's servers run in this data dir.

    Otherwise `down` would address the new engine and leave the old servers running.
    Cheap for every engine: an engine is imported and asked (is_active reads files,
    never the network) only if stack.json names it, or if pidfiles under run/ exist
    (servers kept after a failed `up` run without a stack.json naming them).
    """
    from devctl.engines.base import RUN_DIR, read_stack_file

    if not settings.data_dir.is_dir():
        return
    recorded = (read_stack_file(settings.data_dir) or {}).get("engine")
    pidfiles = any((settings.data_dir / RUN_DIR).glob("*.pid"))
    for name in ENGINES:
        if name == chosen.name or (name != recorded and not pidfiles):
            continue
        if engine_class(name)(settings).is_active():
            raise UsageError(
                f"a {name} stack is running in {settings.data_dir}",
                hint=f"`devctl down` it first, or use another data dir for the {chosen.name} engine",
                field="data_dir",
            )


__all__ = ["DEFAULT_ENGINE", "ENGINES", "engine_class", "ensure_no_other_stack", "select_engine"]
