"""Extended query tags as a user configures them: a public attribute (Manufacturer) at
the series level and a private one (GEMS_IDEN_01 (0009,xx04), PS3.5 7.8.1) at the
instance level become QIDO-RS matching keys (PS3.18 10.6.1) and C-FIND keys (PS3.4
C.4.1), and are returned with the results; before being configured they are a 400."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from conftest import ArchiveFactory, dimse_for
from integration.test_dimse_find import find, identifier

pytestmark = pytest.mark.timeout(60)

CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))
CT = dcmread(CT_SMALL, stop_before_pixels=True)
CT_BYTES = CT_SMALL.read_bytes()
TAGS: list[dict[str, Any]] = [
    {"tag": "Manufacturer", "level": "series"},
    {"tag": "00091004", "level": "instance", "vr": "SH", "private_creator": "GEMS_IDEN_01"},
]
SERIES = f"/dicom-web/studies/{CT.StudyInstanceUID}/series"
INSTANCES = f"/dicom-web/studies/{CT.StudyInstanceUID}/instances"


async def test_qido_rejects_unconfigured_tags(make_archive: ArchiveFactory) -> None:
    local = await make_archive()
    assert (await local.stow([CT_BYTES])).status_code == 200

    public = await local.client.get(SERIES, params={"Manufacturer": "GE*"})
    private = await local.client.get(INSTANCES, params={"00091004": "HiSpeed*"})

    assert public.status_code == 400 and "Manufacturer" in public.text
    assert private.status_code == 400 and "00091004" in private.text


async def test_qido_matches_and_returns_configured_tags(make_archive: ArchiveFactory) -> None:
    local = await make_archive(search__extended_query_tags=TAGS)
    assert (await local.stow([CT_BYTES])).status_code == 200

    series = await local.client.get(SERIES, params={"Manufacturer": "GE*"})
    by_tag = await local.client.get(SERIES, params={"00080070": "GE MEDICAL SYSTEMS"})
    other = await local.client.get(SERIES, params={"Manufacturer": "SIEMENS"})
    private = await local.client.get(INSTANCES, params={"00091004": "HiSpeed*"})
    not_private = await local.client.get(INSTANCES, params={"00091004": "Other*"})
    series_private = await local.client.get(SERIES, params={"00091004": "HiSpeed*"})

    assert series.status_code == 200, series.text
    (found,) = series.json()
    assert found["0020000E"]["Value"] == [CT.SeriesInstanceUID]
    assert found["00080070"]["Value"] == ["GE MEDICAL SYSTEMS"]
    assert by_tag.json() == series.json()
    assert other.status_code == 200 and other.json() == []
    assert private.status_code == 200, private.text
    (instance,) = private.json()
    assert instance["00080018"]["Value"] == [CT.SOPInstanceUID]
    assert instance["00091004"]["Value"] == ["HiSpeed CT/i"]
    assert not_private.status_code == 200 and not_private.json() == []
    assert series_private.status_code == 400  # an instance-level tag
    assert "00091004" in series_private.text


def _private_key(value: str) -> Dataset:
    ds = identifier("IMAGE", StudyInstanceUID=CT.StudyInstanceUID, SOPInstanceUID="")
    block = ds.private_block(0x0009, "GEMS_IDEN_01", create=True)
    block.add_new(0x04, "SH", value)
    return ds


async def test_c_find_matches_and_returns_configured_tags(make_archive: ArchiveFactory) -> None:
    local = await make_archive(search__extended_query_tags=TAGS)
    assert (await local.stow([CT_BYTES])).status_code == 200

    async with dimse_for(local) as dimse:
        series = await find(
            dimse,
            identifier(
                "SERIES",
                StudyInstanceUID=CT.StudyInstanceUID,
                SeriesInstanceUID="",
                Manufacturer="GE*",
            ),
        )
        none = await find(
            dimse,
            identifier(
                "SERIES",
                StudyInstanceUID=CT.StudyInstanceUID,
                SeriesInstanceUID="",
                Manufacturer="SIEMENS",
            ),
        )
        instances = await find(dimse, _private_key("HiSpeed*"))
        no_instances = await find(dimse, _private_key("Other*"))

    (found,) = series
    assert found.SeriesInstanceUID == CT.SeriesInstanceUID
    assert found.Manufacturer == "GE MEDICAL SYSTEMS"
    assert none == []
    (instance,) = instances
    assert instance.SOPInstanceUID == CT.SOPInstanceUID
    assert instance[0x00091004].value == "HiSpeed CT/i"
    assert instance[0x00090010].value == "GEMS_IDEN_01"  # its private creator
    assert no_instances == []


def _with_procedures(*codes: str) -> bytes:
    """CT_small with a ProcedureCodeSequence item per code, in a study of its own."""
    ds = dcmread(CT_SMALL)
    ds.StudyInstanceUID = f"{CT.StudyInstanceUID}.7"
    ds.SeriesInstanceUID = f"{CT.SeriesInstanceUID}.7"
    ds.SOPInstanceUID = f"{CT.SOPInstanceUID}.7"
    items = []
    for code in codes:
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "L"
        item.CodeMeaning = f"procedure {code}"
        items.append(item)
    ds.ProcedureCodeSequence = items
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


async def test_sequence_matching_over_qido_and_c_find(make_archive: ArchiveFactory) -> None:
    """A sequence path configured as an extended query tag (PS3.4 C.2.2.2.6): QIDO-RS
    by dotted path, C-FIND by a sequence key with one item; the study is found by any
    of its items and returned with the sequence."""
    path_tag = {"tag": "ProcedureCodeSequence.CodeValue", "level": "study"}
    local = await make_archive(search__extended_query_tags=[path_tag])
    assert (
        await local.stow([CT_BYTES, _with_procedures("XR-CHEST", "CT-HEAD")])
    ).status_code == 200
    study = f"{CT.StudyInstanceUID}.7"

    chest = await local.client.get(
        "/dicom-web/studies", params={"ProcedureCodeSequence.CodeValue": "XR-CHEST"}
    )
    head = await local.client.get("/dicom-web/studies", params={"00081032.00080100": "CT-*"})
    other = await local.client.get(
        "/dicom-web/studies", params={"ProcedureCodeSequence.CodeValue": "MR*"}
    )
    unconfigured = await local.client.get(
        "/dicom-web/studies", params={"ProcedureCodeSequence.CodeMeaning": "x"}
    )

    assert chest.status_code == 200, chest.text
    (found,) = chest.json()
    assert found["0020000D"]["Value"] == [study]
    codes = [item["00080100"]["Value"][0] for item in found["00081032"]["Value"]]
    assert codes == ["XR-CHEST", "CT-HEAD"]
    assert [s["0020000D"]["Value"] for s in head.json()] == [[study]]
    assert other.status_code == 200 and other.json() == []
    assert unconfigured.status_code == 400 and "extended query tag" in unconfigured.text

    def by_code(code: str) -> Dataset:
        ds = identifier("STUDY", StudyInstanceUID="")
        item = Dataset()
        item.CodeValue = code
        ds.ProcedureCodeSequence = [item]
        return ds

    async with dimse_for(local) as dimse:
        matched = await find(dimse, by_code("CT-HEAD"))
        unmatched = await find(dimse, by_code("MR*"))

    (answer,) = matched
    assert answer.StudyInstanceUID == study
    assert [i.CodeValue for i in answer.ProcedureCodeSequence] == ["XR-CHEST", "CT-HEAD"]
    assert unmatched == []
