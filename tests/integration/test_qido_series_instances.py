"""QIDO-RS series and instance search through the ASGI app (PS3.18 10.6): STOW-RS, then
search every resource."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.uid import generate_uid

from conftest import LocalArchive
from integration.support import new_dataset, part10

BASE = "http://testserver/dicom-web"


async def stow(local: LocalArchive) -> dict[str, str]:
    """Study A: series A1 (two instances, numbers 2 and 1), series A2 (MR, one
    instance); study B: one series, one instance."""
    uids = {name: generate_uid() for name in ("A", "A1", "A2", "B", "B1")}
    datasets = []
    for number in (2, 1):
        ds = new_dataset(study=uids["A"], series=uids["A1"])
        ds.InstanceNumber = number
        ds.SeriesDescription = "Chest"
        uids[f"A1-{number}"] = ds.SOPInstanceUID
        datasets.append(ds)
    ds = new_dataset(study=uids["A"], series=uids["A2"])
    ds.Modality, ds.SeriesNumber = "MR", 2
    uids["A2-1"] = ds.SOPInstanceUID
    datasets.append(ds)
    ds = new_dataset(study=uids["B"], series=uids["B1"], patient_id="PAT-2")
    uids["B1-1"] = ds.SOPInstanceUID
    datasets.append(ds)
    response = await local.stow([part10(ds) for ds in datasets])
    assert response.status_code == 200, response.text
    return uids


def values(results: list[dict[str, Any]], tag: str) -> list[Any]:
    return [r[tag]["Value"][0] for r in results]


async def get(local: LocalArchive, path: str, **params: str) -> Any:
    response = await local.client.get(f"/dicom-web{path}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    return response.json()


async def test_all_series_with_study_attributes(local: LocalArchive) -> None:
    uids = await stow(local)

    results = await get(local, "/series")

    # SeriesNumber 1 (A1, B1 by UID), then 2 (A2)
    first = sorted([uids["A1"], uids["B1"]])
    assert values(results, "0020000E") == [*first, uids["A2"]]
    a1 = results[first.index(uids["A1"])]
    assert a1["00080060"] == {"vr": "CS", "Value": ["OT"]}
    assert a1["0008103E"] == {"vr": "LO", "Value": ["Chest"]}
    assert a1["00200011"] == {"vr": "IS", "Value": [1]}
    assert a1["00201209"] == {"vr": "IS", "Value": [2]}
    assert a1["00081190"] == {
        "vr": "UR",
        "Value": [f"{BASE}/studies/{uids['A']}/series/{uids['A1']}"],
    }
    assert a1["0020000D"] == {"vr": "UI", "Value": [uids["A"]]}  # study attributes too
    assert a1["00100020"] == {"vr": "LO", "Value": ["PAT-1"]}
    assert "00201206" not in a1  # study-computed attributes are for study searches
    assert list(a1) == sorted(a1)


async def test_series_of_a_study_leave_out_study_attributes(local: LocalArchive) -> None:
    uids = await stow(local)

    results = await get(local, f"/studies/{uids['A']}/series")
    mr = await get(local, f"/studies/{uids['A']}/series", Modality="MR")

    assert values(results, "0020000E") == [uids["A1"], uids["A2"]]
    assert "0020000D" not in results[0] and "00100020" not in results[0]
    assert values(mr, "0020000E") == [uids["A2"]]


async def test_instances_at_every_resource(local: LocalArchive) -> None:
    uids = await stow(local)

    everything = await get(local, "/instances", PatientID="PAT-1")
    of_study = await get(local, f"/studies/{uids['A']}/instances")
    of_series = await get(local, f"/studies/{uids['A']}/series/{uids['A1']}/instances")

    a1_order = [uids["A1-1"], uids["A1-2"]]  # InstanceNumber 1, 2
    assert values(of_series, "00080018") == a1_order
    assert set(values(everything, "00080018")) == {*a1_order, uids["A2-1"]}
    assert set(values(of_study, "00080018")) == {*a1_order, uids["A2-1"]}
    first = of_series[0]
    assert first["00200013"] == {"vr": "IS", "Value": [1]}
    assert first["00280010"] == {"vr": "US", "Value": [1]}
    assert first["00280011"] == {"vr": "US", "Value": [16]}
    assert first["00280100"] == {"vr": "US", "Value": [8]}
    assert first["00081190"] == {
        "vr": "UR",
        "Value": [f"{BASE}/studies/{uids['A']}/series/{uids['A1']}/instances/{uids['A1-1']}"],
    }
    assert "0020000E" not in first and "0020000D" not in first  # both in the path
    assert "0020000E" in of_study[0] and "0020000D" not in of_study[0]
    assert "0020000E" in everything[0] and "0020000D" in everything[0]


async def test_instance_search_by_instance_number_and_includefield(local: LocalArchive) -> None:
    uids = await stow(local)

    results = await get(
        local, "/instances", InstanceNumber="2", includefield="PhotometricInterpretation"
    )

    (only,) = results
    assert only["00080018"]["Value"] == [uids["A1-2"]]
    assert only["00280004"] == {"vr": "CS", "Value": ["MONOCHROME2"]}


@pytest.mark.parametrize(
    "path",
    ["/series", "/instances", "/studies/1.2.3/series", "/studies/1.2.3/series/1.2.4/instances"],
)
async def test_no_match_is_200_with_an_empty_array(local: LocalArchive, path: str) -> None:
    await stow(local)

    assert await get(local, path, Modality="XA") == []


@pytest.mark.parametrize("path", ["/series", "/instances", "/studies/1.2/instances"])
async def test_unknown_attribute_is_400_naming_it(local: LocalArchive, path: str) -> None:
    response = await local.client.get(f"/dicom-web{path}", params={"NoSuchThing": "x"})

    assert response.status_code == 400
    assert "NoSuchThing" in response.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/studies/1.2.abc/series",
        "/studies/1.2.abc/instances",
        "/studies/1.2/series/01.2/instances",
    ],
)
async def test_invalid_path_uid_is_400(local: LocalArchive, path: str) -> None:
    response = await local.client.get(f"/dicom-web{path}")

    assert response.status_code == 400
    assert "not a valid UID" in response.json()["error"]


async def test_malformed_integer_is_400(local: LocalArchive) -> None:
    response = await local.client.get("/dicom-web/series", params={"SeriesNumber": "1*"})

    assert response.status_code == 400
    assert "SeriesNumber" in response.json()["error"]
