"""Bug: an object without SOP Class / SOP Instance UID (a DICOMDIR, a fragment) crashed
the File Meta rebuild (pydicom AttributeError): STOW-RS answered 500 and C-STORE
0x0110 "processing failure" instead of rejecting the instance with a reason.

Fixed in services/part10.py ``build_header`` (CannotUnderstand naming the attribute)
and services/ingest.py ``store_dataset``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import LocalArchive, LocalDimse
from integration.support import (
    SECONDARY_CAPTURE_STORAGE,
    STATUS_CANNOT_UNDERSTAND,
    StoreSCU,
    failure_reasons,
    new_dataset,
    new_instance,
    pydicom_file,
    raw_part10,
)


async def test_stow_of_a_dicomdir_is_409_with_a_reason(local: LocalArchive) -> None:
    dicomdir = (pydicom_file("CT_small.dcm").parent / "dicomdirtests" / "DICOMDIR").read_bytes()

    response = await local.stow([dicomdir])

    assert response.status_code == 409, response.text
    assert failure_reasons(response.json()) == [STATUS_CANNOT_UNDERSTAND]
    assert "SOPClassUID is missing" in response.headers["warning"]
    assert local.files() == set()


async def test_c_store_without_sop_class_uid_is_c000(dimse: LocalDimse, tmp_path: Path) -> None:
    ds = new_dataset()
    del ds.SOPClassUID
    path = tmp_path / "no-class.dcm"
    path.write_bytes(raw_part10(ds))  # the File Meta still names a SOP Class

    def send() -> tuple[int, str]:
        with StoreSCU(dimse.port, [(SECONDARY_CAPTURE_STORAGE, "1.2.840.10008.1.2.1")]) as scu:
            response = scu.store(path)
            assert scu.store(new_file(tmp_path)).status == 0x0000  # still serving
            return response.status, response.error_comment

    status, comment = await asyncio.to_thread(send)

    assert status == STATUS_CANNOT_UNDERSTAND
    assert "SOPClassUID" in comment


def new_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.dcm"
    path.write_bytes(new_instance().data)
    return path
