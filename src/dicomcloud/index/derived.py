"""The DerivedCopyStore port on the index database (tables ``derived_copy`` and
``transcode_failure``, migration 0007), sharing the index's unit-of-work runner.

Upserts are a delete and an insert in one transaction: the same statements on
SQLite, PostgreSQL and MySQL/MariaDB, and repeatable when the runner retries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dicomcloud.domain.derived import DerivedCopy, TranscodeFailure
from dicomcloud.index import schema
from dicomcloud.index.unit_of_work import Runner

_COPY = schema.derived_copy
_FAILURE = schema.transcode_failure


def _utc(value: datetime) -> datetime:
    """Aware UTC (naive values are taken as UTC, as SQLite and MySQL return them)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _copy(row: Mapping[Any, Any]) -> DerivedCopy:
    data = dict(row)
    data["created_at"] = _utc(data["created_at"])
    return DerivedCopy(**data)


def _failure(row: Mapping[Any, Any]) -> TranscodeFailure:
    data = dict(row)
    data["failed_at"] = _utc(data["failed_at"])
    return TranscodeFailure(**data)


def _where(table: sa.Table, tenant_id: str, sop: str, syntax: str | None = None) -> Any:
    conditions = [table.c.tenant_id == tenant_id, table.c.sop_instance_uid == sop]
    if syntax is not None:
        conditions.append(table.c.transfer_syntax_uid == syntax)
    return sa.and_(*conditions)


class SqlDerivedCopies:
    """``dicomcloud.ports.DerivedCopyStore`` on SQLite, PostgreSQL or MySQL/MariaDB."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def record_copy(self, copy: DerivedCopy) -> DerivedCopy | None:
        row = {**asdict(copy), "created_at": _utc(copy.created_at)}
        key = (copy.tenant_id, copy.sop_instance_uid, copy.transfer_syntax_uid)

        def work(conn: Connection) -> DerivedCopy | None:
            found = conn.execute(sa.select(_COPY).where(_where(_COPY, *key))).mappings().first()
            conn.execute(sa.delete(_COPY).where(_where(_COPY, *key)))
            conn.execute(sa.insert(_COPY), [row])
            conn.execute(sa.delete(_FAILURE).where(_where(_FAILURE, *key)))
            return None if found is None else _copy(found)

        return await self._runner.run(work, write=True, what="recording a derived copy")

    async def get_copy(
        self, tenant_id: str, sop_instance_uid: str, transfer_syntax_uid: str
    ) -> DerivedCopy | None:
        statement = sa.select(_COPY).where(
            _where(_COPY, tenant_id, sop_instance_uid, transfer_syntax_uid)
        )

        def work(conn: Connection) -> DerivedCopy | None:
            found = conn.execute(statement).mappings().first()
            return None if found is None else _copy(found)

        return await self._runner.run(work, what="reading a derived copy")

    async def list_copies(self, tenant_id: str, sop_instance_uid: str) -> list[DerivedCopy]:
        statement = (
            sa.select(_COPY)
            .where(_where(_COPY, tenant_id, sop_instance_uid))
            .order_by(_COPY.c.transfer_syntax_uid)
        )

        def work(conn: Connection) -> list[DerivedCopy]:
            return [_copy(row) for row in conn.execute(statement).mappings()]

        return await self._runner.run(work, what="listing derived copies")

    async def record_failure(self, failure: TranscodeFailure) -> TranscodeFailure:
        clipped = failure.clipped()
        key = (failure.tenant_id, failure.sop_instance_uid, failure.transfer_syntax_uid)

        def work(conn: Connection) -> TranscodeFailure:
            earlier = conn.execute(
                sa.select(_FAILURE.c.source_version, _FAILURE.c.attempts).where(
                    _where(_FAILURE, *key)
                )
            ).first()
            attempts = 1
            if earlier is not None and earlier.source_version == clipped.source_version:
                attempts = int(earlier.attempts) + 1
            kept = replace(clipped, attempts=attempts, failed_at=_utc(clipped.failed_at))
            conn.execute(sa.delete(_FAILURE).where(_where(_FAILURE, *key)))
            conn.execute(sa.insert(_FAILURE), [asdict(kept)])
            return kept

        return await self._runner.run(work, write=True, what="recording a failed conversion")

    async def get_failure(
        self, tenant_id: str, sop_instance_uid: str, transfer_syntax_uid: str
    ) -> TranscodeFailure | None:
        statement = sa.select(_FAILURE).where(
            _where(_FAILURE, tenant_id, sop_instance_uid, transfer_syntax_uid)
        )

        def work(conn: Connection) -> TranscodeFailure | None:
            found = conn.execute(statement).mappings().first()
            return None if found is None else _failure(found)

        return await self._runner.run(work, what="reading a failed conversion")

    async def delete_copy(self, copy: DerivedCopy) -> bool:
        statement = sa.delete(_COPY).where(
            _where(_COPY, copy.tenant_id, copy.sop_instance_uid, copy.transfer_syntax_uid),
            _COPY.c.blob_key == copy.blob_key,
        )

        def work(conn: Connection) -> bool:
            return bool(conn.execute(statement).rowcount)

        return await self._runner.run(work, write=True, what="removing a derived copy")

    async def forget(self, tenant_id: str, sop_instance_uid: str) -> list[DerivedCopy]:
        def work(conn: Connection) -> list[DerivedCopy]:
            found = conn.execute(
                sa.select(_COPY)
                .where(_where(_COPY, tenant_id, sop_instance_uid))
                .order_by(_COPY.c.transfer_syntax_uid)
            ).mappings()
            removed = [_copy(row) for row in found]
            conn.execute(sa.delete(_COPY).where(_where(_COPY, tenant_id, sop_instance_uid)))
            conn.execute(sa.delete(_FAILURE).where(_where(_FAILURE, tenant_id, sop_instance_uid)))
            return removed

        return await self._runner.run(work, write=True, what="forgetting derived copies")
