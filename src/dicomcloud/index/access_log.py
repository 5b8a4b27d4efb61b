"""The AccessLogStore port on the index database (table ``access_log``, migration 0005).

It shares the index's unit-of-work runner, so on SQLite its batches go through the same
single writer (and cross-process write lock) as the instance commits: one short
transaction per batch of records, never one per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dicomcloud.domain.access import AccessQuery, AccessRecord
from dicomcloud.index import schema
from dicomcloud.index.unit_of_work import Runner

_TABLE = schema.access_log
_COLUMNS = tuple(c.name for c in _TABLE.columns)
_LISTS = ("study_uids", "series_uids", "sop_instance_uids")
_SEPARATOR = "\\"  # PS3.5 6.2: the multi-value delimiter, never part of a UID


def _utc(value: datetime) -> datetime:
    """Aware UTC (naive values are taken as UTC, as SQLite and MySQL return them)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row(record: AccessRecord) -> dict[str, Any]:
    clipped = record.clipped()
    row: dict[str, Any] = {name: getattr(clipped, name) for name in _COLUMNS}
    row["time"] = _utc(record.time)
    for name in _LISTS:
        row[name] = _SEPARATOR.join(getattr(clipped, name)) or None
    return row


def _record(row: Mapping[Any, Any]) -> AccessRecord:
    data = dict(row)
    data["time"] = _utc(data["time"])
    for name in _LISTS:
        data[name] = tuple(data[name].split(_SEPARATOR)) if data[name] else ()
    return AccessRecord(**data)


def _escape_like(value: str) -> str:
    return value.replace("!", "!!").replace("%", "!%").replace("_", "!_")


class SqlAccessLog:
    """``dicomcloud.ports.AccessLogStore`` on SQLite, PostgreSQL or MySQL/MariaDB."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def append(self, records: Sequence[AccessRecord]) -> None:
        if not records:
            return
        rows = [_row(record) for record in records]

        def work(conn: Connection) -> None:
            # A batch retried after a commit whose answer was lost keeps its rows once.
            ids = [row["event_id"] for row in rows]
            existing = {
                (tenant, event_id)
                for tenant, event_id in conn.execute(
                    sa.select(_TABLE.c.tenant_id, _TABLE.c.event_id).where(
                        _TABLE.c.event_id.in_(ids)
                    )
                )
            }
            new = [row for row in rows if (row["tenant_id"], row["event_id"]) not in existing]
            if new:
                conn.execute(sa.insert(_TABLE), new)

        await self._runner.run(work, write=True, what="writing the access log")

    async def search(self, query: AccessQuery) -> list[AccessRecord]:
        c = _TABLE.c
        conditions: list[sa.ColumnElement[bool]] = []
        if query.tenant_id is not None:
            conditions.append(c.tenant_id == query.tenant_id)
        if query.since is not None:
            conditions.append(c.time >= _utc(query.since))
        if query.until is not None:
            conditions.append(c.time < _utc(query.until))
        if query.action is not None:
            conditions.append(c.action == query.action)
        if query.principal is not None:
            conditions.append(c.principal == query.principal)
        if query.protocol is not None:
            conditions.append(c.protocol == query.protocol)
        if query.study_uid is not None:
            # Whole list elements only: "1.2" must not match "1.23".
            wrapped = sa.literal(_SEPARATOR) + c.study_uids + sa.literal(_SEPARATOR)
            pattern = f"%{_SEPARATOR}{_escape_like(query.study_uid)}{_SEPARATOR}%"
            conditions.append(wrapped.like(pattern, escape="!"))
        order = (c.time.desc(), c.event_id.desc()) if query.newest_first else (c.time, c.event_id)
        statement = (
            sa.select(_TABLE)
            .where(*conditions)
            .order_by(*order)
            .limit(query.limit)
            .offset(query.offset)
        )

        def work(conn: Connection) -> list[AccessRecord]:
            return [_record(row) for row in conn.execute(statement).mappings()]

        return await self._runner.run(work, what="reading the access log")

    async def purge(self, before: datetime) -> int:
        statement = sa.delete(_TABLE).where(_TABLE.c.time < _utc(before))

        def work(conn: Connection) -> int:
            return int(conn.execute(statement).rowcount or 0)

        return await self._runner.run(work, write=True, what="purging the access log")
