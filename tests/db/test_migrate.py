"""Migrations: from empty to head, status, concurrent upgraders, the schema the models expect."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from devctl.db.engine import sqlite_path
from devctl.db.migrate import MIGRATION_LOCK_KEY, head, status, upgrade
from devctl.db.models import Base
from devctl.errors import OperationFailed
from tests.db.helpers import opened

UPGRADE = (
    "import json, sys\n"
    "from devctl.db.migrate import upgrade\n"
    "print('started', flush=True)\n"
    "report = upgrade(sys.argv[1])\n"
    "print(json.dumps([r.id for r in report.applied]))\n"
)


def test_upgrade_from_empty_and_status(database_url: str) -> None:
    before = status(database_url)
    assert before.current is None and before.head == head() == "0001"
    assert [r.id for r in before.pending] == ["0001"] and not before.up_to_date
    # A SQLite file is not created by looking at it.
    path = sqlite_path(database_url)
    assert path is None or not path.exists()

    report = upgrade(database_url)
    assert (report.from_revision, report.to_revision) == (None, "0001")
    assert [r.id for r in report.applied] == ["0001"]

    after = status(database_url)
    assert after.current == "0001" and after.up_to_date and after.pending == ()
    again = upgrade(database_url)
    assert again.applied == () and again.from_revision == again.to_revision == "0001"


def test_the_schema_is_what_the_models_describe(migrated: str) -> None:
    def compare(connection: object) -> tuple[list[object], dict[str, set[str]]]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})  # type: ignore[arg-type]
        inspector = inspect(connection)
        names = {
            table: {c["name"] for c in inspector.get_check_constraints(table)}
            | {c["name"] for c in inspector.get_unique_constraints(table)}
            | {i["name"] for i in inspector.get_indexes(table)}
            for table in ("users", "connection_requests", "messages", "outbox")
        }
        return compare_metadata(context, Base.metadata), names

    async def main() -> tuple[list[object], dict[str, set[str]], list[object]]:
        async with opened(migrated) as engine, engine.connect() as c:
            differences, names = await c.run_sync(compare)
            lease = (await c.execute(text("SELECT name, owner FROM outbox_relay"))).all()
            return differences, names, list(lease)

    differences, names, lease = asyncio.run(main())
    assert differences == []
    assert {"uq_users_email", "ck_users_membership_tier"} <= names["users"]
    assert {
        "uq_connection_requests_pair",
        "ck_connection_requests_pair_ordered",
        "ck_connection_requests_pair_matches",
        "ck_connection_requests_status",
        "ix_connection_requests_to_status",
        "ix_connection_requests_from_status",
    } <= names["connection_requests"]
    assert "ix_messages_conversation_ts_id" in names["messages"]
    assert {"uq_outbox_event_id", "ix_outbox_sent_at_id"} <= names["outbox"]
    assert [tuple(row) for row in lease] == [("outbox", None)]


def _hold_migration_lock(url: str) -> object:
    """Take what an upgrader takes first, from this process; a callable releases it."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("BEGIN IMMEDIATE")
        return lambda: (connection.execute("COMMIT"), connection.close())
    loop = asyncio.new_event_loop()

    async def take() -> object:
        engine_cm = opened(url)
        engine = await engine_cm.__aenter__()
        connection = await engine.connect()
        await connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        await connection.commit()

        async def release() -> None:
            await connection.close()
            await engine_cm.__aexit__(None, None, None)

        return release

    release = loop.run_until_complete(take())

    def done() -> None:
        loop.run_until_complete(release())  # type: ignore[operator]
        loop.close()

    return done


def _waiting_for_advisory_locks(url: str) -> int:
    async def main() -> int:
        async with opened(url) as engine, engine.connect() as c:
            query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            return int((await c.execute(text(query))).scalar_one())

    return asyncio.run(main())


def test_two_processes_upgrading_at_once(database_url: str, tmp_path: Path) -> None:
    release = _hold_migration_lock(database_url)
    processes: list[subprocess.Popen[str]] = []
    try:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", UPGRADE, database_url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
            )
            for _ in range(2)
        ]
        for p in processes:
            assert p.stdout is not None and p.stdout.readline() == "started\n"
        # Both get as far as the lock and wait there.
        if sqlite_path(database_url) is None:
            deadline = time.monotonic() + 20
            while _waiting_for_advisory_locks(database_url) < 2:
                assert time.monotonic() < deadline, "the upgraders never waited for the lock"
                time.sleep(0.05)
        else:
            time.sleep(0.5)
        assert [p.poll() for p in processes] == [None, None]
    finally:
        release()  # type: ignore[operator]
        outputs = []
        for p in processes:
            try:
                outputs.append(p.communicate(timeout=60))
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    assert [p.returncode for p in processes] == [0, 0], outputs
    applied = sorted(json.loads(out) for out, _err in outputs)
    assert applied == [[], ["0001"]]
    assert status(database_url).up_to_date


def test_a_database_from_a_newer_devctl(migrated: str) -> None:
    async def bump() -> None:
        async with opened(migrated) as engine, engine.begin() as c:
            await c.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    asyncio.run(bump())
    found = status(migrated)
    assert found.unknown_revision and found.current == "9999" and not found.up_to_date
    with pytest.raises(OperationFailed, match="does not know"):
        upgrade(migrated)
