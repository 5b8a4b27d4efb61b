"""Regression: under ``duplicate_policy = "replace"`` the second replacement of an
instance was written to the free unversioned key without looking at the index, so the
first replacement's versioned file was never deleted (an orphan in storage) and the
stored event said ``replaced=false``.  Found while building the metadata cache."""

from __future__ import annotations

from conftest import ArchiveFactory
from integration.support import new_dataset, new_instance


async def test_every_replacement_removes_the_version_before_it(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(ingest__duplicate_policy="replace")
    ds = new_dataset()
    uids = {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "sop": ds.SOPInstanceUID}
    versions = [new_instance(**uids, patient_id=f"PAT-{n}") for n in range(4)]

    for version in versions:
        assert (await local.stow([version.data])).status_code == 200

        assert await local.retrieve_bytes(version.path) == version.data
        assert len(local.files()) == 1, local.files()
