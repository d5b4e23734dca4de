"""Configuration: schema, loader with provenance, environment names."""

from devctl.config.loader import Settings, load_settings, redact_url
from devctl.config.schema import TopicSpec

__all__ = ["Settings", "TopicSpec", "load_settings", "redact_url"]
