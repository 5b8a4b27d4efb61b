"""Real databases for tests: a fresh, empty database per test, dropped afterwards.

Use from any test tier (``import backends`` works when ``tests/`` is on ``sys.path``,
e.g. from a test package such as ``tests/contract/``):

* ``async with backends.database_url("postgresql", tmp_path) as url`` - a URL of a new
  database (``sqlite``, ``postgresql`` or ``mysql``), not yet migrated;
* ``async with backends.open_index("mysql", tmp_path) as index`` - a migrated
  ``SqlIndex`` on a new database (``MemoryIndex`` for ``"memory"``);
* the fixtures ``index`` (params memory/sqlite/postgresql/mysql; an empty migrated
  index, on servers a session-wide database emptied per test), ``sql_url`` (params
  sqlite/postgresql/mysql; a brand-new unmigrated database per test) and
  ``shared_databases`` (session scope, needed by ``index``): import all three into a
  conftest.py.

Servers default to the local ones; override with ``DICOMCLOUD_TEST_POSTGRES_URL`` and
``DICOMCLOUD_TEST_MYSQL_URL`` (an account allowed to CREATE and DROP DATABASE).  A server
that cannot be reached skips the test, or fails it when ``CI=true`` (project rule: CI
never silently skips a backend).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn, Protocol

import pytest
import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from dicomcloud.domain.extended_tags import ExtendedTag
from dicomcloud.domain.records import InstanceRecord
from dicomcloud.index import schema
from dicomcloud.index.engine import async_url
from dicomcloud.index.memory_index import MemoryIndex
from dicomcloud.index.migrate import migrate
from dicomcloud.index.sql_index import SqlIndex
from dicomcloud.ports import Index


class IndexUnderTest(Index, Protocol):
    """The Index port plus the listing methods both implementations have."""

    async def count_instances(self, tenant_id: str) -> int: ...

    async def list_instances(
        self,
        tenant_id: str,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
    ) -> list[InstanceRecord]: ...


BACKENDS = ("memory", "sqlite", "postgresql", "mysql")
SQL_BACKENDS = ("sqlite", "postgresql", "mysql")

POSTGRES_URL = os.environ.get(
    "DICOMCLOUD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MYSQL_URL = os.environ.get("DICOMCLOUD_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")

#: seconds to wait for a server before calling it unreachable
CONNECT_TIMEOUT = 5

_unreachable: dict[str, str] = {}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the test locally; fail it in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: backends are mandatory)", pytrace=False)
    pytest.skip(reason)


def params(names: tuple[str, ...]) -> list[Any]:
    """pytest params for backend names; real servers carry the ``backend`` mark."""
    return [
        pytest.param(name, id=name, marks=() if name == "memory" else pytest.mark.backend)
        for name in names
    ]


def _admin_engine(url: str) -> AsyncEngine:
    target = async_url(url)
    if target.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT}
    else:
        connect_args = {"connect_timeout": CONNECT_TIMEOUT}
    return create_async_engine(
        target, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args=connect_args
    )


class _Unreachable(Exception):
    pass


def _admin_url(label: str) -> str:
    return MYSQL_URL if label == "mysql" else POSTGRES_URL


async def _create_database(label: str) -> str:
    """Create a uniquely named database; return its user-facing URL."""
    admin_url = _admin_url(label)
    name = f"dctest_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    create = (
        f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        if label == "mysql"
        else f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0"
    )
    engine = _admin_engine(admin_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text(create))
    except (OSError, SQLAlchemyError) as exc:
        host = make_url(admin_url).host
        raise _Unreachable(f"{label} server at {host} unavailable: {exc!r}"[:300]) from exc
    finally:
        await engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def _drop_database(label: str, url: str) -> None:
    name = make_url(url).database
    drop = f"DROP DATABASE IF EXISTS {name}" + ("" if label == "mysql" else " WITH (FORCE)")
    engine = _admin_engine(_admin_url(label))
    try:
        async with engine.connect() as conn:
            await conn.execute(text(drop))
    finally:
        await engine.dispose()


async def _new_database(label: str) -> str:
    if label in _unreachable:
        unavailable(_unreachable[label])
    try:
        return await _create_database(label)
    except _Unreachable as exc:
        _unreachable[label] = str(exc)
        unavailable(str(exc))


@asynccontextmanager
async def _server_database(label: str) -> AsyncIterator[str]:
    url = await _new_database(label)
    try:
        yield url
    finally:
        await _drop_database(label, url)


class SharedDatabases:
    """One migrated database per server backend for a whole test session, emptied by
    the tests that borrow it (creating and migrating one per test costs ~0.2 s).

    Databases are created and dropped on a private event loop in a worker thread, so
    that they outlive the per-test event loops.
    """

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}

    async def url(self, backend: str) -> str:
        """The URL of the session's migrated database on ``backend``."""
        if backend not in self._urls:
            if backend in _unreachable:
                unavailable(_unreachable[backend])
            try:
                self._urls[backend] = await asyncio.to_thread(
                    asyncio.run, self._create_migrated(backend)
                )
            except _Unreachable as exc:
                _unreachable[backend] = str(exc)
                unavailable(str(exc))
        return self._urls[backend]

    @staticmethod
    async def _create_migrated(backend: str) -> str:
        url = await _create_database(backend)
        await migrate(url)
        return url

    def drop_all(self) -> None:
        for backend, url in self._urls.items():
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, _drop_database(backend, url)).result()
        self._urls.clear()


