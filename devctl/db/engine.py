"""Database URLs and engines: SQLite (WAL, embedded default) or PostgreSQL, always async.

URLs are accepted in the forms users write (``postgres://``, ``postgresql://``,
``sqlite:///path``) and turned into SQLAlchemy's async drivers
(``postgresql+asyncpg://``, ``sqlite+aiosqlite:///``) by ``async_url``; every function
here takes either form. A database that is down, unreachable, too slow or refusing
connections surfaces as ``DatabaseUnavailable`` through ``connection_errors``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from devctl.errors import ConfigError, DatabaseUnavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from devctl.config.loader import Settings

Backend = Literal["sqlite", "postgresql"]

SQLITE_FILE = "devconnect.db"  # in the data dir, when api.database_url is unset
SETTING = "api.database_url"

# SQLite: how long a connection waits for another's write lock before "database is locked".
SQLITE_BUSY_TIMEOUT = 5.0
# The BEGIN of each SQLite transaction (execution option BEGIN_OPTION overrides it).
# IMMEDIATE takes the write lock up front: a transaction that reads and then writes
# cannot fail half-way because another wrote in between (SQLITE_BUSY_SNAPSHOT in WAL
# mode, which no busy timeout retries). Read-only paths may ask for DEFERRED.
BEGIN_OPTION = "sqlite_begin"
SQLITE_BEGIN_MODES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")

_DRIVERS: dict[str, Backend] = {
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "postgresql+asyncpg": "postgresql",
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
}
_ASYNC_DRIVER: dict[Backend, str] = {
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}
_URL_EXAMPLES = "postgresql://user:password@host:5432/db or sqlite:///path/to/file.db"


def database_url(settings: Settings) -> str:
    """The effective database URL with its async driver: ``api.database_url``, else
    SQLite in the data dir (``<data_dir>/devconnect.db``)."""
    given = settings.config.api.database_url
    if given is None:
        return f"{_ASYNC_DRIVER['sqlite']}:///{settings.data_dir / SQLITE_FILE}"
    return async_url(given, cwd=settings.cwd)


def _parse(url: str) -> URL:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(
            f"not a database URL: {redacted_url(url)}", key=SETTING, hint=f"e.g. {_URL_EXAMPLES}"
        ) from exc


def async_url(url: str, *, cwd: Path | None = None) -> str:
    """``url`` with the async driver of its backend; a relative SQLite path is made
    absolute against ``cwd`` (default: the working directory), as the data dir is."""
    parsed = _parse(url)
    kind = _DRIVERS.get(parsed.drivername)
    if kind is None:
        raise ConfigError(
            f"unsupported database {parsed.drivername!r} in {redacted_url(url)}",
            key=SETTING,
            hint=f"use PostgreSQL or SQLite: {_URL_EXAMPLES}",
        )
    if kind == "postgresql":
        query = dict(parsed.query)
        # libpq's sslmode (in DevConnect's URLs) is asyncpg's ssl argument.
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        parsed = parsed.set(drivername=_ASYNC_DRIVER[kind], query=query)
    else:
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            # Each pooled connection would see its own empty database.
            raise ConfigError(
                "an in-memory SQLite database cannot be shared by the API's connections",
                key=SETTING,
                hint="give a file: sqlite:///path/to/file.db (or unset it for the data dir)",
            )
        path = Path(database).expanduser()
        if not path.is_absolute() and not database.startswith("file:"):
            path = (cwd or Path.cwd()) / path
        parsed = parsed.set(drivername=_ASYNC_DRIVER[kind], database=str(path))
    return parsed.render_as_string(hide_password=False)


def backend(url: str) -> Backend:
    """``"sqlite"`` or ``"postgresql"``: the backend a URL (any accepted form) names."""
    kind = _DRIVERS.get(_parse(url).drivername)
    if kind is None:
        raise ConfigError(f"unsupported database URL {redacted_url(url)}", key=SETTING)
    return kind


def redacted_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for messages and logs."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not parseable: mask everything between the scheme and the host.
        scheme, sep, rest = url.partition("://")
        at = rest.rfind("@")
        return f"{scheme}{sep}***@{rest[at + 1 :]}" if sep and at >= 0 else url


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, None for PostgreSQL."""
    parsed = _parse(async_url(url))
    return Path(parsed.database or "") if _DRIVERS[parsed.drivername] == "sqlite" else None


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout: float = 10.0,
    connect_timeout: float = 5.0,
    statement_timeout: float | None = 30.0,
    sqlite_begin: str = "IMMEDIATE",
    busy_timeout: float = SQLITE_BUSY_TIMEOUT,
    **options: Any,
) -> AsyncEngine:
    """An async engine for ``url`` (any accepted form), set up for its backend.

    SQLite: every connection gets WAL journal mode, ``busy_timeout``,
    ``foreign_keys=ON`` and ``synchronous=NORMAL``; SQLAlchemy emits each BEGIN
    itself (``sqlite_begin``, overridable per connection with the execution option
    ``BEGIN_OPTION``). PostgreSQL: a bounded pool with pre-ping, a connect timeout
    and a statement timeout (server-side, and client-side a little later, so a
    database that stops answering fails the call instead of hanging it); None turns
    the statement timeout off (migrations). ``options`` go to ``create_async_engine``.
    """
    from sqlalchemy.ext.asyncio import create_async_engine

    url = async_url(url)
    if backend(url) == "sqlite":
        _create_private(sqlite_path(url))
        if sqlite_begin not in SQLITE_BEGIN_MODES:
            raise ValueError(f"sqlite_begin must be one of {SQLITE_BEGIN_MODES}")
        options.setdefault("connect_args", {}).setdefault("timeout", busy_timeout)
        engine = create_async_engine(url, **options)
        _set_up_sqlite(engine, sqlite_begin, busy_timeout)
        return engine
    connect_args: dict[str, Any] = {"timeout": connect_timeout}
    server_settings = {"application_name": "devctl"}
    if statement_timeout is not None:
        server_settings["statement_timeout"] = str(int(statement_timeout * 1000))
        connect_args["command_timeout"] = statement_timeout + 5
    connect_args["server_settings"] = server_settings
    connect_args.update(options.pop("connect_args", {}))
    if "poolclass" not in options:  # a NullPool (one-off engines) takes no sizing
        options.update(pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout)
    return create_async_engine(url, pool_pre_ping=True, connect_args=connect_args, **options)


