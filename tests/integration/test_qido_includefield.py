"""QIDO-RS includefield (PS3.18 8.3.4.3) answered from the index, the server's maximum
limit with its Warning header (PS3.18 8.3.4.4), and XML results (PS3.18 10.6.3.2,
PS3.19 A.1), through the ASGI app."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from conftest import ArchiveFactory, LocalArchive
from integration.support import new_dataset, part10, split_multipart

CT = Path(str(get_testdata_file("CT_small.dcm")))
CT_BYTES = CT.read_bytes()


async def _store_ct(local: LocalArchive) -> None:
    response = await local.stow([CT_BYTES])
    assert response.status_code == 200, response.text


async def _get(local: LocalArchive, path: str, **params: str) -> list[dict[str, Any]]:
    response = await local.client.get(f"/dicom-web{path}", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


async def test_includefield_all_comes_from_the_index_not_the_files(local: LocalArchive) -> None:
    await _store_ct(local)
    shutil.rmtree(local.blobs_root)  # nothing left to open
    ds = dcmread(CT)

    (study,) = await _get(local, "/studies", includefield="all")
    (series,) = await _get(local, "/series", includefield="all")
    (instance,) = await _get(local, "/instances", includefield="all")

    assert study["00080020"] == {"vr": "DA", "Value": [ds.StudyDate]}
    assert study["00201208"] == {"vr": "IS", "Value": [1]}  # computed, still there
    assert study["00100010"]["Value"] == [{"Alphabetic": str(ds.PatientName)}]
    assert series["00080070"] == {"vr": "LO", "Value": [ds.Manufacturer]}  # Equipment IE
    assert instance["00431028"]["vr"] == "OB"  # a private attribute, inline
    assert instance["00180050"] == {"vr": "DS", "Value": [float(ds.SliceThickness)]}
    assert "7FE00010" not in instance  # bulk data stays in the file
    assert "00080070" in instance  # the levels above come with /instances
    assert "00080070" not in study


async def test_includefield_of_one_stored_attribute(local: LocalArchive) -> None:
    await _store_ct(local)
    ds = dcmread(CT)

    (series,) = await _get(local, "/series", includefield="Manufacturer,00181020")
    (plain,) = await _get(local, "/series")

    assert series["00080070"] == {"vr": "LO", "Value": [ds.Manufacturer]}
    assert series["00181020"] == ds["SoftwareVersions"].to_json_dict(None, 1024)
    assert "00080070" not in plain and "00181020" not in plain
    assert "00080070" not in (await _get(local, "/studies", includefield="Manufacturer"))[0]


async def test_includefield_of_a_private_attribute(local: LocalArchive) -> None:
    await _store_ct(local)
    ds = dcmread(CT)

    (instance,) = await _get(local, "/instances", includefield="00431028,00191003")
    unknown = await local.client.get("/dicom-web/instances", params={"includefield": "00101234"})

    assert instance["00431028"] == ds[0x00431028].to_json_dict(None, 1024)
    assert instance["00191003"] == ds[0x00191003].to_json_dict(None, 1024)  # by tag, any case
    assert "00191004" not in instance  # only what was asked for
    assert unknown.status_code == 400  # an even group is public: unknown, not private


async def test_server_limit_adds_a_warning_and_offset_pages_on(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(search__max_limit=2)
    parts = [part10(new_dataset(study=generate_uid())) for _ in range(3)]
    assert (await local.stow(parts)).status_code == 200

    capped = await local.client.get("/dicom-web/studies")
    asked = await local.client.get("/dicom-web/studies", params={"limit": "2"})
    beyond = await local.client.get("/dicom-web/studies", params={"limit": "50"})
    rest = await local.client.get("/dicom-web/studies", params={"offset": "2"})

    assert len(capped.json()) == 2
    assert capped.headers["warning"].startswith('299 dicomcloud "The number of results')
    assert len(asked.json()) == 2 and "warning" not in asked.headers
    assert len(beyond.json()) == 2 and "warning" in beyond.headers
    assert len(rest.json()) == 1 and "warning" not in rest.headers
    uids = {item["0020000D"]["Value"][0] for item in [*capped.json(), *rest.json()]}
    assert len(uids) == 3


async def test_xml_results_one_native_dicom_model_part_per_match(local: LocalArchive) -> None:
    ds = new_dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    assert (await local.stow([part10(ds)])).status_code == 200
    accept = 'multipart/related; type="application/dicom+xml"'

    response = await local.client.get("/dicom-web/studies", headers={"Accept": accept})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(accept)
    (part,) = split_multipart(response.content, response.headers["content-type"])
    root = ET.fromstring(part.data)
    assert root.tag == "NativeDicomModel"
    uid = root.find("DicomAttribute[@tag='0020000D']/Value")
    assert uid is not None and uid.text == ds.StudyInstanceUID
    name = root.find("DicomAttribute[@keyword='PatientName']/PersonName")
    assert name is not None
    assert name.findtext("Alphabetic/FamilyName") == "Yamada"
    assert name.findtext("Ideographic/GivenName") == "太郎"


async def test_unsupported_accept_is_406(local: LocalArchive) -> None:
    response = await local.client.get("/dicom-web/studies", headers={"Accept": "text/html"})

    assert response.status_code == 406
    assert "dicom+xml" in response.text
