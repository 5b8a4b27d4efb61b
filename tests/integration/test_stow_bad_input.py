"""STOW-RS with bad input (PS3.18 10.5): the exact status and a reason, never a 5xx,
nothing left behind, and the archive keeps serving."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from conftest import ArchiveFactory, LocalArchive
from integration.support import (
    REFERENCED_SOP_INSTANCE_UID,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_DOES_NOT_MATCH,
    STATUS_ELEMENTS_DISCARDED,
    WARNING_REASON,
    failed_items,
    failure_reasons,
    multipart_related,
    new_dataset,
    new_instance,
    pydicom_file,
    raw_part10,
    referenced_items,
    set_raw,
    sop_uids,
    stored_files,
    value,
)

pytestmark = pytest.mark.timeout(60)


async def assert_still_serving(local: LocalArchive) -> None:
    """A normal STOW succeeds right after, and its instance comes back intact."""
    instance = new_instance()
    response = await local.stow([instance.data])
    assert response.status_code == 200, response.text
    assert await local.retrieve_bytes(instance.path) == instance.data


def assert_request_error(response_json: dict[str, object], *words: str) -> None:
    reason = str(response_json["error"])
    for word in words:
        assert word.lower() in reason.lower(), reason


async def assert_rejected_part(
    local: LocalArchive, parts: list[bytes | tuple[bytes, str | None]], *words: str
) -> dict[str, object]:
    """One bad part: 409, FailedSOPSequence with 0xC000, a Warning naming the problem,
    no new file, and the archive still serving."""
    before = local.files()
    response = await local.stow(parts)
    assert response.status_code == 409, response.text
    payload = response.json()
    assert failure_reasons(payload) == [STATUS_CANNOT_UNDERSTAND]
    assert referenced_items(payload) == []
    warning = response.headers.get("warning", "")
    assert warning.startswith("299 "), warning
    for word in words:
        assert word.lower() in warning.lower(), warning
    assert local.files() == before
    await assert_still_serving(local)
    return dict(payload)


async def test_truncated_part_is_rejected(local: LocalArchive) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    sop = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"

    await assert_rejected_part(local, [data[: len(data) // 2]], "truncated")

    assert not await local.indexed(sop)


async def test_pydicom_truncated_files_are_rejected(local: LocalArchive) -> None:
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
        await assert_rejected_part(local, [pydicom_file(name).read_bytes()], "truncated")


async def test_text_sent_as_dicom_is_rejected(local: LocalArchive) -> None:
    await assert_rejected_part(local, [b"this is not a DICOM object, only text\n" * 20])


async def test_part_with_text_content_type_is_rejected(local: LocalArchive) -> None:
    instance = new_instance()

    await assert_rejected_part(local, [(instance.data, "text/plain")], "text/plain")

    assert not await local.indexed(instance.sop)


async def test_missing_sop_instance_uid_is_rejected(local: LocalArchive) -> None:
    ds = new_dataset()
    del ds.SOPInstanceUID

    await assert_rejected_part(local, [raw_part10(ds)], "SOPInstanceUID")


@pytest.mark.parametrize(
    "bad_uid",
    ["1.2.03", "../../x", "1." + "2" * 63, "1.2.3.4\\5.6"],
    ids=["leading-zero", "path-traversal", "65-characters", "two-values"],
)
async def test_invalid_sop_instance_uid_is_rejected(
    local: LocalArchive, tmp_path: Path, bad_uid: str
) -> None:
    ds = new_dataset()
    set_raw(ds, "SOPInstanceUID", bad_uid)
    outside_before = stored_files(tmp_path)

    await assert_rejected_part(local, [raw_part10(ds)], "SOPInstanceUID")

    # Only the instance of assert_still_serving was added, inside the storage root.
    added = stored_files(tmp_path) - outside_before
    blobs = local.blobs_root.relative_to(tmp_path)
    assert len(added) == 1 and all(p.is_relative_to(blobs) for p in added), added


async def test_invalid_study_uid_is_rejected(local: LocalArchive) -> None:
    ds = new_dataset()
    set_raw(ds, "StudyInstanceUID", "1.2.840.abc")

    await assert_rejected_part(local, [raw_part10(ds)], "StudyInstanceUID")

    assert not await local.indexed(str(ds.SOPInstanceUID))


async def test_study_mismatch_is_409_with_a900(local: LocalArchive) -> None:
    instance = new_instance()
    other_study = generate_uid()
    before = local.files()

    response = await local.stow([instance.data], study=other_study)

    assert response.status_code == 409, response.text
    payload = response.json()
    assert failure_reasons(payload) == [STATUS_DATASET_DOES_NOT_MATCH]
    assert STATUS_DATASET_DOES_NOT_MATCH == 43264
    assert sop_uids(failed_items(payload)) == [instance.sop]
    assert instance.study in response.headers["warning"]
    assert local.files() == before
    assert not await local.indexed(instance.sop)
    assert (await local.retrieve(instance.path)).status_code == 404
    # The right study is accepted.
    response = await local.stow([instance.data], study=instance.study)
    assert response.status_code == 200, response.text


async def test_invalid_study_uid_in_the_url_is_400(local: LocalArchive) -> None:
    instance = new_instance()

    response = await local.stow([instance.data], study="1.2.abc")

    assert response.status_code == 400
    assert_request_error(response.json(), "1.2.abc")
    assert not await local.indexed(instance.sop)


async def test_wrong_boundary_is_400(local: LocalArchive) -> None:
    instance = new_instance()
    body, _ = multipart_related([instance.data], boundary="the-real-boundary")
    content_type = 'multipart/related; type="application/dicom"; boundary=another-boundary'

    response = await local.client.post(
        "/dicom-web/studies", content=body, headers={"Content-Type": content_type}
    )

    assert response.status_code == 400
    assert_request_error(response.json(), "boundary")
    assert local.files() == set()
    assert not await local.indexed(instance.sop)
    await assert_still_serving(local)


async def test_missing_boundary_is_400(local: LocalArchive) -> None:
    instance = new_instance()
    body, _ = multipart_related([instance.data])

    response = await local.client.post(
        "/dicom-web/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"'},
    )

    assert response.status_code == 400
    assert_request_error(response.json(), "boundary")
    assert not await local.indexed(instance.sop)
    await assert_still_serving(local)


async def test_missing_close_delimiter_is_reported(local: LocalArchive) -> None:
    """A body cut before its closing boundary: nothing was complete, so 400."""
    instance = new_instance()
    body, content_type = multipart_related([instance.data])
    cut = body[: len(body) // 2]

    response = await local.client.post(
        "/dicom-web/studies", content=cut, headers={"Content-Type": content_type}
    )

    assert response.status_code == 400
    assert_request_error(response.json(), "truncated")
    assert local.files() == set()
    await assert_still_serving(local)


@pytest.mark.parametrize(
    "content_type",
    ['multipart/related; type="application/dicom"; boundary=x', "application/dicom"],
)
async def test_empty_body_is_400(local: LocalArchive, content_type: str) -> None:
    response = await local.client.post(
        "/dicom-web/studies", content=b"", headers={"Content-Type": content_type}
    )

    assert response.status_code == 400
    assert response.json()["error"]
    await assert_still_serving(local)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        'multipart/related; type="application/dicom+json"; boundary=x',
        "text/plain",
        None,
    ],
    ids=["json", "multipart-dicom-json", "text", "none"],
)
async def test_unsupported_media_type_is_415(local: LocalArchive, content_type: str | None) -> None:
    instance = new_instance()
    body, _ = multipart_related([instance.data], boundary="x")
    headers = {"Content-Type": content_type} if content_type else {}

    response = await local.client.post("/dicom-web/studies", content=body, headers=headers)

    assert response.status_code == 415
    assert_request_error(response.json(), "multipart/related")
    assert not await local.indexed(instance.sop)
    await assert_still_serving(local)


async def test_request_over_the_limit_is_413(make_archive: ArchiveFactory) -> None:
    local = await make_archive(ingest__max_request_bytes=4096)
    big = new_instance(pixels=8192)
    assert len(big.data) > 4096

    response = await local.stow([big.data])

    assert response.status_code == 413
    assert_request_error(response.json(), "4096")
    assert local.files() == set()
    assert not await local.indexed(big.sop)
    await assert_still_serving(local)


async def test_streamed_request_over_the_limit_is_413(make_archive: ArchiveFactory) -> None:
    """Without Content-Length (chunked) the limit holds while the body streams in."""
    local = await make_archive(ingest__max_request_bytes=4096)
    big = new_instance(pixels=8192)
    body, content_type = multipart_related([big.data])

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = await local.client.post(
        "/dicom-web/studies", content=chunks(), headers={"Content-Type": content_type}
    )

    assert response.status_code == 413
    assert local.files() == set()
    assert not await local.indexed(big.sop)
    await assert_still_serving(local)


async def test_part_over_the_instance_limit_fails_alone_with_a700(
    make_archive: ArchiveFactory,
) -> None:
    """The too-large part is reported in FailedSOPSequence (0xA700, Out of Resources);
    the parts around it are stored."""
    local = await make_archive(ingest__max_instance_bytes=4096)
    before, big, after = new_instance(), new_instance(pixels=8192), new_instance()

    response = await local.stow([before.data, big.data, after.data])

    assert response.status_code == 202, response.text
    assert failure_reasons(response.json()) == [0xA700]
    assert sorted(sop_uids(referenced_items(response.json()))) == sorted([before.sop, after.sop])
    assert "max_instance_bytes" in response.headers["warning"]
    assert "4096" in response.headers["warning"]
    assert not await local.indexed(big.sop)
    assert len(local.files()) == 2
    await assert_still_serving(local)


async def test_mixed_good_and_bad_parts_is_202(local: LocalArchive) -> None:
    good = [new_instance(), new_instance()]
    missing_uid = new_dataset()
    del missing_uid.SOPInstanceUID
    parts: list[bytes | tuple[bytes, str | None]] = [
        good[0].data,
        b"not dicom at all",
        raw_part10(missing_uid),
        good[1].data,
    ]

    response = await local.stow(parts)

    assert response.status_code == 202, response.text
    payload = response.json()
    assert sorted(sop_uids(referenced_items(payload))) == sorted(g.sop for g in good)
    assert failure_reasons(payload) == [STATUS_CANNOT_UNDERSTAND] * 2
    assert "SOPInstanceUID" in response.headers["warning"]
    for instance in good:
        assert await local.retrieve_bytes(instance.path) == instance.data
    assert len(local.files()) == 2


async def test_duplicate_keep_first_warns_b006_and_keeps_the_original(
    local: LocalArchive,
) -> None:
    ds = new_dataset()
    original = new_instance(
        study=ds.StudyInstanceUID, series=ds.SeriesInstanceUID, sop=ds.SOPInstanceUID
    )
    changed = new_instance(
        study=ds.StudyInstanceUID,
        series=ds.SeriesInstanceUID,
        sop=ds.SOPInstanceUID,
        patient_id="PAT-CHANGED",
    )
    assert changed.data != original.data
    assert (await local.stow([original.data])).status_code == 200

    response = await local.stow([changed.data])

    assert response.status_code == 202, response.text
    items = referenced_items(response.json())
    assert [value(i, REFERENCED_SOP_INSTANCE_UID) for i in items] == [original.sop]
    assert value(items[0], WARNING_REASON) == STATUS_ELEMENTS_DISCARDED == 45062
    assert "already stored" in response.headers["warning"]
    assert await local.retrieve_bytes(original.path) == original.data
    assert len(local.files()) == 1


async def test_duplicate_with_replace_policy_serves_the_new_bytes(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(ingest__duplicate_policy="replace")
    ds = new_dataset()
    uids = {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "sop": ds.SOPInstanceUID}
    original = new_instance(**uids)
    changed = new_instance(**uids, patient_id="PAT-CHANGED")
    assert (await local.stow([original.data])).status_code == 200

    response = await local.stow([changed.data])

    assert response.status_code == 200, response.text
    assert sop_uids(referenced_items(response.json())) == [original.sop]
    assert await local.retrieve_bytes(changed.path) == changed.data
    # The replaced version is gone from storage.
    assert len(local.files()) == 1


async def test_invalid_uid_in_the_wado_url_is_400(local: LocalArchive) -> None:
    instance = new_instance()
    await local.stow([instance.data])

    for path in (
        f"/studies/{instance.study}/series/{instance.series}/instances/1.2.03",
        f"/studies/1.2.x/series/{instance.series}/instances/{instance.sop}",
        f"/studies/{instance.study}/series/{'1' * 65}/instances/{instance.sop}",
    ):
        response = await local.retrieve(path)
        assert response.status_code == 400, (path, response.text)
        assert "not a valid UID" in response.json()["error"]


async def test_unknown_instance_is_404(local: LocalArchive) -> None:
    instance = new_instance()
    await local.stow([instance.data])

    unknown = f"/studies/{instance.study}/series/{instance.series}/instances/{generate_uid()}"
    wrong_series = f"/studies/{instance.study}/series/{generate_uid()}/instances/{instance.sop}"
    for path in (unknown, wrong_series):
        response = await local.retrieve(path)
        assert response.status_code == 404, response.text
        assert "not found" in response.json()["error"]


async def test_stow_answers_in_xml_when_asked(local: LocalArchive) -> None:
    instance = new_instance()

    response = await local.stow(
        [instance.data, b"garbage"], headers={"Accept": "application/dicom+xml"}
    )

    assert response.status_code == 202
    assert response.headers["content-type"].startswith("application/dicom+xml")
    root = ET.fromstring(response.content)
    assert root.tag == "NativeDicomModel"
    attributes = {a.get("keyword"): a for a in root.iter("DicomAttribute")}
    assert "ReferencedSOPSequence" in attributes
    assert "FailedSOPSequence" in attributes
    sop_values = [
        v.text
        for a in root.iter("DicomAttribute")
        if a.get("keyword") == "ReferencedSOPInstanceUID"
        for v in a.iter("Value")
    ]
    assert sop_values == [instance.sop]
    reasons = [
        v.text
        for a in root.iter("DicomAttribute")
        if a.get("keyword") == "FailureReason"
        for v in a.iter("Value")
    ]
    assert reasons == [str(STATUS_CANNOT_UNDERSTAND)]


async def test_unsatisfiable_accept_is_406_and_stores_nothing(local: LocalArchive) -> None:
    instance = new_instance()

    response = await local.stow([instance.data], headers={"Accept": "image/png"})

    assert response.status_code == 406
    assert_request_error(response.json(), "application/dicom+json")
    assert not await local.indexed(instance.sop)
    assert local.files() == set()
    await assert_still_serving(local)


async def test_wado_with_unsatisfiable_accept_is_406(local: LocalArchive) -> None:
    instance = new_instance()
    await local.stow([instance.data])

    response = await local.retrieve(instance.path, accept="application/dicom+json")

    assert response.status_code == 406
    assert_request_error(response.json(), "multipart/related")
