"""The DerivedCopyStore port (viewer-ready copies and failed conversions) on every
backend: memory, SQLite, PostgreSQL, MySQL/MariaDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import backends
from dicomcloud.domain.derived import DerivedCopy, TranscodeFailure
from dicomcloud.index.derived import SqlDerivedCopies
from dicomcloud.index.memory_derived import MemoryDerivedCopies
from dicomcloud.index.sql_index import SqlIndex
from dicomcloud.ports import DerivedCopyStore

T0 = datetime(2026, 11, 22, 8, 0, 0, 123456, tzinfo=UTC)
EXPLICIT = "1.2.840.10008.1.2.1"
HTJ2K = "1.2.840.10008.1.2.4.201"


@pytest.fixture(params=backends.params(backends.BACKENDS))
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, shared_databases: backends.SharedDatabases
) -> AsyncIterator[DerivedCopyStore]:
    backend: str = request.param
    if backend == "memory":
        yield MemoryDerivedCopies()
        return
    if backend == "sqlite":
        async with backends.open_index("sqlite", tmp_path) as index:
            assert isinstance(index, SqlIndex)
            yield SqlDerivedCopies(index.runner)
        return
    index = SqlIndex.from_url(await shared_databases.url(backend))
    try:
        await backends.empty(index)
        yield SqlDerivedCopies(index.runner)
    finally:
        await index.close()


def copy(sop: str = "1.2.3.4", syntax: str = EXPLICIT, **fields: object) -> DerivedCopy:
    base = DerivedCopy(
        tenant_id="t1",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.1",
        sop_instance_uid=sop,
        transfer_syntax_uid=syntax,
        blob_key=f"t1/1.2.3/1.2.3.1/{sop}.derived/{syntax}.0123456789abcdef.dcm",
        size=5 << 32,  # above 32 bits
        source_version="0123456789abcdef",
        created_at=T0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def failure(sop: str = "1.2.3.4", **fields: object) -> TranscodeFailure:
    base = TranscodeFailure(
        tenant_id="t1",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.1",
        sop_instance_uid=sop,
        transfer_syntax_uid=EXPLICIT,
        source_version="0123456789abcdef",
        attempts=1,
        reason="ValueError: no decoder",
        failed_at=T0,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


async def test_copies_come_back_as_recorded(store: DerivedCopyStore) -> None:
    first, other = copy(), copy(syntax=HTJ2K)

    assert await store.record_copy(first) is None
    assert await store.record_copy(other) is None

    assert await store.get_copy("t1", "1.2.3.4", EXPLICIT) == first
    assert await store.get_copy("t1", "1.2.3.4", HTJ2K) == other
    assert await store.get_copy("t2", "1.2.3.4", EXPLICIT) is None
    assert await store.get_copy("t1", "1.2.3.5", EXPLICIT) is None
    assert await store.list_copies("t1", "1.2.3.4") == [first, other]


async def test_recording_again_replaces_and_returns_the_previous(store: DerivedCopyStore) -> None:
    old = copy()
    new = copy(blob_key="t1/x.derived/new.dcm", source_version="fedcba9876543210", size=7)
    await store.record_copy(old)

    assert await store.record_copy(old) == old  # a redelivered event: one row
    assert await store.record_copy(new) == old

    assert await store.list_copies("t1", "1.2.3.4") == [new]


async def test_failures_count_attempts_per_source_version(store: DerivedCopyStore) -> None:
    later = T0 + timedelta(seconds=3)

    assert (await store.record_failure(failure())).attempts == 1
    assert (await store.record_failure(failure(failed_at=later))).attempts == 2
    kept = await store.get_failure("t1", "1.2.3.4", EXPLICIT)
    assert kept == failure(attempts=2, failed_at=later)
    # Another version of the instance starts again at one.
    assert (await store.record_failure(failure(source_version="f" * 16))).attempts == 1
    assert await store.get_failure("t1", "1.2.3.4", HTJ2K) is None


async def test_a_copy_clears_the_failure_and_long_reasons_are_clipped(
    store: DerivedCopyStore,
) -> None:
    kept = await store.record_failure(failure(reason="é" * 5000))
    assert len(kept.reason) == 1024
    assert await store.get_failure("t1", "1.2.3.4", EXPLICIT) == kept

    await store.record_copy(copy())

    assert await store.get_failure("t1", "1.2.3.4", EXPLICIT) is None


async def test_delete_and_forget(store: DerivedCopyStore) -> None:
    one, two, elsewhere = copy(), copy(syntax=HTJ2K), copy(sop="1.2.3.5")
    for item in (one, two, elsewhere):
        await store.record_copy(item)
    await store.record_failure(failure())

    assert not await store.delete_copy(replace(one, blob_key="t1/other.dcm"))
    assert await store.delete_copy(one)
    assert not await store.delete_copy(one)
    assert await store.list_copies("t1", "1.2.3.4") == [two]

    await store.record_copy(one)
    assert await store.forget("t1", "1.2.3.4") == [one, two]
    assert await store.list_copies("t1", "1.2.3.4") == []
    assert await store.get_failure("t1", "1.2.3.4", EXPLICIT) is None
    assert await store.list_copies("t1", "1.2.3.5") == [elsewhere]
