"""QIDO-RS study search through the ASGI app (PS3.18 10.6): STOW-RS, then search."""

from __future__ import annotations

from typing import Any

from conftest import LocalArchive
from integration.support import two_studies

BASE = "http://testserver/dicom-web"


async def stow_two_studies(local: LocalArchive) -> tuple[str, str]:
    parts, first, second, _ = two_studies()
    response = await local.stow(parts)
    assert response.status_code == 200, response.text
    return first, second


async def search(local: LocalArchive, **headers: str) -> Any:
    return await local.client.get("/dicom-web/studies", headers=headers)


async def test_search_returns_default_attributes_in_dicom_json(local: LocalArchive) -> None:
    first, second = await stow_two_studies(local)

    response = await local.client.get("/dicom-web/studies")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    newest, older = response.json()
    assert newest["0020000D"] == {"vr": "UI", "Value": [second]}
    assert newest["00100010"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
    }
    assert newest["00080061"] == {"vr": "CS", "Value": ["MR"]}
    assert older["0020000D"] == {"vr": "UI", "Value": [first]}
    assert older["00080020"] == {"vr": "DA", "Value": ["20240102"]}
    assert older["00080030"] == {"vr": "TM", "Value": ["101500"]}
    assert older["00100020"] == {"vr": "LO", "Value": ["PAT-1"]}
    assert older["00201206"] == {"vr": "IS", "Value": [2]}
    assert older["00201208"] == {"vr": "IS", "Value": [3]}
    assert older["00080005"] == {"vr": "CS", "Value": ["ISO_IR 192"]}
    assert older["00081190"] == {"vr": "UR", "Value": [f"{BASE}/studies/{first}"]}
    assert "00080090" not in older  # no ReferringPhysicianName stored: left out
    assert list(older) == sorted(older)


async def test_search_by_non_ascii_name_and_by_tag(local: LocalArchive) -> None:
    _, second = await stow_two_studies(local)

    by_name = await local.client.get("/dicom-web/studies", params={"PatientName": "山田*"})
    by_tag = await local.client.get(
        "/dicom-web/studies", params={"00100020": "PAT-2", "includefield": "StudyDescription"}
    )

    assert [s["0020000D"]["Value"] for s in by_name.json()] == [[second]]
    (study,) = by_tag.json()
    assert study["0020000D"]["Value"] == [second]
    assert study["00081030"] == {"vr": "LO"}  # asked for, not stored: empty


async def test_no_match_is_200_with_an_empty_array(local: LocalArchive) -> None:
    await stow_two_studies(local)

    response = await local.client.get("/dicom-web/studies", params={"PatientID": "nobody"})

    assert response.status_code == 200
    assert response.json() == []


async def test_limit_offset_and_modalities(local: LocalArchive) -> None:
    first, _ = await stow_two_studies(local)

    page = await local.client.get("/dicom-web/studies", params={"limit": "1", "offset": "1"})
    by_modality = await local.client.get("/dicom-web/studies", params={"ModalitiesInStudy": "OT"})

    assert [s["0020000D"]["Value"][0] for s in page.json()] == [first]
    assert [s["0020000D"]["Value"][0] for s in by_modality.json()] == [first]


async def test_unknown_attribute_is_400_naming_it(local: LocalArchive) -> None:
    response = await local.client.get("/dicom-web/studies", params={"NoSuchThing": "x"})

    assert response.status_code == 400
    assert "NoSuchThing" in response.json()["error"]


async def test_malformed_value_is_400(local: LocalArchive) -> None:
    response = await local.client.get("/dicom-web/studies", params={"StudyDate": "2024-13"})

    assert response.status_code == 400
    assert "StudyDate" in response.json()["error"]


async def test_accept_negotiation(local: LocalArchive) -> None:
    await stow_two_studies(local)

    as_json = await search(local, Accept="application/json")
    wildcard = await search(local, Accept="text/html, */*;q=0.1")
    refused = await search(local, Accept="application/dicom+xml")

    assert as_json.status_code == 200
    assert as_json.headers["content-type"].startswith("application/json")
    assert wildcard.status_code == 200
    assert wildcard.headers["content-type"].startswith("application/dicom+json")
    assert refused.status_code == 406
