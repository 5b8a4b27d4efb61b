"""The core round trip (STOW-RS and C-STORE in, WADO-RS out) on every index backend:
SQLite, PostgreSQL and MariaDB/MySQL, each on a fresh database (tests/backends.py).

A server that cannot be reached skips locally and fails with ``CI=true``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

import backends
from conftest import ArchiveFactory, LocalArchive, dimse_for
from integration.support import (
    SECONDARY_CAPTURE_STORAGE,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_ELEMENTS_DISCARDED,
    STATUS_SUCCESS,
    WARNING_REASON,
    StoreSCU,
    dataset_bytes,
    failure_reasons,
    new_dataset,
    new_instance,
    raw_part10,
    referenced_items,
    sop_uids,
    value,
)

pytestmark = pytest.mark.timeout(120)

SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)


@pytest.fixture(params=backends.params(backends.SQL_BACKENDS))
async def on_backend(
    request: pytest.FixtureRequest, make_archive: ArchiveFactory, tmp_path: Path
) -> AsyncIterator[LocalArchive]:
    (tmp_path / "db").mkdir()
    async with backends.database_url(request.param, tmp_path / "db") as url:
        local = await make_archive(index__url=url, server__host="127.0.0.1", server__dicom_port=0)
        assert local.archive.settings.index_url == url
        try:
            yield local
        finally:
            await local.close()  # before the database is dropped


async def test_stow_wado_round_trip(on_backend: LocalArchive) -> None:
    instances = [new_instance(ts) for ts in SYNTAXES]

    response = await on_backend.stow([i.data for i in instances])

    assert response.status_code == 200, response.text
    assert sorted(sop_uids(referenced_items(response.json()))) == sorted(i.sop for i in instances)
    for instance in instances:
        assert await on_backend.retrieve_bytes(instance.path) == instance.data


async def test_duplicate_and_rejected_instances(on_backend: LocalArchive) -> None:
    first = new_instance()
    again = new_instance(study=first.study, series=first.series, sop=first.sop, patient_id="OTHER")
    no_uid = new_dataset()
    del no_uid.SOPInstanceUID
    assert (await on_backend.stow([first.data])).status_code == 200

    response = await on_backend.stow([again.data, raw_part10(no_uid)])

    assert response.status_code == 202, response.text
    payload = response.json()
    (item,) = referenced_items(payload)
    assert value(item, WARNING_REASON) == STATUS_ELEMENTS_DISCARDED
    assert failure_reasons(payload) == [STATUS_CANNOT_UNDERSTAND]
    assert await on_backend.retrieve_bytes(first.path) == first.data
    assert len(on_backend.files()) == 1


async def test_c_store_round_trip(on_backend: LocalArchive, tmp_path: Path) -> None:
    instances = [new_instance(ts) for ts in SYNTAXES]
    paths = []
    for number, instance in enumerate(instances):
        paths.append(tmp_path / f"{number}.dcm")
        paths[-1].write_bytes(instance.data)
    contexts = [(SECONDARY_CAPTURE_STORAGE, ts) for ts in SYNTAXES]

    async with dimse_for(on_backend) as dimse:

        def send() -> list[int]:
            with StoreSCU(dimse.port, contexts) as scu:
                return [scu.store(path).status for path in paths]

        statuses = await asyncio.to_thread(send)

    assert statuses == [STATUS_SUCCESS] * len(instances)
    for instance in instances:
        stored = await on_backend.retrieve_bytes(instance.path)
        assert dataset_bytes(stored) == dataset_bytes(instance.data)


async def test_concurrent_stow_shares_the_study(on_backend: LocalArchive) -> None:
    """Concurrent requests for one study and series (upserts of the same parent rows)."""
    template = new_dataset()
    clients, per_client = 4, 10
    batches = [
        [
            new_instance(study=template.StudyInstanceUID, series=template.SeriesInstanceUID)
            for _ in range(per_client)
        ]
        for _ in range(clients)
    ]

    async def client(batch: list) -> list[int]:  # type: ignore[type-arg]
        return [(await on_backend.stow([i.data])).status_code for i in batch]

    results = await asyncio.gather(*(client(batch) for batch in batches))

    assert results == [[200] * per_client] * clients
    for batch in batches:
        for instance in batch:
            assert await on_backend.retrieve_bytes(instance.path) == instance.data
