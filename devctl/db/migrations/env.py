"""Alembic's environment for devctl's database.

``devctl.db.migrate`` runs Alembic programmatically: it passes an open synchronous
connection (from ``AsyncConnection.run_sync``) already in a locked transaction in
``config.attributes["connection"]``, and collects the revisions applied through
``config.attributes["applied"]``. Without a connection (writing a new revision with
``alembic.command.revision(migrate.alembic_config(url), ..., autogenerate=True)``),
it opens its own async engine on ``-x url=``, ``sqlalchemy.url`` or ``DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy.engine import Connection

from devctl.db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kw: Any) -> None:
    applied: list[str] | None = config.attributes.get("applied")

    def record(
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        if applied is not None:
            applied.extend(step.up_revision_ids)

    context.configure(
        target_metadata=target_metadata,
        # SQLite alters tables by copying them; autogenerate must write batch ops.
        render_as_batch=True,
        compare_type=True,
        on_version_apply=record,
        **kw,
    )


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    from devctl.db.engine import async_url

    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("DATABASE_URL")
    )
    if not url:
        raise SystemExit(
            "give the database: -x url=postgresql://..., sqlalchemy.url or DATABASE_URL"
        )
    return async_url(url)


async def _run_own_engine() -> None:
    from sqlalchemy.pool import NullPool

    from devctl.db.engine import make_engine

    engine = make_engine(_url(), statement_timeout=None, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    _run(given)
else:
    asyncio.run(_run_own_engine())
