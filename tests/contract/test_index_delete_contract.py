"""Deleting from the index on every backend (memory, SQLite, PostgreSQL, MySQL):
``Index.delete_instances`` removes an instance, a series or a study of one tenant in
one transaction, with the levels left empty, their extended query tag values and an
``instance.deleted`` outbox row per instance; what remains keeps right counts and
computed attributes (PS3.4 C.3.4, PS3.18 table 10.6.3-3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backends import BACKENDS, IndexUnderTest, SharedDatabases, empty_index, params
from dicomcloud.config import ExtendedQueryTagSettings
from dicomcloud.domain.derived import DerivedCopy, TranscodeFailure
from dicomcloud.domain.events import DeletedEvent
from dicomcloud.domain.query import Query, QueryLevel, parse_qido
from dicomcloud.index.derived import SqlDerivedCopies
from dicomcloud.index.sql_index import SqlIndex
from dicomcloud.ports import DeleteRequest, InstanceWrite
from dicomcloud.services.query import SEARCH_KEYS

from .records import STUDY, write

TAGS = tuple(
    ExtendedQueryTagSettings.model_validate(item).resolved()
    for item in (
        {"tag": "Manufacturer", "level": "series"},
        {"tag": "AcquisitionDate", "level": "instance"},
    )
)
STUDY_A, STUDY_B = f"{STUDY}.1", f"{STUDY}.2"
CT, MR = f"{STUDY_A}.1", f"{STUDY_A}.2"  # two series of study A
OTHER = f"{STUDY_B}.1"  # the one series of study B, same patient
HTJ2K = "1.2.840.10008.1.2.4.201"


@pytest.fixture(params=params(BACKENDS))
async def index(
    request: pytest.FixtureRequest, tmp_path: Path, shared_databases: SharedDatabases
) -> AsyncIterator[IndexUnderTest]:
    async with empty_index(request.param, tmp_path, shared_databases, TAGS) as opened:
        yield opened


def _write(
    series: str, n: int, *, tenant: str = "t1", study: str = STUDY_A, modality: str = "CT"
) -> InstanceWrite:
    maker = "GE" if series == CT else "SIEMENS"
    return write(
        f"{series}.{n}",
        tenant=tenant,
        study=study,
        series=series,
        series_attrs={
            "modality": modality,
            "attributes": json.dumps({"00080070": {"vr": "LO", "Value": [maker]}}),
        },
        instance_number=n,
        attributes=json.dumps({"00080022": {"vr": "DA", "Value": ["20240102"]}}),
    )


def _archive(tenant: str = "t1") -> list[InstanceWrite]:
    """Study A: CT series with 3 instances, MR series with 2; study B (same patient):
    one series with 1 instance."""
    return [
        *(_write(CT, n, tenant=tenant) for n in (1, 2, 3)),
        *(_write(MR, n, tenant=tenant, modality="MR") for n in (1, 2)),
        _write(OTHER, 1, tenant=tenant, study=STUDY_B),
    ]


async def _stored(index: IndexUnderTest, tenant: str = "t1") -> None:
    await index.store_instances(_archive(tenant))
    await index.mark_published([m.id for m in await index.fetch_outbox(100)])


def _query(level: QueryLevel, *keys: tuple[str, str]) -> Query:
    return parse_qido(level, keys, known=SEARCH_KEYS[level], extended=TAGS)


async def _deleted_events(index: IndexUnderTest) -> list[DeletedEvent]:
    messages = [m for m in await index.fetch_outbox(100) if m.topic == "instance.deleted"]
    return [DeletedEvent.from_json(m.payload) for m in messages]


async def test_delete_one_instance(index: IndexUnderTest) -> None:
    await _stored(index)

    deletion = await index.delete_instances(DeleteRequest("t1", STUDY_A, CT, f"{CT}.2"))

    assert deletion is not None
    assert [r.sop_instance_uid for r in deletion.instances] == [f"{CT}.2"]
    assert deletion.removed_series == () and not deletion.study_removed
    assert await index.get_instance("t1", f"{CT}.2") is None
    assert [r.sop_instance_uid for r in await index.list_instances("t1", STUDY_A, CT)] == [
        f"{CT}.1",
        f"{CT}.3",
    ]
    (study,) = await index.search_studies(
        "t1", _query(QueryLevel.STUDY, ("StudyInstanceUID", STUDY_A))
    )
    assert (study.number_of_series, study.number_of_instances) == (2, 4)
    series = await index.search_series("t1", _query(QueryLevel.SERIES, ("SeriesInstanceUID", CT)))
    assert [s.number_of_instances for s in series] == [2]
    (event,) = await _deleted_events(index)
    assert (event.tenant_id, event.study_instance_uid, event.series_instance_uid) == (
        "t1",
        STUDY_A,
        CT,
    )
    assert event.sop_instance_uid == f"{CT}.2" and event.patient_id == "PAT-1"
    assert not event.series_deleted and not event.study_deleted
    assert event.blob_key == deletion.instances[0].blob_key


async def test_delete_a_series_updates_the_study(index: IndexUnderTest) -> None:
    await _stored(index)

    deletion = await index.delete_instances(DeleteRequest("t1", STUDY_A, MR))

    assert deletion is not None
    assert sorted(r.sop_instance_uid for r in deletion.instances) == [f"{MR}.1", f"{MR}.2"]
    assert deletion.removed_series == (MR,) and not deletion.study_removed
    (study,) = await index.search_studies(
        "t1", _query(QueryLevel.STUDY, ("StudyInstanceUID", STUDY_A))
    )
    assert study.modalities == ("CT",)
    assert (study.number_of_series, study.number_of_instances) == (1, 3)
    found = await index.search_series(
        "t1", _query(QueryLevel.SERIES, ("StudyInstanceUID", STUDY_A))
    )
    assert [s.series.series_instance_uid for s in found] == [CT]
    events = await _deleted_events(index)
    assert sorted(e.sop_instance_uid for e in events) == [f"{MR}.1", f"{MR}.2"]
    assert all(e.series_deleted and not e.study_deleted for e in events)
    assert len({e.request_id for e in events}) == 1
    assert (await index.count_levels("t1")).series == 2


async def test_delete_a_study_keeps_the_patient_of_another_study(index: IndexUnderTest) -> None:
    await _stored(index)

    deletion = await index.delete_instances(DeleteRequest("t1", STUDY_A))

    assert deletion is not None and deletion.study_removed and not deletion.patient_removed
    assert len(deletion.instances) == 5 and sorted(deletion.removed_series) == [CT, MR]
    assert await index.list_instances("t1", STUDY_A) == []
    counts = await index.count_levels("t1")
    assert (counts.studies, counts.series, counts.instances) == (1, 1, 1)
    (patient,) = await index.search_patients(
        "t1", _query(QueryLevel.PATIENT, ("PatientID", "PAT-1"))
    )
    assert (patient.number_of_studies, patient.number_of_series, patient.number_of_instances) == (
        1,
        1,
        1,
    )
    assert all(e.study_deleted for e in await _deleted_events(index))

    last = await index.delete_instances(DeleteRequest("t1", STUDY_B))

    assert last is not None and last.patient_removed
    assert await index.search_patients("t1", _query(QueryLevel.PATIENT)) == []
    assert await index.count_levels("t1") == type(counts)(0, 0, 0)


async def test_nothing_matched_changes_nothing(index: IndexUnderTest) -> None:
    await _stored(index)

    assert await index.delete_instances(DeleteRequest("t1", f"{STUDY}.9")) is None
    assert await index.delete_instances(DeleteRequest("t1", STUDY_A, f"{CT}.9")) is None
    # an instance under the wrong series, a series under the wrong study
    assert await index.delete_instances(DeleteRequest("t1", STUDY_A, MR, f"{CT}.1")) is None
    assert await index.delete_instances(DeleteRequest("t1", STUDY_B, CT)) is None

    assert await index.count_levels("t1") == type(await index.count_levels("t1"))(2, 3, 6)
    assert await _deleted_events(index) == []


async def test_extended_tag_values_go_with_their_records(index: IndexUnderTest) -> None:
    await _stored(index)
    await index.delete_instances(DeleteRequest("t1", STUDY_A, CT))
    # the series comes back with one instance that has neither value
    await index.store_instances(
        [write(f"{CT}.7", study=STUDY_A, series=CT, series_attrs={"modality": "CT"})]
    )

    by_maker = await index.search_series("t1", _query(QueryLevel.SERIES, ("Manufacturer", "GE")))
    by_date = await index.search_instances(
        "t1", _query(QueryLevel.IMAGE, ("AcquisitionDate", "20240102"), ("SeriesInstanceUID", CT))
    )

    assert by_maker == [] and by_date == []
    siemens = await index.search_series(
        "t1", _query(QueryLevel.SERIES, ("Manufacturer", "SIEMENS"))
    )
    assert sorted(s.series.series_instance_uid for s in siemens) == [MR, OTHER]


async def test_other_tenants_same_uids_are_untouched(index: IndexUnderTest) -> None:
    await _stored(index, "t1")
    await _stored(index, "t2")

    assert await index.delete_instances(DeleteRequest("t1", STUDY_A)) is not None

    assert len(await index.list_instances("t2", STUDY_A)) == 5
    assert await index.count_levels("t2") == type(await index.count_levels("t2"))(2, 3, 6)
    maker = await index.search_series("t2", _query(QueryLevel.SERIES, ("Manufacturer", "GE")))
    assert [s.series.series_instance_uid for s in maker] == [CT]
    assert {e.tenant_id for e in await _deleted_events(index)} == {"t1"}


async def test_restore_after_delete(index: IndexUnderTest) -> None:
    await _stored(index)
    await index.delete_instances(DeleteRequest("t1", STUDY_A))

    await index.store_instances(_archive()[:5])

    (study,) = await index.search_studies(
        "t1", _query(QueryLevel.STUDY, ("StudyInstanceUID", STUDY_A))
    )
    assert study.modalities == ("CT", "MR") and study.number_of_instances == 5
    assert study.patient is not None and study.patient.patient_id == "PAT-1"


async def test_viewer_ready_copy_rows_go_in_the_same_transaction(index: IndexUnderTest) -> None:
    """On SQL the derived_copy and transcode_failure rows of the deleted instances are
    removed by the deletion itself, and their blob keys returned; the memory index keeps
    no copies (``DeletionService`` asks its separate store)."""
    if not isinstance(index, SqlIndex):
        pytest.skip("copies of the memory index live in MemoryDerivedCopies")
    await _stored(index)
    copies = SqlDerivedCopies(index.runner)
    made = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    for n in (1, 2):
        sop = f"{CT}.{n}"
        await copies.record_copy(
            DerivedCopy("t1", STUDY_A, CT, sop, HTJ2K, f"t1/x/{sop}.htj2k", 10, "v1", made)
        )
    await copies.record_failure(
        TranscodeFailure("t1", STUDY_A, CT, f"{CT}.3", HTJ2K, "v1", 1, "broken", made)
    )

    deletion = await index.delete_instances(DeleteRequest("t1", STUDY_A, CT, f"{CT}.1"))

    assert deletion is not None and deletion.derived_blob_keys == (f"t1/x/{CT}.1.htj2k",)
    assert await copies.list_copies("t1", f"{CT}.1") == []
    assert len(await copies.list_copies("t1", f"{CT}.2")) == 1
    rest = await index.delete_instances(DeleteRequest("t1", STUDY_A, CT))
    assert rest is not None and rest.derived_blob_keys == (f"t1/x/{CT}.2.htj2k",)
    assert await copies.get_failure("t1", f"{CT}.3", HTJ2K) is None


async def test_deletes_racing_stores_leave_no_orphan_rows(index: IndexUnderTest) -> None:
    """A study deleted again and again while instances keep arriving in it: whatever
    wins each race, every instance left has its series, study and patient rows, and
    every level row left has an instance (checked through searches)."""
    stores = [_write(CT, n) for n in range(1, 41)]

    async def store() -> None:
        for start in range(0, len(stores), 4):
            await index.store_instances(stores[start : start + 4])
            await asyncio.sleep(0)

    async def delete() -> int:
        deleted = 0
        for _ in range(15):
            found = await index.delete_instances(DeleteRequest("t1", STUDY_A))
            deleted += 0 if found is None else len(found.instances)
            await asyncio.sleep(0)
        return deleted

    _, deleted = await asyncio.gather(store(), delete())

    left = await index.list_instances("t1", STUDY_A)
    assert deleted + len(left) == len(stores)
    counts = await index.count_levels("t1")
    studies = await index.search_studies("t1", _query(QueryLevel.STUDY))
    series = await index.search_series("t1", _query(QueryLevel.SERIES))
    patients = await index.search_patients("t1", _query(QueryLevel.PATIENT))
    if left:
        assert counts == type(counts)(1, 1, len(left))
        assert [s.number_of_instances for s in studies] == [len(left)]
        assert [s.number_of_instances for s in series] == [len(left)]
        assert [p.number_of_instances for p in patients] == [len(left)]
    else:
        assert counts == type(counts)(0, 0, 0)
        assert studies == [] and series == [] and patients == []
    events = await _deleted_events(index)
    assert len(events) == deleted


async def test_series_blob_keys(index: IndexUnderTest) -> None:
    """The blob keys of a batch of series, by series: only series that hold instances
    (storage garbage collection asks which stored files are still referenced)."""
    await _stored(index)
    await _stored(index, tenant="t2")
    await index.delete_instances(DeleteRequest("t1", STUDY_A, MR))

    found = await index.series_blob_keys("t1", [CT, MR, OTHER, "1.2.3.999"])

    assert found == {
        CT: {f"t1/{STUDY_A}/{CT}/{CT}.{n}.dcm" for n in (1, 2, 3)},
        OTHER: {f"t1/{STUDY_B}/{OTHER}/{OTHER}.1.dcm"},
    }
    assert await index.series_blob_keys("t1", []) == {}
    assert set(await index.series_blob_keys("t2", [MR])) == {MR}
    if isinstance(index, SqlIndex):  # the copy rows live in the index database
        made = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
        copy = DerivedCopy("t1", STUDY_A, CT, f"{CT}.1", HTJ2K, f"t1/x/{CT}.1.j2k", 5, "v1", made)
        await SqlDerivedCopies(index.runner).record_copy(copy)
        with_copy = await index.series_blob_keys("t1", [CT])
        assert with_copy[CT] == {*found[CT], copy.blob_key}
