"""C-FIND (PS3.4 C.4.1) over loopback with pynetdicom as the SCU: the same answers as
QIDO-RS for the same query, non-ASCII names, ranges, failures and C-CANCEL."""

from __future__ import annotations

import asyncio
import warnings
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from conftest import LocalArchive, LocalDimse
from dicomcloud.dimse.find import PATIENT_ROOT_FIND, STUDY_ROOT_FIND
from dicomcloud.dimse.server import DimseServer
from integration.support import new_dataset, part10

pytestmark = pytest.mark.timeout(60)

PENDING, SUCCESS, CANCEL, FAILURE = 0xFF00, 0x0000, 0xFE00, 0xC000


def c_find(
    port: int, identifier: Dataset, model: str = STUDY_ROOT_FIND
) -> list[tuple[Dataset, Dataset | None]]:
    """Every response (status, identifier) of one C-FIND on its own association."""
    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMCLOUD")
    assert assoc.is_established
    try:
        return list(assoc.send_c_find(identifier, model))
    finally:
        assoc.release()


def identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


async def find(dimse: LocalDimse, ds: Dataset, model: str = STUDY_ROOT_FIND) -> list[Dataset]:
    """The pending identifiers, asserting a final success."""
    responses = await asyncio.to_thread(c_find, dimse.port, ds, model)
    *pending, (final, _) = responses
    assert final.Status == SUCCESS, final
    assert all(status.Status == PENDING for status, _ in pending)
    return [found for _, found in pending if found is not None]


async def failure(dimse: LocalDimse, ds: Dataset, model: str = STUDY_ROOT_FIND) -> Dataset:
    responses = await asyncio.to_thread(c_find, dimse.port, ds, model)
    ((status, found),) = responses
    assert found is None
    return status


async def stow(local: LocalArchive) -> tuple[str, str, str]:
    first, second, series = generate_uid(), generate_uid(), generate_uid()
    parts = []
    for number in (1, 2):
        ds = new_dataset(study=first, series=series)
        ds.InstanceNumber = number
        parts.append(part10(ds))
    parts.append(part10(new_dataset(study=first)))
    ds = new_dataset(study=second, patient_id="PAT-2")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    ds.StudyDate = "20250101"
    ds.Modality = "MR"
    parts.append(part10(ds))
    response = await local.stow(parts)
    assert response.status_code == 200, response.text
    return first, second, series


async def qido(local: LocalArchive, path: str, **params: str) -> list[dict[str, Any]]:
    response = await local.client.get(f"/dicom-web{path}", params=params)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def values(found: Dataset, keyword: str) -> list[Any]:
    element = found[keyword]
    if element.is_empty:
        return []
    if element.VM > 1:
        return list(element.value)
    return [element.value]


def json_values(item: dict[str, Any], tag: str) -> list[Any]:
    raw = item.get(tag, {}).get("Value", [])
    return ["=".join(v.values()) if isinstance(v, dict) else v for v in raw]


@pytest.mark.parametrize("model", [STUDY_ROOT_FIND, PATIENT_ROOT_FIND], ids=["study", "patient"])
async def test_study_level_matches_qido(dimse: LocalDimse, model: str) -> None:
    await stow(dimse.local)
    keys = {
        "StudyInstanceUID": ("", "0020000D"),
        "PatientName": ("", "00100010"),
        "StudyDate": ("", "00080020"),
        "ModalitiesInStudy": ("", "00080061"),
        "NumberOfStudyRelatedInstances": ("", "00201208"),
        "NumberOfStudyRelatedSeries": ("", "00201206"),
    }
    found = await find(dimse, identifier("STUDY", **{k: v for k, (v, _) in keys.items()}), model)
    expected = await qido(dimse.local, "/studies")

    assert len(found) == len(expected) == 2
    for ds, item in zip(found, expected, strict=True):
        assert ds.QueryRetrieveLevel == "STUDY"
        for keyword, (_, tag) in keys.items():
            got = [str(v) if keyword == "PatientName" else v for v in values(ds, keyword)]
            assert got == json_values(item, tag), keyword


async def test_non_ascii_wildcard_on_patient_name(dimse: LocalDimse) -> None:
    _, second, _ = await stow(dimse.local)

    found = await find(dimse, identifier("STUDY", PatientName="山田*", StudyInstanceUID=""))
    expected = await qido(dimse.local, "/studies", PatientName="山田*")

    (study,) = found
    assert [study.StudyInstanceUID] == [item["0020000D"]["Value"][0] for item in expected]
    assert study.StudyInstanceUID == second
    assert study.SpecificCharacterSet == "ISO_IR 192"
    assert str(study.PatientName) == "Yamada^Tarou=山田^太郎"


async def test_ascii_responses_carry_no_character_set(dimse: LocalDimse) -> None:
    first, _, _ = await stow(dimse.local)

    (study,) = await find(dimse, identifier("STUDY", PatientID="PAT-1", PatientName=""))

    assert study.StudyInstanceUID == first
    assert "SpecificCharacterSet" not in study
    assert str(study.PatientName) == "Test^Patient"


@pytest.mark.parametrize(
    ("dates", "which"),
    [("20241201-20250201", "second"), ("-20241231", "first"), ("20240102", "first")],
)
async def test_date_range(dimse: LocalDimse, dates: str, which: str) -> None:
    first, second, _ = await stow(dimse.local)

    found = await find(dimse, identifier("STUDY", StudyDate=dates))
    expected = await qido(dimse.local, "/studies", StudyDate=dates)

    assert [ds.StudyInstanceUID for ds in found] == [
        item["0020000D"]["Value"][0] for item in expected
    ]
    assert [ds.StudyInstanceUID for ds in found] == [first if which == "first" else second]