def _create_private(path: Path | None) -> None:
    """Create a new SQLite file readable by its owner only (it holds emails and password
    hashes); SQLite gives its -wal and -shm files the same mode."""
    if path is None or str(path) in ("", ".", ":memory:") or path.exists():
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        pass  # SQLite itself reports what is wrong with the path, in its own words


def _set_up_sqlite(engine: AsyncEngine, begin: str, busy_timeout: float) -> None:
    from sqlalchemy import event

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling would skip BEGIN before SELECTs and
        # DDL; SQLAlchemy begins every transaction instead (_on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching a new database to WAL needs the write lock.
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(BEGIN_OPTION, begin)
        if mode not in SQLITE_BEGIN_MODES:
            raise ValueError(f"{BEGIN_OPTION} must be one of {SQLITE_BEGIN_MODES}")
        connection.exec_driver_sql(f"BEGIN {mode}")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine`` whose objects stay readable after commit (an API
    answers with what it just wrote, after the transaction)."""
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


# --- Failures that mean "the database is not there", as opposed to a bad query ---------

# SQLite result codes: busy past the timeout, cannot open the file, I/O error, disk full.
_SQLITE_UNAVAILABLE = {
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_NOTADB",
}
# PostgreSQL SQLSTATE classes and codes: connection exception, insufficient resources
# (too many connections), operator intervention (shutdown, starting up, statement
# timeout), invalid authorization, unknown database.
_PG_UNAVAILABLE_CLASSES = ("08", "53", "57", "28")
_PG_UNAVAILABLE_CODES = {"3D000"}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [getattr(current, "orig", None), current.__cause__]


def unavailable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means the database cannot be used right now, or None if it is
    another failure (a constraint, a bad query) that a retry would not cure."""
    import sqlalchemy.exc as sa_exc

    for error in _chain(exc):
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return "the connection was lost"
        if isinstance(error, sa_exc.TimeoutError):
            return "no connection became free in the pool in time"
        if isinstance(error, TimeoutError):
            return "it did not answer in time"
        if isinstance(error, OSError):
            return error.strerror or str(error) or type(error).__name__
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate[:2] in _PG_UNAVAILABLE_CLASSES or sqlstate in _PG_UNAVAILABLE_CODES
        ):
            return _first_line(error)
        if getattr(error, "sqlite_errorname", None) in _SQLITE_UNAVAILABLE:
            return _first_line(error)
    return None


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def as_unavailable(exc: BaseException, url: str) -> DatabaseUnavailable | None:
    """``DatabaseUnavailable`` for a failure that means the database is unusable, else None."""
    reason = unavailable_reason(exc)
    if reason is None:
        return None
    return DatabaseUnavailable(
        f"the database {redacted_url(url)} is unavailable: {reason}",
        data={"url": redacted_url(url), "backend": _backend_or_none(url)},
    )


def _backend_or_none(url: str) -> str | None:
    try:
        return backend(url)
    except ConfigError:
        return None


@contextmanager
def connection_errors(url: str) -> Iterator[None]:
    """Turn connection failures inside the block into ``DatabaseUnavailable``.

    A plain (synchronous) context manager: it wraps ``await`` calls as well, e.g.
    ``with connection_errors(url): await session.commit()``. Other errors pass.
    """
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        mapped = as_unavailable(exc, url)
        if mapped is None:
            raise
        raise mapped from exc
