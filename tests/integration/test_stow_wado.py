"""STOW-RS in, WADO-RS out (PS3.18 10.5 and 10.4): what a DICOMweb client sees."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from conftest import ArchiveFactory, LocalArchive
from integration.support import (
    AS_STORED,
    RETRIEVE_URL,
    dataset_bytes,
    failed_items,
    new_instance,
    pydicom_file,
    referenced_items,
    sop_uids,
    split_multipart,
    stored_files,
    value,
)

pytestmark = pytest.mark.timeout(60)

DICOM_PARTS = 'multipart/related; type="application/dicom"'
PYDICOM_FILES = ("CT_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm")


async def test_many_parts_in_many_transfer_syntaxes(local: LocalArchive) -> None:
    generated = [
        new_instance(ts)
        for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
    ]
    shipped = [pydicom_file(name).read_bytes() for name in PYDICOM_FILES]

    response = await local.stow([i.data for i in generated] + shipped)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    payload = response.json()
    assert failed_items(payload) == []
    items = referenced_items(payload)
    assert len(items) == len(generated) + len(shipped)
    assert set(sop_uids(items)) >= {i.sop for i in generated}
    # Every RetrieveURL works and gives back exactly what was sent, in the same order.
    for item, sent in zip(items, [i.data for i in generated] + shipped, strict=True):
        url = value(item, RETRIEVE_URL)
        assert url.startswith("http://testserver/dicom-web/studies/")
        assert await local.retrieve_bytes(url.removeprefix("http://testserver/dicom-web")) == sent


async def test_wado_response_names_the_transfer_syntax_and_length(local: LocalArchive) -> None:
    instance = new_instance(ExplicitVRBigEndian)
    await local.stow([instance.data])

    response = await local.retrieve(instance.path, **AS_STORED)

    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert content_type.startswith('multipart/related; type="application/dicom"')
    (part,) = split_multipart(response.content, content_type)
    assert part.headers["content-type"] == (
        f"application/dicom; transfer-syntax={ExplicitVRBigEndian}"
    )
    assert int(part.headers["content-length"]) == len(instance.data)
    assert part.data == instance.data


async def test_single_part_application_dicom_body(local: LocalArchive) -> None:
    instance = new_instance()

    response = await local.client.post(
        "/dicom-web/studies",
        content=instance.data,
        headers={"Content-Type": "application/dicom"},
    )

    assert response.status_code == 200, response.text
    assert sop_uids(referenced_items(response.json())) == [instance.sop]
    assert await local.retrieve_bytes(instance.path) == instance.data


async def test_stow_to_a_study_names_it_in_the_response(local: LocalArchive) -> None:
    instance = new_instance()

    response = await local.stow([instance.data], study=instance.study)

    assert response.status_code == 200, response.text
    assert response.json()[RETRIEVE_URL]["Value"] == [
        f"http://testserver/dicom-web/studies/{instance.study}"
    ]


async def test_parts_spooled_to_disk_round_trip(make_archive: ArchiveFactory) -> None:
    local = await make_archive(ingest__spool_memory_bytes=0)  # every part goes to a file
    instances = [new_instance(pixels=50_000) for _ in range(3)]

    response = await local.stow([i.data for i in instances])

    assert response.status_code == 200, response.text
    for instance in instances:
        assert await local.retrieve_bytes(instance.path) == instance.data
    assert stored_files(local.data_dir / "spool") == set()  # spool files removed


async def test_a_file_without_preamble_keeps_its_dataset(local: LocalArchive) -> None:
    data = pydicom_file("ExplVR_LitEndNoMeta.dcm").read_bytes()
    assert data[128:132] != b"DICM"

    response = await local.stow([data])

    assert response.status_code == 202, response.text  # stored, with a warning
    (item,) = referenced_items(response.json())
    assert "Transfer Syntax" in response.headers["warning"]
    stored = await local.retrieve_bytes(
        value(item, RETRIEVE_URL).removeprefix("http://testserver/dicom-web")
    )
    assert stored[128:132] == b"DICM"
    assert dataset_bytes(stored) == data


@pytest.mark.parametrize(
    ("accept", "syntax"),
    [
        # No transfer-syntax: the DICOMweb default, Explicit VR Little Endian (PS3.18 8.7.3.4).
        ('multipart/related; type="application/dicom"', ExplicitVRLittleEndian),
        ("*/*", ExplicitVRLittleEndian),
        # "*": as stored (PS3.18 8.7.3.5.2); a named syntax: that one.
        ('multipart/related; type="application/dicom"; transfer-syntax=*', "stored"),
        (f"{DICOM_PARTS}; transfer-syntax={ImplicitVRLittleEndian}", "stored"),
        (f"{DICOM_PARTS}; transfer-syntax={ExplicitVRLittleEndian}", ExplicitVRLittleEndian),
        ("application/dicom+json", None),
    ],
)
async def test_wado_content_negotiation(
    local: LocalArchive, accept: str, syntax: str | None
) -> None:
    instance = new_instance(ImplicitVRLittleEndian)
    await local.stow([instance.data])

    response = await local.retrieve(instance.path, accept=accept)

    if syntax is None:
        assert response.status_code == 406, response.text
        return
    assert response.status_code == 200, response.text
    (part,) = split_multipart(response.content, response.headers["content-type"])
    if syntax == "stored":
        assert part.data == instance.data
        return
    assert part.headers["content-type"] == f"application/dicom; transfer-syntax={syntax}"
    received = dcmread(io.BytesIO(part.data))
    assert received.file_meta.TransferSyntaxUID == syntax
    assert received == dcmread(io.BytesIO(instance.data))
