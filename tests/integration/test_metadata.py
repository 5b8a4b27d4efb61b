"""WADO-RS metadata (PS3.18 10.4.1.1.6, Annex F) through the ASGI app, on real files."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from conftest import ArchiveFactory, LocalArchive
from integration.support import new_dataset, part10, pydicom_file, split_multipart

BASE = "http://testserver/dicom-web"
THRESHOLD = 1024


def expected_json(data: bytes) -> dict[str, Any]:
    """pydicom's own DICOM JSON of a file, with the BulkDataURIs this archive uses for
    top-level values longer than the threshold (group lengths are not in the model)."""
    ds = dcmread(io.BytesIO(data))
    prefix = (
        f"{BASE}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/bulkdata/"
    )
    # pydicom's threshold counts base64 characters: 1366 -> more than 1023 bytes.
    result: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=1366,
        bulk_data_element_handler=lambda elem: f"{prefix}{elem.tag:08X}",
    )
    return {k: v for k, v in result.items() if not k.endswith("0000")}


async def store(local: LocalArchive, *files: bytes) -> None:
    response = await local.stow(list(files))
    assert response.status_code == 200, response.text


def read(name: str) -> bytes:
    return pydicom_file(name).read_bytes()


def uids(data: bytes) -> tuple[str, str, str]:
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def series_of(count: int, **kwargs: Any) -> list[bytes]:
    study, series = generate_uid(), generate_uid()
    out = []
    for number in range(1, count + 1):
        ds = new_dataset(study=study, series=series, pixels=2048, **kwargs)
        ds.InstanceNumber = number
        out.append(part10(ds))
    return out


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm"])
async def test_instance_metadata_is_the_dicom_json_of_the_file(
    local: LocalArchive, name: str
) -> None:
    data = read(name)
    await store(local, data)
    study, series, sop = uids(data)

    response = await local.retrieve(f"/studies/{study}/series/{series}/instances/{sop}/metadata")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    assert response.json() == [expected_json(data)]


async def test_series_metadata_lists_every_instance_in_instance_number_order(
    local: LocalArchive,
) -> None:
    files = series_of(3)
    await store(local, *reversed(files))
    study, series, _ = uids(files[0])

    response = await local.retrieve(f"/studies/{study}/series/{series}/metadata")

    assert response.status_code == 200, response.text
    assert response.json() == [expected_json(f) for f in files]


async def test_study_metadata_joins_its_series(local: LocalArchive) -> None:
    study = generate_uid()
    first = part10(new_dataset(study=study))
    second = part10(new_dataset(study=study))
    await store(local, first, second)

    response = await local.retrieve(f"/studies/{study}/metadata")

    assert response.status_code == 200, response.text
    got = sorted(response.json(), key=lambda d: d["00080018"]["Value"][0])
    want = sorted(
        [expected_json(first), expected_json(second)], key=lambda d: d["00080018"]["Value"][0]
    )
    assert got == want


async def test_etag_and_if_none_match(local: LocalArchive) -> None:
    files = series_of(2)
    await store(local, files[0])
    study, series, _ = uids(files[0])
    path = f"/studies/{study}/series/{series}/metadata"

    first = await local.retrieve(path)
    etag = first.headers["etag"]
    again = await local.retrieve(path, **{"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""

    await store(local, files[1])
    changed = await local.retrieve(path, **{"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert len(changed.json()) == 2


async def test_gzip_only_when_accepted(local: LocalArchive) -> None:
    data = read("CT_small.dcm")
    await store(local, data)
    study, series, _ = uids(data)
    path = f"/studies/{study}/series/{series}/metadata"

    zipped = await local.retrieve(path, **{"Accept-Encoding": "gzip"})
    plain = await local.retrieve(path, **{"Accept-Encoding": "identity"})

    assert zipped.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert zipped.json() == plain.json() == [expected_json(data)]
    assert int(zipped.headers["content-length"]) < len(plain.content)


async def test_xml_metadata_is_multipart_native_dicom_model(local: LocalArchive) -> None:
    data = read("CT_small.dcm")
    await store(local, data)
    study, series, sop = uids(data)
    accept = 'multipart/related; type="application/dicom+xml"'

    response = await local.retrieve(f"/studies/{study}/series/{series}/metadata", Accept=accept)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("multipart/related")
    (part,) = split_multipart(response.content, response.headers["content-type"])
    assert part.headers["content-type"] == "application/dicom+xml"
    root = ElementTree.fromstring(part.data)
    by_tag = {a.get("tag"): a for a in root.iter("DicomAttribute")}
    assert by_tag["00080018"].findtext("Value") == sop
    assert by_tag["00100010"].findtext("PersonName/Alphabetic/FamilyName") == "CompressedSamples"
    bulk = by_tag["7FE00010"].find("BulkData")
    assert bulk is not None
    assert bulk.get("uri", "").endswith(f"/instances/{sop}/bulkdata/7FE00010")


async def test_application_json_is_accepted_and_other_types_are_not(local: LocalArchive) -> None:
    data = read("MR_small.dcm")
    await store(local, data)
    study, series, _ = uids(data)
    path = f"/studies/{study}/series/{series}/metadata"

    as_json = await local.retrieve(path, Accept="application/json")
    refused = await local.retrieve(path, Accept="image/png")

    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    assert refused.status_code == 406


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/studies/1.2.3/metadata", 404),
        ("/studies/1.2.3/series/4.5.6/metadata", 404),
        ("/studies/1.2.3/series/4.5.6/instances/7.8.9/metadata", 404),
        ("/studies/1.2.x/metadata", 400),
        ("/studies/1.2.3/series/01.2/metadata", 400),
    ],
)
async def test_missing_or_malformed_resources(local: LocalArchive, path: str, status: int) -> None:
    response = await local.retrieve(path)
    assert response.status_code == status, response.text
    assert response.json()["error"]


async def test_instance_of_another_series_is_not_found(local: LocalArchive) -> None:
    data = read("CT_small.dcm")
    await store(local, data)
    study, _, sop = uids(data)

    response = await local.retrieve(f"/studies/{study}/series/1.2.3/instances/{sop}/metadata")

    assert response.status_code == 404


async def test_worker_prepares_series_so_reads_open_no_dicom_file(local: LocalArchive) -> None:
    files = series_of(4)
    study, series, _ = uids(files[0])
    path = f"/studies/{study}/series/{series}/metadata"
    first = await local.retrieve(path)  # teaches the worker this base URL
    assert first.status_code == 404
    await store(local, *files)
    worker = local.archive.metadata_worker
    assert worker is not None
    async with asyncio.timeout(30):
        while worker.processed < 4:  # noqa: ASYNC110 - the relay publishes after a linger
            await asyncio.sleep(0.05)
        await worker.settled()
    metadata_root = local.data_dir / "metadata"
    assert len(list(metadata_root.rglob("series.*.json.gz"))) == 1

    for stored in local.blobs_root.rglob("*.dcm"):
        stored.unlink()  # the DICOM files are gone: only the prepared metadata is left
    response = await local.retrieve(path)

    assert response.status_code == 200, response.text
    assert response.json() == [expected_json(f) for f in files]


async def test_metadata_is_built_on_demand_without_events(local: LocalArchive) -> None:
    await local.archive.stop_workers()  # no event will be consumed
    files = series_of(3)
    await store(local, *files)
    study, series, _ = uids(files[0])
    async with asyncio.timeout(30):
        while await local.archive.index.fetch_outbox(10):  # noqa: ASYNC110 - relayed, unread
            await asyncio.sleep(0.05)
    assert local.archive.metadata.instances_built == 0

    response = await local.retrieve(f"/studies/{study}/series/{series}/metadata")

    assert response.status_code == 200, response.text
    assert response.json() == [expected_json(f) for f in files]
    assert local.archive.metadata.instances_built == 3


async def test_replaced_instance_never_serves_stale_metadata(make_archive: ArchiveFactory) -> None:
    local = await make_archive(ingest__duplicate_policy="replace")
    ds = new_dataset()
    ds.PatientName = "Before^Replace"
    before = part10(ds)
    await store(local, before)
    path = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    assert (await local.retrieve(path + "/metadata")).json() == [expected_json(before)]

    ds.PatientName = "After^Replace"
    ds.ImageComments = "second version"
    after = part10(ds)
    await store(local, after)

    # At once, whether or not the worker has seen the event yet.
    for resource in (path + "/metadata", f"{path}/instances/{ds.SOPInstanceUID}/metadata"):
        response = await local.retrieve(resource)
        assert response.json() == [expected_json(after)], resource


def nested_bulk_instance() -> tuple[bytes, bytes]:
    ds = new_dataset()
    item = Dataset()
    item.CodeValue = "X"
    payload = bytes(range(256)) * 8  # 2048 bytes: bulk data
    item.add_new(0x00420011, "OB", payload)  # EncapsulatedDocument in an item
    ds.ReferencedImageSequence = [Dataset(), item]
    return part10(ds), payload


async def test_nested_bulk_data_has_a_uri_with_its_item(local: LocalArchive) -> None:
    data, payload = nested_bulk_instance()
    await store(local, data)
    study, series, sop = uids(data)

    response = await local.retrieve(f"/studies/{study}/series/{series}/instances/{sop}/metadata")

    (dataset,) = response.json()
    uri = dataset["00081140"]["Value"][1]["00420011"]["BulkDataURI"]
    assert (
        uri
        == f"{BASE}/studies/{study}/series/{series}/instances/{sop}/bulkdata/00081140.1.00420011"
    )
    bulk = await local.client.get(uri, headers={"Accept": "application/octet-stream"})
    assert bulk.status_code == 200
    assert bulk.content == payload


def stored_metadata_objects(root: Path) -> list[Path]:
    return sorted(root.rglob("*.json"))


async def test_small_binary_values_stay_inline(local: LocalArchive) -> None:
    ds = new_dataset(pixels=64)  # 64 bytes of pixel data: under the threshold
    data = part10(ds)
    await store(local, data)

    response = await local.retrieve(
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
    )

    (dataset,) = response.json()
    assert "InlineBinary" in dataset["7FE00010"]
    assert dataset == expected_json(data)
    assert stored_metadata_objects(local.data_dir / "metadata")
    assert (
        json.loads(stored_metadata_objects(local.data_dir / "metadata")[0].read_bytes())["bulk"]
        == {}
    )