async def test_series_level_matches_qido(dimse: LocalDimse) -> None:
    first, _, series = await stow(dimse.local)

    found = await find(
        dimse,
        identifier(
            "SERIES",
            StudyInstanceUID=first,
            SeriesInstanceUID="",
            Modality="",
            NumberOfSeriesRelatedInstances="",
        ),
    )
    expected = await qido(dimse.local, "/series", StudyInstanceUID=first)

    assert [ds.SeriesInstanceUID for ds in found] == [
        item["0020000E"]["Value"][0] for item in expected
    ]
    assert series in {ds.SeriesInstanceUID for ds in found}
    for ds, item in zip(found, expected, strict=True):
        assert ds.StudyInstanceUID == first
        assert values(ds, "NumberOfSeriesRelatedInstances") == json_values(item, "00201209")
        assert values(ds, "Modality") == json_values(item, "00080060")


async def test_image_level_matches_qido(dimse: LocalDimse) -> None:
    first, _, series = await stow(dimse.local)

    found = await find(
        dimse,
        identifier("IMAGE", SeriesInstanceUID=series, InstanceNumber="", SOPClassUID="", Rows=None),
    )
    expected = await qido(dimse.local, "/instances", SeriesInstanceUID=series)

    assert len(found) == 2
    assert [ds.SOPInstanceUID for ds in found] == [
        item["00080018"]["Value"][0] for item in expected
    ]
    for ds, item in zip(found, expected, strict=True):
        assert ds.QueryRetrieveLevel == "IMAGE"
        assert ds.StudyInstanceUID == first
        assert values(ds, "InstanceNumber") == json_values(item, "00200013")
        assert values(ds, "Rows") == json_values(item, "00280010")
        assert ds.SOPClassUID == item["00080016"]["Value"][0]


async def test_a_match_on_the_uid_list(dimse: LocalDimse) -> None:
    first, second, _ = await stow(dimse.local)

    found = await find(dimse, identifier("STUDY", StudyInstanceUID=[first, second]))

    assert {ds.StudyInstanceUID for ds in found} == {first, second}


async def test_no_match_is_success_only(dimse: LocalDimse) -> None:
    await stow(dimse.local)

    assert await find(dimse, identifier("STUDY", PatientID="NOBODY")) == []


async def test_an_unknown_key_fails(dimse: LocalDimse) -> None:
    ds = identifier("STUDY", StudyInstanceUID="")
    ds.add_new(0x00091010, "LO", "private")

    status = await failure(dimse, ds)

    assert status.Status == FAILURE
    assert "00091010" in status.ErrorComment


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ({"StudyDate": "20241399"}, "StudyDate"),
        ({"NumberOfStudyRelatedInstances": "3"}, "NumberOfStudyRelatedInstances"),
        ({"SOPInstanceUID": ""}, "SOPInstanceUID"),
        ({"PatientID": "", "QueryRetrieveLevel": "PATIENT"}, "QueryRetrieveLevel"),
        ({"PatientID": "", "QueryRetrieveLevel": "NOPE"}, "QueryRetrieveLevel"),
    ],
)
async def test_a_malformed_identifier_fails(
    dimse: LocalDimse, keys: dict[str, str], named: str
) -> None:
    with warnings.catch_warnings():  # pydicom warns about the malformed date itself
        warnings.simplefilter("ignore")
        ds = identifier("STUDY", **keys)

    status = await failure(dimse, ds)

    assert status.Status == FAILURE
    assert named in status.ErrorComment
    assert len(status.ErrorComment) <= 64


async def test_cancel_stops_the_pending_responses(dimse: LocalDimse) -> None:
    """The handler checks for C-CANCEL between matches (PS3.4 C.4.1.2.3)."""
    await stow(dimse.local)
    archive = dimse.local.archive
    server = DimseServer(
        archive.settings,
        archive.ingest,
        asyncio.get_running_loop(),
        tenant_id=archive.settings.default_tenant,
        query=archive.query,
    )
    event = SimpleNamespace(
        request=SimpleNamespace(AffectedSOPClassUID=STUDY_ROOT_FIND),
        identifier=identifier("STUDY", StudyInstanceUID=""),
        is_cancelled=False,
    )

    def run() -> list[int]:
        statuses = []
        for status, _ in server._on_find(event):
            statuses.append(int(status) if isinstance(status, int) else int(status.Status))
            event.is_cancelled = True  # the SCU cancels after the first match
        return statuses

    assert await asyncio.to_thread(run) == [PENDING, CANCEL]


async def test_return_keys_the_archive_does_not_keep_are_left_out(dimse: LocalDimse) -> None:
    """SCUs often ask for more than an archive indexes; they still get their matches."""
    study, _series, _sop = await stow(dimse.local)
    ds = identifier("STUDY", StudyInstanceUID=study, PatientName="")
    ds.add_new(0x00091010, "LO", "")  # a private return key
    ds.add_new(0x00081032, "SQ", [])  # ProcedureCodeSequence, not indexed

    found = await find(dimse, ds)

    assert [item.StudyInstanceUID for item in found] == [study]
    assert 0x00091010 not in found[0]
    assert "ProcedureCodeSequence" not in found[0]
