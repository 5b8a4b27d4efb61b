"""C-FIND (PS3.4 C.4.1) over loopback with pynetdicom as the SCU: the same answers as
QIDO-RS for the same query, non-ASCII names, ranges, failures and C-CANCEL."""

from __future__ import annotations

import asyncio
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from conftest import LocalArchive, LocalDimse
from dicomcloud.dimse.find import PATIENT_ROOT_FIND, STUDY_ROOT_FIND
from dicomcloud.dimse.server import DimseServer
from dicomcloud.dimse.tenancy import AssociationTenant, set_association_tenant
from integration.support import two_studies

pytestmark = pytest.mark.timeout(60)

PENDING, SUCCESS, CANCEL, FAILURE = 0xFF00, 0x0000, 0xFE00, 0xC000
CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))
CT_SMALL_BYTES = CT_SMALL.read_bytes()


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
    parts, first, second, series = two_studies()
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
        query=archive.query,
    )
    assoc = SimpleNamespace()
    set_association_tenant(assoc, AssociationTenant(archive.settings.default_tenant, "ANY"))
    event = SimpleNamespace(
        assoc=assoc,
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


async def test_return_keys_the_archive_does_not_keep_come_back_empty(dimse: LocalDimse) -> None:
    """SCUs often ask for more than an archive has; they still get their matches, with
    every requested key (zero length when there is no value, PS3.4 C.4.1.1.3.2)."""
    study, _series, _sop = await stow(dimse.local)
    ds = identifier("STUDY", StudyInstanceUID=study, PatientName="")
    ds.add_new(0x00091010, "LO", "")  # a private return key
    ds.add_new(0x00081032, "SQ", [])  # ProcedureCodeSequence, not in these objects

    found = await find(dimse, ds)

    assert [item.StudyInstanceUID for item in found] == [study]
    assert found[0][0x00091010].is_empty
    assert found[0].ProcedureCodeSequence == []


async def test_return_keys_come_from_the_stored_attributes(dimse: LocalDimse) -> None:
    """Attributes that are not matching keys (Manufacturer, a private tag, a sequence)
    are answered from the attributes the index keeps per level, not from the files."""
    source = dcmread(CT_SMALL)
    response = await dimse.local.stow([CT_SMALL_BYTES])
    assert response.status_code == 200, response.text
    shutil.rmtree(dimse.local.blobs_root)
    series = identifier("SERIES", SeriesInstanceUID="", Manufacturer="", InstitutionName="")
    image = identifier("IMAGE", SOPInstanceUID=source.SOPInstanceUID, SliceThickness="")
    image.add_new(0x00091027, "SL", None)  # private: GEMS "Image actual date"
    image.add_new(0x00101002, "SQ", [])  # OtherPatientIDsSequence (patient level)

    (found_series,) = await find(dimse, series)
    (found_image,) = await find(dimse, image)

    assert found_series.Manufacturer == source.Manufacturer
    assert found_series.InstitutionName == source.InstitutionName
    assert found_image.SliceThickness == source.SliceThickness
    assert found_image[0x00091027].value == source[0x00091027].value
    assert [item.PatientID for item in found_image.OtherPatientIDsSequence] == [
        item.PatientID for item in source.OtherPatientIDsSequence
    ]


async def test_patient_level_with_related_counts(dimse: LocalDimse) -> None:
    """Patient Root at the PATIENT level (PS3.4 C.6.1.1.2): one response per patient,
    with the patient attributes and NumberOfPatientRelated* (PS3.4 C.3.2)."""
    await stow(dimse.local)
    ds = identifier(
        "PATIENT",
        PatientID="",
        PatientName="",
        NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedSeries="",
        NumberOfPatientRelatedInstances="",
    )

    found = await find(dimse, ds, PATIENT_ROOT_FIND)

    assert [(p.PatientID, str(p.PatientName)) for p in found] == [
        ("PAT-1", "Test^Patient"),
        ("PAT-2", "Yamada^Tarou=山田^太郎"),
    ]
    assert all(p.QueryRetrieveLevel == "PATIENT" for p in found)
    counts = [
        (
            p.NumberOfPatientRelatedStudies,
            p.NumberOfPatientRelatedSeries,
            p.NumberOfPatientRelatedInstances,
        )
        for p in found
    ]
    assert counts == [(1, 2, 3), (1, 1, 1)]
    assert found[1].SpecificCharacterSet == "ISO_IR 192"


async def test_patient_level_matching(dimse: LocalDimse) -> None:
    await stow(dimse.local)

    (found,) = await find(
        dimse, identifier("PATIENT", PatientName="山田*", PatientID=""), PATIENT_ROOT_FIND
    )
    (other,) = await find(
        dimse, identifier("PATIENT", PatientName="Test^*", PatientID=""), PATIENT_ROOT_FIND
    )
    lower = identifier("PATIENT", PatientName="test^*", PatientID="")

    assert found.PatientID == "PAT-2"
    assert "NumberOfPatientRelatedStudies" not in found
    assert other.PatientID == "PAT-1"
    assert await find(dimse, lower, PATIENT_ROOT_FIND) == []  # case-sensitive unless fuzzy


@pytest.mark.parametrize(
    ("keys", "model", "named"),
    [
        ({"StudyInstanceUID": ""}, PATIENT_ROOT_FIND, "StudyInstanceUID"),
        ({"StudyDate": "20240102"}, PATIENT_ROOT_FIND, "StudyDate"),
        ({"PatientID": ""}, STUDY_ROOT_FIND, "QueryRetrieveLevel"),
    ],
)
async def test_patient_level_refuses_lower_keys_and_the_study_root(
    dimse: LocalDimse, keys: dict[str, str], model: str, named: str
) -> None:
    status = await failure(dimse, identifier("PATIENT", **keys), model)

    assert status.Status == FAILURE
    assert named in status.ErrorComment


def c_find_fuzzy(
    port: int, ds: Dataset, options: bytes
) -> tuple[bytes | None, list[tuple[Dataset, Dataset | None]]]:
    """One C-FIND on an association proposing the FIND extended negotiation
    ``options`` (PS3.4 C.5.1.1.1): the SCP's reply to them, and every response."""
    from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation

    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STUDY_ROOT_FIND, ExplicitVRLittleEndian)
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = STUDY_ROOT_FIND
    item.service_class_application_information = options
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMCLOUD", ext_neg=[item])
    assert assoc.is_established
    try:
        replies = {
            str(i.sop_class_uid): i.service_class_application_information
            for i in assoc.acceptor.user_information
            if isinstance(i, SOPClassExtendedNegotiation)
        }
        return replies.get(STUDY_ROOT_FIND), list(assoc.send_c_find(ds, STUDY_ROOT_FIND))
    finally:
        assoc.release()


async def test_fuzzy_matching_when_negotiated(dimse: LocalDimse) -> None:
    """Fuzzy semantic matching of person names (PS3.4 C.2.2.2.1.1) applies on the
    associations that negotiated it (byte 3 of the FIND extended negotiation), and
    only there; combined date-time matching is always accepted, relational queries
    and timezone adjustment never."""
    await stow(dimse.local)
    lower = identifier("STUDY", PatientName="test^*", StudyInstanceUID="")

    reply, responses = await asyncio.to_thread(c_find_fuzzy, dimse.port, lower, bytes([1, 1, 1, 1]))
    plain_reply, plain = await asyncio.to_thread(c_find_fuzzy, dimse.port, lower, bytes([0, 1, 0]))

    assert reply == bytes([0, 1, 1, 0])
    *pending, (final, _) = responses
    assert final.Status == SUCCESS
    assert {str(found.PatientName) for _, found in pending if found} == {"Test^Patient"}
    assert plain_reply == bytes([0, 1, 0])
    assert [status.Status for status, _ in plain] == [SUCCESS]  # case-sensitive
