"""URLs, engine set-up per backend, and failures that mean "the database is unavailable"."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from devctl.config.loader import load_settings
from devctl.db.engine import (
    async_url,
    backend,
    connection_errors,
    database_url,
    redacted_url,
    sqlite_path,
)
from devctl.db.ids import is_id, new_id
from devctl.engines.processes import free_port
from devctl.errors import ConfigError, DatabaseUnavailable
from tests.db.helpers import opened


def test_default_url_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(environ={"DEVCTL_DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path)
    assert database_url(settings) == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'devconnect.db'}"


def test_database_url_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"DATABASE_URL": "postgres://app:s3cret@db.internal:5432/devconnect"}, cwd=tmp_path
    )
    assert database_url(settings) == "postgresql+asyncpg://app:s3cret@db.internal:5432/devconnect"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgres://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("postgresql://u@h/d?sslmode=require", "postgresql+asyncpg://u@h/d?ssl=require"),
        ("sqlite:////var/lib/dc.db", "sqlite+aiosqlite:////var/lib/dc.db"),
        ("sqlite:///rel/dc.db", "sqlite+aiosqlite:////base/rel/dc.db"),
    ],
)
def test_async_url_forms(given: str, expected: str) -> None:
    assert async_url(given, cwd=Path("/base")) == expected


@pytest.mark.parametrize("url", ["mysql://u@h/d", "sqlite://", "sqlite:///:memory:", "nonsense"])
def test_unusable_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        async_url(url)
    assert caught.value.key == "api.database_url"


def test_backend_and_redaction() -> None:
    assert backend("postgres://u@h/d") == "postgresql"
    assert backend("sqlite:///x.db") == "sqlite"
    assert redacted_url("postgresql://app:s3cret@h:5432/d") == "postgresql://app:***@h:5432/d"
    assert "s3cret" not in redacted_url("postgresql://app:s3cret@h:5432/d?x=1")
    assert sqlite_path("sqlite:////tmp/a.db") == Path("/tmp/a.db")
    assert sqlite_path("postgresql://u@h/d") is None


def test_ids_look_like_object_ids() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_id(i) and len(i) == 24 for i in ids)
    assert not is_id("ABCDEF0123456789abcdef01") and not is_id("xyz")


def test_sqlite_connections_are_set_up(tmp_path: Path) -> None:
    async def main() -> tuple[object, ...]:
        async with opened(f"sqlite:///{tmp_path / 'x.db'}") as engine, engine.connect() as c:
            names = ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            return tuple([(await c.execute(text(f"PRAGMA {name}"))).scalar() for name in names])

    # synchronous 1 is NORMAL; busy_timeout in milliseconds.
    assert asyncio.run(main()) == ("wal", 1, 1, 5000)


def test_postgres_connections_have_a_statement_timeout(postgres_url: str) -> None:
    async def main() -> object:
        async with opened(postgres_url, statement_timeout=0.2) as engine, engine.connect() as c:
            assert (await c.execute(text("SHOW statement_timeout"))).scalar() == "200ms"
            with connection_errors(postgres_url):
                await c.execute(text("SELECT pg_sleep(2)"))
        return None

    with pytest.raises(DatabaseUnavailable, match="statement timeout"):
        asyncio.run(main())


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_an_unreachable_database_is_unavailable(kind: str, tmp_path: Path) -> None:
    url = (
        f"postgresql://app:s3cret@127.0.0.1:{free_port()}/devconnect"
        if kind == "postgresql"
        else f"sqlite:///{tmp_path / 'missing-dir' / 'sub' / 'x.db'}"
    )

    async def main() -> None:
        async with opened(url) as engine:
            with connection_errors(url):
                async with engine.connect() as c:
                    await c.execute(text("SELECT 1"))

    with pytest.raises(DatabaseUnavailable) as caught:
        asyncio.run(main())
    assert caught.value.exit_code == 3
    assert "s3cret" not in caught.value.message
    assert caught.value.data["backend"] == kind


def test_a_missing_postgres_database_is_unavailable(postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_database"

    async def main() -> None:
        async with opened(url) as engine:
            with connection_errors(url):
                await (await engine.connect()).close()

    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        asyncio.run(main())


def test_other_errors_pass_through(database_url: str) -> None:
    async def main() -> None:
        async with opened(database_url) as engine, engine.connect() as c:
            with connection_errors(database_url):
                await c.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(Exception) as caught:
        asyncio.run(main())
    assert not isinstance(caught.value, DatabaseUnavailable)


def test_a_connection_the_server_drops_is_unavailable(postgres_url: str) -> None:
    async def main() -> None:
        async with opened(postgres_url) as engine:
            victim = await engine.connect()
            pid = (await victim.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await victim.commit()
            async with engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            try:
                with connection_errors(postgres_url):
                    await victim.execute(text("SELECT 1"))
            finally:
                await victim.close()

    with pytest.raises(DatabaseUnavailable, match="connection was lost"):
        asyncio.run(main())
