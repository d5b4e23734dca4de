"""Configuration: schema, loader with provenance, environment names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devctl.config.loader import Settings, load_settings, redact_url
    from devctl.config.schema import TopicSpec

__all__ = ["Settings", "TopicSpec", "load_settings", "redact_url"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so importing devctl.config.envvars (the CLI's start-up
    # does) does not load the schema and the loader.
    if name in ("Settings", "load_settings", "redact_url"):
        from devctl.config import loader

        return getattr(loader, name)
    if name == "TopicSpec":
        from devctl.config.schema import TopicSpec

        return TopicSpec
    raise AttributeError(f"module 'devctl.config' has no attribute {name!r}")
