"""A pynetdicom Storage SCU against ``dicomcloud serve``: statuses a modality sees, and
what is retrievable afterwards."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from conftest import RealServer
from integration.support import (
    AS_STORED,
    CT_IMAGE_STORAGE,
    SECONDARY_CAPTURE_STORAGE,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_SUCCESS,
    Instance,
    StoreSCU,
    dataset_bytes,
    file_meta,
    new_dataset,
    new_instance,
    raw_part10,
    set_raw,
    split_multipart,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
CONTEXTS = [(c, ts) for c in (SECONDARY_CAPTURE_STORAGE, CT_IMAGE_STORAGE) for ts in SYNTAXES]


def retrieve(server: RealServer, instance_path: str) -> httpx.Response:
    return httpx.get(server.dicomweb_url + instance_path, headers=AS_STORED, timeout=30)


def stored_bytes(server: RealServer, instance: Instance) -> bytes:
    response = retrieve(server, instance.path)
    assert response.status_code == 200, response.text
    (part,) = split_multipart(response.content, response.headers["content-type"])
    return part.data


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_c_store_success_then_retrievable(server: RealServer, tmp_path: Path) -> None:
    instances = [
        new_instance(syntax, sop_class=sop_class)
        for syntax in SYNTAXES
        for sop_class in (SECONDARY_CAPTURE_STORAGE, CT_IMAGE_STORAGE)
    ]

    with StoreSCU(server.dicom_port, CONTEXTS, called_ae=server.ae_title) as scu:
        responses = [
            scu.store(write(tmp_path, f"{n}.dcm", i.data)) for n, i in enumerate(instances)
        ]

    assert [r.status for r in responses] == [STATUS_SUCCESS] * len(instances)
    for instance in instances:  # read-your-writes: retrievable as soon as acknowledged
        stored = stored_bytes(server, instance)
        assert dataset_bytes(stored) == dataset_bytes(instance.data)
        assert file_meta(stored).TransferSyntaxUID == file_meta(instance.data).TransferSyntaxUID


def test_failures_carry_a_status_and_a_comment_and_store_nothing(
    server: RealServer, tmp_path: Path
) -> None:
    no_uid = new_dataset()
    del no_uid.SOPInstanceUID
    bad_uid = new_dataset()
    set_raw(bad_uid, "SOPInstanceUID", "1.2.03")
    wrong_study = new_dataset()
    set_raw(wrong_study, "StudyInstanceUID", "../../etc")
    bad_files = [
        write(tmp_path, "no-uid.dcm", raw_part10(no_uid)),
        write(tmp_path, "bad-uid.dcm", raw_part10(bad_uid)),
        write(tmp_path, "bad-study.dcm", raw_part10(wrong_study)),
    ]
    good = new_instance()
    files_before = server.files()

    with StoreSCU(server.dicom_port, CONTEXTS, called_ae=server.ae_title) as scu:
        responses = [scu.store(path) for path in bad_files]
        after = scu.store(write(tmp_path, "good.dcm", good.data))

    assert [r.status for r in responses] == [STATUS_CANNOT_UNDERSTAND] * 3
    assert "SOPInstanceUID" in responses[0].error_comment
    assert "SOPInstanceUID" in responses[1].error_comment
    assert "StudyInstanceUID" in responses[2].error_comment
    # Never 0x0000 for what was not stored: nothing is retrievable, no file was added.
    for path, ds in zip(bad_files, (no_uid, bad_uid, wrong_study), strict=True):
        sop = str(file_meta(path.read_bytes()).MediaStorageSOPInstanceUID)
        url = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{sop}"
        assert retrieve(server, url).status_code in (400, 404)
    # The association survived the failures and the next instance is stored.
    assert after.status == STATUS_SUCCESS
    (added,) = server.files() - files_before
    assert added.name == f"{good.sop}.dcm"


def test_concurrent_associations_all_land(server: RealServer, tmp_path: Path) -> None:
    associations, per_association = 6, 8
    batches = [
        [new_instance(SYNTAXES[(a + i) % 3]) for i in range(per_association)]
        for a in range(associations)
    ]
    files_before = len(server.files())

    def send(number: int) -> list[int]:
        with StoreSCU(server.dicom_port, CONTEXTS, called_ae=server.ae_title) as scu:
            return [
                scu.store(write(tmp_path, f"{number}-{i}.dcm", instance.data)).status
                for i, instance in enumerate(batches[number])
            ]

    with ThreadPoolExecutor(max_workers=associations) as pool:
        results = list(pool.map(send, range(associations)))

    assert results == [[STATUS_SUCCESS] * per_association] * associations
    assert len(server.files()) == files_before + associations * per_association
    for batch in batches:
        for instance in batch:
            assert dataset_bytes(stored_bytes(server, instance)) == dataset_bytes(instance.data)
