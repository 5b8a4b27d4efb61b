"""Bring an index database to the newest schema (Alembic ``upgrade head``).

The migration scripts ship inside the package, so no ``alembic.ini`` is needed:
``await migrate("sqlite:///index.db")`` is all a deployment runs.  Upgrading an
up-to-date database does nothing; nodes starting together serialise on a lock.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from dicomcloud.errors import IndexUnavailable
from dicomcloud.index.engine import SQLITE_WRITE_OPTION, create_engine_for
from dicomcloud.index.unit_of_work import describe

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: an arbitrary constant: the advisory lock key of migrations on PostgreSQL
_PG_LOCK_KEY = 0x44434D49
_MYSQL_LOCK_NAME = "dicomcloud_migrate"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration built in code, pointing at the packaged scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        # ConfigParser interpolation would treat "%" in passwords as syntax.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    backend = connection.dialect.name
    if backend == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    elif backend in ("mysql", "mariadb"):
        connection.execute(text("SELECT GET_LOCK(:n, 120)"), {"n": _MYSQL_LOCK_NAME})
    try:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        if backend == "sqlite" and not _has_statistics(connection):
            # Planner statistics for a database filled before statistics were kept (a
            # bulk load, an older version); the writer refreshes them as the index
            # grows (unit_of_work._analyze).
            connection.exec_driver_sql("ANALYZE")
    finally:
        if backend in ("mysql", "mariadb"):
            connection.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": _MYSQL_LOCK_NAME})


def _has_statistics(connection: Connection) -> bool:
    """Whether SQLite has planner statistics of the study table (none while empty)."""
    found = connection.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
    ).first()
    if found is None:
        return False
    rows = connection.exec_driver_sql("SELECT 1 FROM sqlite_stat1 WHERE tbl = 'study' LIMIT 1")
    return rows.first() is not None


async def migrate_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision``."""
    try:
        async with engine.connect() as conn:
            await conn.execution_options(**{SQLITE_WRITE_OPTION: True})
            async with conn.begin():
                await conn.run_sync(_upgrade, revision)
    except SQLAlchemyError as exc:
        raise IndexUnavailable(f"index migration failed: {describe(exc)}") from exc
    except OSError as exc:
        raise IndexUnavailable(f"index database unreachable: {exc}") from exc


async def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: the newest)."""
    engine = create_engine_for(url)
    try:
        await migrate_engine(engine, revision)
    finally:
        await engine.dispose()
