"""Every index operation as one transaction, retried when the database asks for it.

This is the one place that knows how a unit of work reaches its database and which
database errors are transient: deadlocks, serialization failures, SQLite's "database is
locked", and unique-key races between two transactions inserting the same new row (on
retry the row is seen and handled).  All other database errors become
``IndexUnavailable`` here, once (STYLE.md 5 and 9).

A unit of work is synchronous SQLAlchemy Core code on a ``Connection``; a runner executes
it in one transaction:

* ``AsyncEngineRunner`` (PostgreSQL/asyncpg, MySQL/aiomysql): on the async engine, the
  work runs in ``AsyncConnection.run_sync`` (each statement still awaits the driver).
* ``SqliteRunner``: on a synchronous ``sqlite3`` engine, the whole transaction in ONE
  hop to a worker thread, since aiosqlite would hop per statement (~1 ms each).  Writes
  go to a single writer thread, which holds an exclusive ``flock`` on
  ``{database}.write-lock`` from before ``BEGIN IMMEDIATE`` until after COMMIT or
  ROLLBACK: the writers of several processes on one file queue on the kernel lock, which
  wakes the next one at once, instead of polling in SQLite's busy handler (which sleeps
  up to 100 ms).  ``busy_timeout`` stays as the fallback for readers and migrations.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from dicomcloud.errors import IndexUnavailable
from dicomcloud.index.engine import (
    SQLITE_WRITE_OPTION,
    sqlite_database_path,
    sqlite_sync_engine,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

#: attempts of one unit of work before giving up with IndexUnavailable
MAX_ATTEMPTS = 8
#: first back-off in seconds; doubles per attempt, with jitter
BASE_DELAY = 0.01

# PostgreSQL SQLSTATEs (Appendix A of its manual)
_PG_TRANSIENT = frozenset({"40001", "40P01", "23505", "55P03"})
# MySQL/MariaDB error numbers: 1213 deadlock, 1205 lock wait timeout, 1062 duplicate key
_MYSQL_TRANSIENT = frozenset({1213, 1205, 1062})
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "unique constraint failed")


def is_transient(exc: DBAPIError) -> bool:
    """True if repeating the whole transaction may succeed."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(code, str) and code in _PG_TRANSIENT:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_TRANSIENT:
        return True
    message = str(orig).lower()
    return any(text in message for text in _SQLITE_TRANSIENT)


def describe(exc: BaseException) -> str:
    """A one-line description of a database error, without SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {first[0] if first else ''}"


#: threads (and pooled connections) of a SQLite index for read transactions
SQLITE_READ_THREADS = 4


class Runner(Protocol):
    """Runs units of work, each in one transaction."""

    async def run(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool = False,
        what: str = "index operation",
    ) -> T:
        """Run ``work`` in one transaction and commit; retry it on a transient error.

        ``work`` must be repeatable: it may run several times, and only the last run's
        effects are committed.  Errors of the archive (``DicomCloudError``) propagate
        unchanged after the rollback.
        """
        ...

    async def close(self) -> None:
        """Release what the runner opened itself (a later ``run`` opens it again); the
        engine it was given stays the caller's to dispose."""
        ...


def runner_for(engine: AsyncEngine) -> Runner:
    """The runner for the database behind ``engine``."""
    if engine.dialect.name == "sqlite":
        return SqliteRunner(engine)
    return AsyncEngineRunner(engine)


