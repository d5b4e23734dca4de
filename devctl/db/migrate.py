"""Apply and inspect the database's migrations (Alembic, run programmatically).

``upgrade`` is safe when several processes run it at once (API instances starting
together on one database): the migration runs in one transaction that first takes
a lock, an advisory lock on PostgreSQL and the write lock (BEGIN IMMEDIATE) on
SQLite, so the second process waits, then finds the schema at head and applies
nothing. Both backends run DDL transactionally, so a failed migration leaves the
database as it was.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devctl.db.engine import (
    Backend,
    async_url,
    backend,
    connection_errors,
    make_engine,
    redacted_url,
    sqlite_path,
)
from devctl.errors import OperationFailed

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("devctl.db.migrate")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key of the migration: any constant unlikely to be used by others.
MIGRATION_LOCK_KEY = 0x64657663746C  # "devctl"
# How long a second upgrader waits for the first one's SQLite write lock.
SQLITE_MIGRATION_WAIT = 120.0


@dataclass(frozen=True)
class Revision:
    id: str
    description: str


@dataclass(frozen=True)
class MigrationReport:
    """What ``upgrade`` did: the revision before and after, and what it applied, in order."""

    backend: Backend
    url: str  # password redacted
    from_revision: str | None
    to_revision: str | None
    applied: tuple[Revision, ...] = ()


@dataclass(frozen=True)
class MigrationStatus:
    """Where the database stands: its revision, the code's head, what ``upgrade`` would apply.

    ``unknown_revision``: the database is at a revision this devctl does not have (a
    newer devctl migrated it). ``exists`` is False for a SQLite file not created yet.
    """

    backend: Backend
    url: str  # password redacted
    current: str | None
    head: str
    pending: tuple[Revision, ...] = ()
    unknown_revision: bool = False
    exists: bool = True

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "url": self.url,
            "exists": self.exists,
            "current": self.current,
            "head": self.head,
            "up_to_date": self.up_to_date,
            "unknown_revision": self.unknown_revision,
            "pending": [{"revision": r.id, "description": r.description} for r in self.pending],
        }


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration for devctl's migrations, without an alembic.ini (for
    ``alembic.command`` calls such as writing a new revision)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolation: a '%' in a password must be doubled.
        config.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return config


def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision this devctl knows."""
    found = _script().get_current_head()
    assert found is not None, "devctl ships at least one migration"
    return found


def _revisions_after(script: ScriptDirectory, current: str | None) -> tuple[Revision, ...]:
    steps = list(script.iterate_revisions("heads", current or "base"))
    steps.reverse()  # iterate_revisions walks from the head down
    return tuple(Revision(s.revision, (s.doc or "").strip()) for s in steps)


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _migration_engine(url: str) -> AsyncEngine:
    from sqlalchemy.pool import NullPool

    # No statement timeout: waiting for another upgrader's lock is a statement too.
    return make_engine(
        url, statement_timeout=None, busy_timeout=SQLITE_MIGRATION_WAIT, poolclass=NullPool
    )


async def _dispose(engine: AsyncEngine) -> None:
    await engine.dispose()
    if engine.dialect.name == "sqlite":
        # aiosqlite stops the thread of a connection that failed to open without
        # waiting for it; the thread then reports to the event loop, which
        # asyncio.run may have closed meanwhile (a traceback on stderr at exit).
        await asyncio.sleep(0.02)


def _unknown_revision(url: str, current: str) -> OperationFailed:
    return OperationFailed(
        f"the database {redacted_url(url)} is at revision {current!r}, which this devctl "
        "does not know",
        hint="a newer devctl migrated it: use that version (or a database of this version)",
        data={"current": current, "head": head()},
    )


def _upgrade_on(connection: Connection, url: str) -> MigrationReport:
    from alembic import command
    from alembic.util import CommandError

    script = _script()
    before = _current(connection)
    if before is not None and _is_unknown(script, before):
        raise _unknown_revision(url, before)
    config = alembic_config()
    applied: list[str] = []
    config.attributes["connection"] = connection
    config.attributes["applied"] = applied
    try:
        command.upgrade(config, "heads")
    except CommandError as exc:
        raise OperationFailed(f"migration failed: {exc}") from exc
    after = _current(connection)
    revisions = tuple(
        Revision(rev, (script.get_revision(rev).doc or "").strip()) for rev in applied
    )
    return MigrationReport(backend(url), redacted_url(url), before, after, revisions)


def _is_unknown(script: ScriptDirectory, revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return script.get_revision(revision) is None
    except CommandError:
        return True


async def upgrade_async(url: str) -> MigrationReport:
    """Bring the database at ``url`` (any accepted form) to the newest revision.

    Creates the SQLite file (and its directory) if needed. Raises
    ``DatabaseUnavailable`` when the database cannot be reached.
    """
    url = async_url(url)
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = _migration_engine(url)
    try:
        with connection_errors(url):
            # The first statement of the transaction takes the lock (SQLite: BEGIN
            # IMMEDIATE, the engine's default), so the revision read next is final.
            async with engine.connect() as connection, connection.begin():
                if path is None:
                    from sqlalchemy import text

                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                report = await connection.run_sync(_upgrade_on, url)
    finally:
        await _dispose(engine)
    for revision in report.applied:
        log.info("applied migration %s (%s) to %s", revision.id, revision.description, report.url)
    return report


async def status_async(url: str) -> MigrationStatus:
    """The database's revision and what ``upgrade`` would apply; changes nothing (a
    SQLite file that does not exist yet is not created)."""
    url = async_url(url)
    script = _script()
    newest = head()
    kind = backend(url)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return MigrationStatus(
            kind, redacted_url(url), None, newest, _revisions_after(script, None), exists=False
        )
    engine = _migration_engine(url)
    try:
        with connection_errors(url):
            async with engine.connect() as connection:
                connection = await connection.execution_options(sqlite_begin="DEFERRED")
                current = await connection.run_sync(_current)
    finally:
        await _dispose(engine)
    if current is not None and _is_unknown(script, current):
        return MigrationStatus(kind, redacted_url(url), current, newest, unknown_revision=True)
    return MigrationStatus(
        kind, redacted_url(url), current, newest, _revisions_after(script, current)
    )


def upgrade(url: str) -> MigrationReport:
    """``upgrade_async`` for code without an event loop (the CLI, a process starting)."""
    return asyncio.run(upgrade_async(url))


def status(url: str) -> MigrationStatus:
    """``status_async`` for code without an event loop."""
    return asyncio.run(status_async(url))
