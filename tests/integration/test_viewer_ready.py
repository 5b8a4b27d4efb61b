"""The viewer-ready transcoder (``[workers.transcoder]``, docs/events.md): a stored
compressed instance gets a copy in the target syntax through the bus; WADO-RS sends
that copy (no conversion on request) when a client asks for the target syntax, and
still sends the original byte for byte as stored; a conversion that fails is
recorded, retried, dead-lettered, and leaves the original intact."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import imagecodecs
import numpy as np
import pytest
import redis.asyncio as aioredis
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

from buses import REDIS_URL, bus_url, drop_redis_prefix, require_redis, unique_prefix
from conftest import ArchiveFactory, LocalArchive, dimse_for
from dicomcloud.domain.derived import DerivedCopy
from dicomcloud.events import MemoryEventBus
from dicomcloud.services import syntaxes as ts
from dicomcloud.services.transcode import decoding_plugin, transcode_part10
from integration.retrieve_support import SUCCESS, c_get, identifier
from integration.support import dataset_bytes, pydicom_file, split_multipart

pytestmark = pytest.mark.timeout(180)

TENANT = "default"


def _accept(syntax: str) -> dict[str, str]:
    return {"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'}


def _pixels(data: bytes) -> Any:
    ds = dcmread(io.BytesIO(data))
    plugin = decoding_plugin(str(ds.file_meta.TransferSyntaxUID))
    if plugin:
        ds.pixel_array_options(decoding_plugin=plugin)
    return ds.pixel_array


def _path(ds: Dataset) -> str:
    series = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    return f"{series}/instances/{ds.SOPInstanceUID}"


async def _copy_of(local: LocalArchive, sop: str, target: str) -> DerivedCopy:
    service = local.archive.viewer_ready
    assert service is not None
    async with asyncio.timeout(90):
        while True:
            copy = await service.copies.get_copy(TENANT, sop, target)
            if copy is not None:
                return copy
            await asyncio.sleep(0.05)


async def _parts(local: LocalArchive, path: str, syntax: str) -> list[tuple[str, bytes]]:
    response = await local.retrieve(path, **_accept(syntax))
    assert response.status_code == 200, response.text
    parts = split_multipart(response.content, response.headers["content-type"])
    return [(p.headers["content-type"], p.data) for p in parts]


async def _check_served(local: LocalArchive, name: str, target: str) -> None:
    original = pydicom_file(name).read_bytes()
    ds = dcmread(io.BytesIO(original))
    assert (await local.stow([original])).status_code == 200
    copy = await _copy_of(local, str(ds.SOPInstanceUID), target)
    kept = await local.archive.blobs.get(copy.blob_key)
    assert copy.size == len(kept)
    retrieve = local.archive.retrieve
    study = f"/studies/{ds.StudyInstanceUID}"
    series = f"{study}/series/{ds.SeriesInstanceUID}"

    for path in (_path(ds), series, study):
        served = retrieve.copies_served
        ((content_type, data),) = await _parts(local, path, target)
        assert content_type == f"application/dicom; transfer-syntax={target}"
        assert data == kept  # the kept copy, not one converted now
        assert retrieve.copies_served == served + 1
    if target == ts.EXPLICIT_VR_LE:  # the DICOMweb default (PS3.18 8.7.3.4): a viewer's
        served = retrieve.copies_served
        response = await local.retrieve(
            _path(ds), Accept='multipart/related; type="application/dicom"'
        )
        assert response.status_code == 200, response.text
        (part,) = split_multipart(response.content, response.headers["content-type"])
        assert part.data == kept
        assert retrieve.copies_served == served + 1
    received = dcmread(io.BytesIO(kept))
    assert received.file_meta.TransferSyntaxUID == target
    assert received.SOPInstanceUID == ds.SOPInstanceUID
    assert np.array_equal(_pixels(kept), _pixels(original))
    # The original, as stored, byte for byte.
    assert await local.retrieve_bytes(_path(ds)) == original
    assert await local.retrieve_bytes(series) == original


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("MR_small_jpeg_ls_lossless.dcm", ts.EXPLICIT_VR_LE),
        ("MR_small_RLE.dcm", ts.EXPLICIT_VR_LE),
        ("MR_small_jp2klossless.dcm", ts.HTJ2K_LOSSLESS),
        ("SC_rgb_rle_2frame.dcm", ts.HTJ2K_LOSSLESS),
    ],
)
async def test_a_stored_copy_is_served_instead_of_a_conversion(
    make_archive: ArchiveFactory, name: str, target: str
) -> None:
    local = await make_archive(
        workers__transcoder__enabled=True, workers__transcoder__target=target
    )

    await _check_served(local, name, target)


@pytest.mark.backend
@pytest.mark.parametrize("kind", ["redis", "kafka"])
async def test_a_copy_made_through_a_broker_is_served(
    kind: str, make_archive: ArchiveFactory, request: pytest.FixtureRequest
) -> None:
    prefix = unique_prefix()
    tansu_address = None
    if kind == "redis":
        require_redis()
    else:
        tansu_address = request.getfixturevalue("tansu")
    try:
        local = await make_archive(
            events__url=bus_url(kind, prefix, tansu_address),
            workers__transcoder__enabled=True,
            workers__transcoder__target=ts.HTJ2K_LOSSLESS,
        )
        await _check_served(local, "MR_small_jpeg_ls_lossless.dcm", ts.HTJ2K_LOSSLESS)
        await local.close()
    finally:
        if kind == "redis":
            drop_redis_prefix(prefix)


async def test_native_frames_come_from_the_copy(make_archive: ArchiveFactory) -> None:
    local = await make_archive(workers__transcoder__enabled=True)
    original = pydicom_file("SC_rgb_rle_2frame.dcm").read_bytes()
    ds = dcmread(io.BytesIO(original))
    assert (await local.stow([original])).status_code == 200
    await _copy_of(local, str(ds.SOPInstanceUID), ts.EXPLICIT_VR_LE)
    served = local.archive.retrieve.copies_served

    response = await local.retrieve(
        f"{_path(ds)}/frames/2", Accept='multipart/related; type="application/octet-stream"'
    )

    assert response.status_code == 200, response.text
    (part,) = split_multipart(response.content, response.headers["content-type"])
    assert part.headers["content-type"] == (
        f"application/octet-stream; transfer-syntax={ts.EXPLICIT_VR_LE}"
    )
    assert part.data == np.ascontiguousarray(ds.pixel_array[1]).tobytes()
    assert local.archive.retrieve.copies_served == served + 1


async def test_htj2k_frames_come_from_the_copy(make_archive: ArchiveFactory) -> None:
    local = await make_archive(
        workers__transcoder__enabled=True, workers__transcoder__target=ts.HTJ2K_LOSSLESS
    )
    original = pydicom_file("SC_rgb_rle_2frame.dcm").read_bytes()
    ds = dcmread(io.BytesIO(original))
    assert (await local.stow([original])).status_code == 200
    copy = await _copy_of(local, str(ds.SOPInstanceUID), ts.HTJ2K_LOSSLESS)
    kept = dcmread(io.BytesIO(await local.archive.blobs.get(copy.blob_key)))
    served = local.archive.retrieve.copies_served

    response = await local.retrieve(
        f"{_path(ds)}/frames/2",
        Accept=f'multipart/related; type="image/jphc"; transfer-syntax={ts.HTJ2K_LOSSLESS}',
    )

    assert response.status_code == 200, response.text
    (part,) = split_multipart(response.content, response.headers["content-type"])
    assert part.headers["content-type"] == f"image/jphc; transfer-syntax={ts.HTJ2K_LOSSLESS}"
    assert part.data == list(generate_frames(kept.PixelData, number_of_frames=2))[1]
    decoded = imagecodecs.htj2k_decode(part.data)  # components first
    assert np.array_equal(np.moveaxis(decoded, 0, -1), ds.pixel_array[1])
    assert local.archive.retrieve.copies_served == served + 1


async def test_other_syntaxes_and_a_disabled_transcoder_change_nothing(
    make_archive: ArchiveFactory,
) -> None:
    disabled = await make_archive()
    assert disabled.archive.viewer_ready is None
    assert disabled.archive.transcoder is None
    local = await make_archive(
        workers__transcoder__enabled=True,
        workers__transcoder__sources=[ts.RLE_LOSSLESS],
    )
    original = pydicom_file("MR_small_jpeg_ls_lossless.dcm").read_bytes()
    ds = dcmread(io.BytesIO(original))
    rle = pydicom_file("SC_rgb_rle.dcm").read_bytes()
    assert (await local.stow([original])).status_code == 200
    assert (await local.stow([rle])).status_code == 200
    rle_sop = str(dcmread(io.BytesIO(rle)).SOPInstanceUID)
    await _copy_of(local, rle_sop, ts.EXPLICIT_VR_LE)  # handled in order after the first
    worker = local.archive.transcoder
    assert worker is not None
    async with asyncio.timeout(30):
        while worker.processed < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    service = local.archive.viewer_ready
    assert service is not None
    assert await service.copies.list_copies(TENANT, str(ds.SOPInstanceUID)) == []
    ((_, data),) = await _parts(local, _path(ds), ts.EXPLICIT_VR_LE)  # converted now
    assert np.array_equal(_pixels(data), _pixels(original))
    assert local.archive.retrieve.copies_served == 0


def _undecodable() -> tuple[bytes, Dataset]:
    """A JPEG-LS instance whose codestream is garbage: stored fine, never decoded."""
    ds = dcmread(pydicom_file("MR_small_jpeg_ls_lossless.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(range(256)) * 8])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), ds


async def test_a_failed_conversion_is_recorded_retried_and_dead_lettered(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(
        workers__transcoder__enabled=True,
        workers__metadata=False,  # the only group: every dead letter is the transcoder's
        workers__max_attempts=3,
        workers__retry_backoff_seconds=0.05,
    )
    bus = local.archive.bus
    assert isinstance(bus, MemoryEventBus)
    dead_letters = bus.subscribe("instance.stored.dlq")
    data, ds = _undecodable()
    assert (await local.stow([data])).status_code == 200

    async with asyncio.timeout(90):
        while True:
            letter = await dead_letters.get()
            if letter.payload and json.loads(letter.payload)["sop_instance_uid"] == str(
                ds.SOPInstanceUID
            ):
                break

    service = local.archive.viewer_ready
    assert service is not None
    failure = await service.copies.get_failure(TENANT, str(ds.SOPInstanceUID), ts.EXPLICIT_VR_LE)
    assert failure is not None
    assert failure.attempts == 3
    assert failure.reason
    assert await service.copies.get_copy(TENANT, str(ds.SOPInstanceUID), ts.EXPLICIT_VR_LE) is None
    assert await local.retrieve_bytes(_path(ds)) == data  # the original, untouched
    async with asyncio.timeout(30):
        while bus.backlog("instance.stored", "transcoder"):  # noqa: ASYNC110 - acknowledged
            await asyncio.sleep(0.05)


async def test_a_redelivered_event_makes_no_second_copy(make_archive: ArchiveFactory) -> None:
    local = await make_archive(workers__transcoder__enabled=True)
    original = pydicom_file("MR_small_jpeg_ls_lossless.dcm").read_bytes()
    sop = str(dcmread(io.BytesIO(original)).SOPInstanceUID)
    assert (await local.stow([original])).status_code == 200
    copy = await _copy_of(local, sop, ts.EXPLICIT_VR_LE)
    service = local.archive.viewer_ready
    assert service is not None
    record = await local.archive.index.get_instance(TENANT, sop)
    assert record is not None
    event = json.dumps(
        {
            "event_id": "again",
            "tenant_id": TENANT,
            "patient_id": "",
            "study_instance_uid": record.study_instance_uid,
            "series_instance_uid": record.series_instance_uid,
            "sop_instance_uid": sop,
            "sop_class_uid": record.sop_class_uid,
            "transfer_syntax_uid": record.transfer_syntax_uid,
            "blob_key": record.blob_key,
            "file_size": record.size,
            "number_of_frames": None,
            "accession_number": None,
            "study_date": None,
            "source": "STOW-RS",
            "source_ip": None,
            "source_ae": None,
            "replaced": False,
            "stored_at": "2026-11-22T08:00:00+00:00",
        }
    )
    made = service.made

    await local.archive.bus.publish("instance.stored", f"{TENANT}/x", event)
    worker = local.archive.transcoder
    assert worker is not None
    async with asyncio.timeout(30):
        while worker.processed < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    assert service.made == made
    assert await service.copies.list_copies(TENANT, sop) == [copy]
    derived = [p for p in local.files() if ".derived" in str(p)]
    assert [str(p) for p in derived] == [copy.blob_key]


async def test_a_replaced_instance_never_gets_the_copy_of_its_predecessor(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(
        workers__transcoder__enabled=True, ingest__duplicate_policy="replace"
    )
    service = local.archive.viewer_ready
    assert service is not None
    jpeg_ls = pydicom_file("MR_small_jpeg_ls_lossless.dcm").read_bytes()
    ds = dcmread(io.BytesIO(jpeg_ls))
    sop = str(ds.SOPInstanceUID)
    assert (await local.stow([jpeg_ls])).status_code == 200
    first = await _copy_of(local, sop, ts.EXPLICIT_VR_LE)

    # The same instance again, in RLE (pydicom ships the same image in both).
    rle = pydicom_file("MR_small_RLE.dcm").read_bytes()
    assert str(dcmread(io.BytesIO(rle)).SOPInstanceUID) == sop
    assert (await local.stow([rle])).status_code == 200
    second = first
    async with asyncio.timeout(90):
        while second == first:
            await asyncio.sleep(0.05)
            second = await _copy_of(local, sop, ts.EXPLICIT_VR_LE)
    ((_, data),) = await _parts(local, _path(ds), ts.EXPLICIT_VR_LE)
    assert data == await local.archive.blobs.get(second.blob_key)
    assert np.array_equal(_pixels(data), _pixels(rle))
    # The predecessor's copy is removed after the record moved on (index first).
    await _until_gone(local, first.blob_key)

    # Replaced by a version in the target syntax: no copy is needed any more.
    explicit = transcode_part10(rle, ts.EXPLICIT_VR_LE)
    assert (await local.stow([explicit])).status_code == 200
    async with asyncio.timeout(90):
        while await service.copies.list_copies(TENANT, sop):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await _until_gone(local, second.blob_key)
    assert await local.retrieve_bytes(_path(ds)) == explicit


async def _until_gone(local: Any, key: str) -> None:
    """Wait until a blob is removed (the removal follows the index change)."""
    async with asyncio.timeout(90):
        while await local.archive.blobs.exists(key):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_an_impossible_conversion_is_recorded_once_not_retried(
    make_archive: ArchiveFactory,
) -> None:
    """1-bit, 3-sample or 32-bit pixels cannot be held by every target: HTJ2K here
    refuses 32-bit RLE colour; the reason is recorded, the event not retried."""
    local = await make_archive(
        workers__transcoder__enabled=True,
        workers__transcoder__target=ts.HTJ2K_LOSSLESS,
        workers__max_attempts=3,
        workers__retry_backoff_seconds=0.05,
    )
    original = pydicom_file("SC_rgb_rle_32bit.dcm").read_bytes()
    sop = str(dcmread(io.BytesIO(original)).SOPInstanceUID)
    assert (await local.stow([original])).status_code == 200
    service = local.archive.viewer_ready
    assert service is not None
    failure = None
    async with asyncio.timeout(90):
        while failure is None:
            await asyncio.sleep(0.05)
            failure = await service.copies.get_failure(TENANT, sop, ts.HTJ2K_LOSSLESS)
    worker = local.archive.transcoder
    assert worker is not None
    async with asyncio.timeout(30):
        while worker.processed < 1:  # noqa: ASYNC110 - handled (acknowledged), not raised
            await asyncio.sleep(0.05)

    assert failure.attempts == 1
    assert "32-bit" in failure.reason
    assert await local.retrieve_bytes(_path(dcmread(io.BytesIO(original)))) == original


async def test_c_get_sends_the_copy_to_a_peer_that_takes_only_its_syntax(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(
        server__host="127.0.0.1", server__dicom_port=0, workers__transcoder__enabled=True
    )
    original = pydicom_file("MR_small_jpeg_ls_lossless.dcm").read_bytes()
    ds = dcmread(io.BytesIO(original))
    assert (await local.stow([original])).status_code == 200
    copy = await _copy_of(local, str(ds.SOPInstanceUID), ts.EXPLICIT_VR_LE)
    kept = await local.archive.blobs.get(copy.blob_key)
    served = local.archive.retrieve.copies_served

    async with dimse_for(local) as running:
        responses, received = await asyncio.to_thread(
            c_get,
            running.port,
            identifier("IMAGE", SOPInstanceUID=str(ds.SOPInstanceUID)),
            {str(ds.SOPClassUID): [ts.EXPLICIT_VR_LE]},
        )

    assert responses[-1].status == SUCCESS
    (item,) = received
    assert item.transfer_syntax == ts.EXPLICIT_VR_LE
    assert item.data == dataset_bytes(kept)  # the kept copy, not one converted now
    assert local.archive.retrieve.copies_served == served + 1


@pytest.mark.backend
async def test_a_failed_conversion_is_dead_lettered_on_redis(make_archive: ArchiveFactory) -> None:
    require_redis()
    prefix = unique_prefix()
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        local = await make_archive(
            events__url=bus_url("redis", prefix),
            workers__transcoder__enabled=True,
            workers__metadata=False,
            workers__max_attempts=2,
            workers__retry_backoff_seconds=0.05,
        )
        data, ds = _undecodable()
        sop = str(ds.SOPInstanceUID)
        assert (await local.stow([data])).status_code == 200

        letters: list[tuple[str, dict[str, str]]] = []
        async with asyncio.timeout(90):
            while not letters:
                await asyncio.sleep(0.1)
                letters = await client.xrange(f"{prefix}:instance.stored.dlq")

        ((_, fields),) = letters
        headers = json.loads(fields["headers"])
        assert json.loads(fields["payload"])["sop_instance_uid"] == sop
        assert (headers["group"], headers["attempts"]) == ("transcoder", "2")
        assert "TranscodeFailed" in headers["error"]
        service = local.archive.viewer_ready
        assert service is not None
        failure = await service.copies.get_failure(TENANT, sop, ts.EXPLICIT_VR_LE)
        assert failure is not None
        assert failure.attempts == 2
        assert await service.copies.get_copy(TENANT, sop, ts.EXPLICIT_VR_LE) is None
        assert await local.retrieve_bytes(_path(ds)) == data
        await local.close()
    finally:
        await client.aclose()
        drop_redis_prefix(prefix)


async def test_forgetting_an_instance_removes_its_copies(make_archive: ArchiveFactory) -> None:
    """What deleting an instance must do (the archive has no deletion yet)."""
    local = await make_archive(workers__transcoder__enabled=True)
    original = pydicom_file("MR_small_RLE.dcm").read_bytes()
    ds = dcmread(io.BytesIO(original))
    assert (await local.stow([original])).status_code == 200
    copy = await _copy_of(local, str(ds.SOPInstanceUID), ts.EXPLICIT_VR_LE)
    service = local.archive.viewer_ready
    assert service is not None

    assert await service.forget(TENANT, str(ds.SOPInstanceUID)) == 1

    assert not await local.archive.blobs.exists(copy.blob_key)
    assert await service.copies.list_copies(TENANT, str(ds.SOPInstanceUID)) == []
    assert await local.retrieve_bytes(_path(ds)) == original
