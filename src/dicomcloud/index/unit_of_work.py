"""Every index operation as one transaction, retried when the database asks for it.

This is the one place that knows which database errors are transient: deadlocks,
serialization failures, SQLite's "database is locked", and unique-key races between two
transactions inserting the same new row (on retry the row is seen and handled).  All
other database errors become ``IndexUnavailable`` here, once (STYLE.md 5 and 9).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dicomcloud.errors import IndexUnavailable
from dicomcloud.index.engine import SQLITE_WRITE_OPTION

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


async def run(
    engine: AsyncEngine,
    work: Callable[[AsyncConnection], Awaitable[T]],
    *,
    write: bool = False,
    what: str = "index operation",
) -> T:
    """Run ``work`` in one transaction and commit; retry it on a transient error.

    ``work`` must be repeatable: it may run several times, and only the last run's
    effects are committed.  Errors of the archive (``DicomCloudError``) propagate
    unchanged after the rollback.
    """
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with engine.connect() as conn:
                if write:
                    await conn.execution_options(**{SQLITE_WRITE_OPTION: True})
                async with conn.begin():
                    return await work(conn)
        except DBAPIError as exc:
            if attempt < MAX_ATTEMPTS and (is_transient(exc) or exc.connection_invalidated):
                log.debug("%s: retry %d after %s", what, attempt, describe(exc))
                await asyncio.sleep(BASE_DELAY * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
                continue
            raise IndexUnavailable(f"{what} failed: {describe(exc)}") from exc
        except SQLAlchemyError as exc:
            raise IndexUnavailable(f"{what} failed: {describe(exc)}") from exc
        except OSError as exc:
            raise IndexUnavailable(f"{what}: database unreachable: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover
