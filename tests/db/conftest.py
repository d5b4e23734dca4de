"""Fixtures of the database tests: a real PostgreSQL, and a fresh database per test on
each backend (defined in tests/db/postgres.py, where tests/api imports them too)."""

from __future__ import annotations

import pytest

from devctl.db.migrate import upgrade
from tests.db.postgres import database_url, postgres_server, postgres_url

__all__ = ["database_url", "migrated", "postgres_server", "postgres_url"]


@pytest.fixture
def migrated(database_url: str) -> str:
    """``database_url`` brought to the newest revision."""
    upgrade(database_url)
    return database_url
