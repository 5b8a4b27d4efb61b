"""The AccessLogStore port on every backend: memory, SQLite, PostgreSQL, MySQL/MariaDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import backends
from dicomcloud.domain.access import AccessQuery, AccessRecord
from dicomcloud.domain.events import uuid7
from dicomcloud.index.access_log import SqlAccessLog
from dicomcloud.index.memory_access_log import MemoryAccessLog
from dicomcloud.index.sql_index import SqlIndex
from dicomcloud.ports import AccessLogStore

T0 = datetime(2026, 11, 22, 8, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=backends.params(backends.BACKENDS))
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, shared_databases: backends.SharedDatabases
) -> AsyncIterator[AccessLogStore]:
    backend: str = request.param
    if backend == "memory":
        yield MemoryAccessLog()
        return
    if backend == "sqlite":
        async with backends.open_index("sqlite", tmp_path) as index:
            assert isinstance(index, SqlIndex)
            yield SqlAccessLog(index.runner)
        return
    index = SqlIndex.from_url(await shared_databases.url(backend))
    try:
        await backends.empty(index)
        yield SqlAccessLog(index.runner)
    finally:
        await index.close()


def record(minutes: int, **fields: object) -> AccessRecord:
    base = AccessRecord(
        event_id=str(uuid7()),
        time=T0 + timedelta(minutes=minutes),
        node_id="host:1",
        protocol="DICOMweb",
        action="QIDO-RS search",
        tenant_id="t1",
        principal="alice",
        peer="10.0.0.1:5000",
        status=200,
        outcome="success",
        duration_ms=1.5,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


async def test_records_come_back_as_appended(store: AccessLogStore) -> None:
    full = record(
        0,
        bytes_in=1 << 40,
        bytes_out=12,
        method="GET",
        path="/dicom-web/studies",
        query="PatientName=%E5%B1%B1%E7%94%B0*",
        user_agent="viewer/2 (Müller)",
        study_uids=("1.2.3", "1.2.4"),
        series_uids=("1.2.3.1",),
        sop_instance_uids=("1.2.3.1.1",),
        instances=7,
        operations=3,
        detail="released; C-STORE x7 (0x0000 x7)",
        called_ae="DICOMCLOUD",
    )
    bare = record(1, peer=None, protocol="DIMSE", action="C-ECHO", status=0)

    await store.append([full, bare])

    assert await store.search(AccessQuery(newest_first=False)) == [full, bare]


async def test_filters_order_and_paging(store: AccessLogStore) -> None:
    records = [
        record(0),
        record(1, principal="bob", tenant_id="t2"),
        record(2, action="WADO-RS retrieve", study_uids=("1.2.30",)),
        record(3, protocol="DIMSE", action="C-FIND", principal="MODALITY", study_uids=("1.2.3",)),
        record(4, study_uids=("1.2.3", "9.9")),
    ]
    await store.append(records[3:])
    await store.append(records[:3])

    async def ids(**query: object) -> list[int]:
        found = await store.search(AccessQuery(**query))  # type: ignore[arg-type]
        return [records.index(r) for r in found]

    assert await ids() == [4, 3, 2, 1, 0]
    assert await ids(newest_first=False, limit=2, offset=1) == [1, 2]
    assert await ids(tenant_id="t2") == [1]
    assert await ids(principal="alice") == [4, 2, 0]
    assert await ids(action="C-FIND") == [3]
    assert await ids(protocol="DIMSE") == [3]
    assert await ids(study_uid="1.2.3") == [4, 3]  # not 1.2.30
    assert await ids(study_uid="1.2.%") == []  # LIKE characters are plain text
    assert await ids(since=records[1].time, until=records[3].time) == [2, 1]
    tokyo = (T0 + timedelta(minutes=2)).astimezone(timezone(timedelta(hours=9)))
    assert await ids(since=tokyo) == [4, 3, 2]
    assert await ids(tenant_id="t1", principal="alice", since=T0, limit=1) == [4]


async def test_appending_again_keeps_one_copy(store: AccessLogStore) -> None:
    once = record(0)

    await store.append([once])
    await store.append([once, record(1)])

    assert len(await store.search(AccessQuery())) == 2


async def test_long_texts_are_clipped_not_refused(store: AccessLogStore) -> None:
    long = record(0, path="/x" * 2000, user_agent="u" * 5000, principal="p" * 300)

    await store.append([long])

    (found,) = await store.search(AccessQuery())
    assert (len(found.path or ""), len(found.user_agent or ""), len(found.principal)) == (
        1024,
        512,
        256,
    )


async def test_purge_removes_only_older_records(store: AccessLogStore) -> None:
    await store.append([record(0), record(10), record(20)])

    removed = await store.purge(T0 + timedelta(minutes=10))

    assert removed == 1
    assert [r.time for r in await store.search(AccessQuery(newest_first=False))] == [
        T0 + timedelta(minutes=10),
        T0 + timedelta(minutes=20),
    ]
