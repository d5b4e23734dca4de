"""Fixtures of the checks tests, shared with other test packages."""

from __future__ import annotations

from tests.cli.conftest import cli
from tests.state.conftest import private_redis

__all__ = ["cli", "private_redis"]