async def empty(index: SqlIndex) -> None:
    """Delete every row of the index tables."""
    async with index.engine.begin() as conn:
        for table in reversed(schema.metadata.sorted_tables):
            await conn.execute(sa.delete(table))


@asynccontextmanager
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A user-facing URL of a new, empty database on ``backend``."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite3'}"
    elif backend in ("postgresql", "mysql"):
        async with _server_database(backend) as url:
            yield url
    else:
        raise ValueError(f"no database for backend {backend!r}")


@asynccontextmanager
async def open_index(backend: str, tmp_path: Path) -> AsyncIterator[IndexUnderTest]:
    """A ready index on a new database (``MemoryIndex`` for ``"memory"``)."""
    if backend == "memory":
        memory = MemoryIndex()
        try:
            yield memory
        finally:
            await memory.close()
        return
    async with database_url(backend, tmp_path) as url:
        sql = SqlIndex.from_url(url)
        try:
            await sql.migrate()
            yield sql
        finally:
            await sql.close()


@pytest.fixture(scope="session")
def shared_databases() -> Iterator[SharedDatabases]:
    """Migrated PostgreSQL and MySQL databases kept for the session, dropped at its end."""
    databases = SharedDatabases()
    yield databases
    databases.drop_all()


@asynccontextmanager
async def empty_index(
    backend: str,
    tmp_path: Path,
    shared_databases: SharedDatabases,
    extended_tags: Sequence[ExtendedTag] = (),
) -> AsyncIterator[IndexUnderTest]:
    """An empty, migrated index on ``backend`` with ``extended_tags`` configured:
    memory, a new SQLite file, or the session's PostgreSQL / MySQL database emptied."""
    if backend == "memory":
        memory = MemoryIndex(extended_tags)
        try:
            yield memory
        finally:
            await memory.close()
        return
    if backend == "sqlite":
        async with database_url(backend, tmp_path) as url:
            sql = SqlIndex.from_url(url, extended_tags)
            try:
                await sql.migrate()
                yield sql
            finally:
                await sql.close()
        return
    sql = SqlIndex.from_url(await shared_databases.url(backend), extended_tags)
    try:
        await empty(sql)
        yield sql
    finally:
        await sql.close()


@pytest.fixture(params=params(BACKENDS))
async def index(
    request: pytest.FixtureRequest, tmp_path: Path, shared_databases: SharedDatabases
) -> AsyncIterator[IndexUnderTest]:
    """An empty, migrated index on every backend in turn: memory, a new SQLite file, and
    the session's PostgreSQL and MySQL databases emptied before the test."""
    async with empty_index(request.param, tmp_path, shared_databases) as opened:
        yield opened


@pytest.fixture(params=params(SQL_BACKENDS))
async def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a fresh, unmigrated database on every SQL backend in turn."""
    async with database_url(request.param, tmp_path) as url:
        yield url
