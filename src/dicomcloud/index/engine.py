"""Async SQLAlchemy engines for the index, chosen by URL.

Users write plain URLs (``sqlite:///index.db``, ``postgresql://host/db``,
``mysql://host/db``); this module picks the async driver and the per-backend settings
that the index relies on: durable SQLite writes, utf8mb4 on MySQL, pre-pinged pools.
The SQLite index itself runs on a synchronous twin of the engine (``sqlite_sync_engine``,
see ``unit_of_work.SqliteRunner``); the async one serves migrations and ad-hoc queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from dicomcloud.errors import ConfigurationError

#: user-facing scheme -> SQLAlchemy async driver name
DRIVERS: dict[str, str] = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
    "mysql+aiomysql": "mysql+aiomysql",
}

#: milliseconds a SQLite writer waits for the lock before "database is locked"
SQLITE_BUSY_TIMEOUT_MS = 10_000

#: execution option that makes a SQLite transaction take the write lock up front
SQLITE_WRITE_OPTION = "dicomcloud_write"


def scheme_of(url: str) -> str:
    """The scheme of ``url`` (text before ``://``), lower-cased."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def async_url(url: str) -> URL:
    """``url`` with its scheme replaced by the async driver dicomcloud uses."""
    scheme = scheme_of(url)
    driver = DRIVERS.get(scheme)
    if driver is None:
        known = ", ".join(sorted(s for s in DRIVERS if "+" not in s))
        raise ConfigurationError(
            f"index URL scheme {scheme or '(none)'!r} is not supported; use one of {known}"
        )
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"index URL with scheme {scheme!r} is malformed") from exc
    parsed = parsed.set(drivername=driver)
    if driver.startswith("mysql"):
        # utf8mb4 is the only MySQL charset holding all of Unicode (CJK, emoji).
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def create_engine_for(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for a ``sqlite://``, ``postgresql://`` or ``mysql://`` URL.

    ``pool_size`` connections are kept open to a server (PostgreSQL, MySQL), with as
    many again allowed in bursts.  No connection is opened here; the first use connects.
    """
    target = async_url(url)
    backend = target.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(target)
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "pool_timeout": 30,
    }
    if backend == "mysql":
        # Servers close idle connections after wait_timeout; recycle well before.
        kwargs["pool_recycle"] = 1800
        # Fewer gap locks, fewer deadlocks under concurrent upserts.
        kwargs["isolation_level"] = "READ COMMITTED"
    return create_async_engine(target, **kwargs)


def _refuse_in_memory(target: URL) -> None:
    if target.database in (None, "", ":memory:") or "mode=memory" in str(target):
        # Each pooled connection would see its own empty database, and one shared
        # connection cannot hold concurrent transactions.
        raise ConfigurationError(
            "an in-memory SQLite index is not supported: give a file path "
            "(sqlite:///path/index.db), or use the in-memory index (MemoryIndex)"
        )


def _sqlite_engine(target: URL) -> AsyncEngine:
    _refuse_in_memory(target)
    engine = create_async_engine(target, pool_pre_ping=True)
    configure_sqlite(engine.sync_engine)
    return engine


def sqlite_sync_engine(url: URL, *, pool_size: int) -> Engine:
    """A synchronous engine (stdlib ``sqlite3``) on the SQLite database of ``url``.

    Its connections move between the threads of the index's executors (one thread at a
    time each, which the pool guarantees), hence ``check_same_thread=False``; a pool of
    ``pool_size`` connections without overflow, one per executor thread.
    """
    target = url.set(drivername="sqlite+pysqlite")
    _refuse_in_memory(target)
    engine = create_engine(
        target,
        poolclass=QueuePool,
        pool_size=pool_size,
        max_overflow=0,
        connect_args={"check_same_thread": False},
    )
    configure_sqlite(engine)
    return engine


def sqlite_database_path(url: URL) -> Path:
    """The absolute path of the SQLite database file of ``url``."""
    _refuse_in_memory(url)
    database = url.database or ""
    if database.startswith("file:"):  # a URI filename: sqlite:///file:path?uri=true
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database).absolute()


def configure_sqlite(engine: Engine) -> None:
    """Durable, WAL-mode connections; ``BEGIN IMMEDIATE`` for write transactions."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves (see _on_begin), pysqlite's implicit BEGIN
        # would start write transactions as readers that fail to upgrade.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # First, so that switching to WAL waits for a writer of another process.
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed (acknowledged) store survives power loss in WAL mode.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get(SQLITE_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