async def _with_retries(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """``await attempt()`` until it succeeds, retrying transient database errors with
    exponential back-off; database failures become ``IndexUnavailable``."""
    for number in range(1, MAX_ATTEMPTS + 1):
        try:
            return await attempt()
        except DBAPIError as exc:
            if number < MAX_ATTEMPTS and (is_transient(exc) or exc.connection_invalidated):
                log.debug("%s: retry %d after %s", what, number, describe(exc))
                await asyncio.sleep(BASE_DELAY * 2 ** (number - 1) * random.uniform(0.5, 1.5))
                continue
            raise IndexUnavailable(f"{what} failed: {describe(exc)}") from exc
        except SQLAlchemyError as exc:
            raise IndexUnavailable(f"{what} failed: {describe(exc)}") from exc
        except OSError as exc:
            raise IndexUnavailable(f"{what}: database unreachable: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


class AsyncEngineRunner:
    """Units of work on an async engine (asyncpg, aiomysql), via ``run_sync``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool = False,
        what: str = "index operation",
    ) -> T:
        async def attempt() -> T:
            async with self._engine.connect() as conn, conn.begin():
                return await conn.run_sync(work)

        return await _with_retries(attempt, what)

    async def close(self) -> None:
        """Nothing of its own: the engine belongs to the caller."""


#: The writer refreshes the planner's statistics after this many write transactions,
#: then after twice as many, and so on (``_analyze``).
FIRST_ANALYZE_AFTER_WRITES = 2000


def _analyze(conn: Connection) -> None:
    """Refresh SQLite's planner statistics (a full ``ANALYZE``: ~0.7 s at a million
    instances; ``analysis_limit`` samples only the first rows of each index, which makes
    ``(tenant_id, patient_id)`` look unselective).  Without good statistics a selective
    search (PatientID) walks the study-list index instead of its own
    (docs/performance.md, "Search at scale").  The writer runs it after
    ``FIRST_ANALYZE_AFTER_WRITES`` write transactions and each time their number has
    doubled, so the index grows at most twofold between two refreshes while the cost
    stays a vanishing share of the writes; a failure only costs plan quality."""
    try:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    except SQLAlchemyError as exc:
        log.warning("ANALYZE failed: %s", exc)


class SqliteRunner:
    """Units of work on a SQLite file, each in one thread hop (see the module notes)."""

    def __init__(self, engine: AsyncEngine, *, read_threads: int = SQLITE_READ_THREADS) -> None:
        self._read_threads = read_threads
        self._engine: Engine = sqlite_sync_engine(engine.url, pool_size=read_threads + 1)
        self._lock_path = Path(f"{sqlite_database_path(engine.url)}.write-lock")
        self._lock_fd: int | None = None  # used by the writer thread only
        # Now, so that the file appears with the index; failing that, on the first write.
        with suppress(OSError):
            self._lock_fd = self._open_lock_file()
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._guard = threading.Lock()
        self._writes = 0  # by the writer thread only
        self._analyze_at = FIRST_ANALYZE_AFTER_WRITES

    @property
    def engine(self) -> Engine:
        """The synchronous engine the units of work run on."""
        return self._engine

    @property
    def lock_path(self) -> Path:
        """The file whose ``flock`` serialises the writers of every process."""
        return self._lock_path

    async def run(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool = False,
        what: str = "index operation",
    ) -> T:
        executor = self._executor(write)
        transaction = self._write if write else self._read
        loop = asyncio.get_running_loop()

        def attempt() -> Awaitable[T]:
            return loop.run_in_executor(executor, transaction, work)

        return await _with_retries(attempt, what)

    def _executor(self, write: bool) -> ThreadPoolExecutor:
        with self._guard:
            if write:
                if self._writer is None:
                    self._writer = ThreadPoolExecutor(1, thread_name_prefix="index-writer")
                return self._writer
            if self._readers is None:
                self._readers = ThreadPoolExecutor(
                    self._read_threads, thread_name_prefix="index-reader"
                )
            return self._readers

    def _read(self, work: Callable[[Connection], T]) -> T:
        with self._engine.connect() as conn, conn.begin():
            return work(conn)

    def _write(self, work: Callable[[Connection], T]) -> T:
        with self._engine.connect() as conn:
            conn = conn.execution_options(**{SQLITE_WRITE_OPTION: True})
            with self._write_lock():
                with conn.begin():
                    result = work(conn)
                self._writes += 1
                if self._writes >= self._analyze_at:
                    _analyze(conn)
                    self._analyze_at *= 2
                return result

    def _open_lock_file(self) -> int:
        return os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    @contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Hold the cross-process write lock (writer thread only)."""
        if self._lock_fd is None:
            self._lock_fd = self._open_lock_file()
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _shutdown(self) -> None:
        with self._guard:
            executors, self._writer, self._readers = (self._writer, self._readers), None, None
        for executor in executors:
            if executor is not None:
                executor.shutdown(wait=True)
        self._engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        await asyncio.to_thread(self._shutdown)
