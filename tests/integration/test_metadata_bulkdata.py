"""Bulk data resources (PS3.18 10.4.1.1.5) named by the metadata's BulkDataURIs, with
HTTP byte ranges (RFC 9110 14)."""

from __future__ import annotations

import io

import httpx
import pytest
from pydicom import dcmread

from conftest import LocalArchive
from integration.support import pydicom_file, split_multipart


async def pixel_data_uri(local: LocalArchive, name: str) -> tuple[str, bytes]:
    data = pydicom_file(name).read_bytes()
    response = await local.stow([data])
    assert response.status_code == 200, response.text
    ds = dcmread(io.BytesIO(data))
    metadata = await local.retrieve(
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/metadata"
    )
    (dataset,) = metadata.json()
    return dataset["7FE00010"]["BulkDataURI"], ds.PixelData


async def get(local: LocalArchive, url: str, **headers: str) -> httpx.Response:
    return await local.client.get(url, headers=headers)


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # native
        "emri_small.dcm",  # multi-frame
        "SC_rgb_dcmtk_+eb+cy+n1.dcm",  # encapsulated JPEG: the fragments as stored
        "image_dfl.dcm",  # deflated: read by parsing the file
    ],
)
async def test_bulk_data_uri_serves_the_value_as_multipart(local: LocalArchive, name: str) -> None:
    uri, value = await pixel_data_uri(local, name)

    response = await get(local, uri)

    assert response.status_code == 200, response.text
    content_type = response.headers["content-type"]
    assert content_type.startswith('multipart/related; type="application/octet-stream"')
    (part,) = split_multipart(response.content, content_type)
    assert part.headers["content-type"] == "application/octet-stream"
    assert part.data == value


async def test_octet_stream_when_asked_first(local: LocalArchive) -> None:
    uri, value = await pixel_data_uri(local, "MR_small.dcm")

    response = await get(local, uri, Accept="application/octet-stream")

    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == value


async def test_byte_range_gives_206_with_the_slice(local: LocalArchive) -> None:
    uri, value = await pixel_data_uri(local, "CT_small.dcm")

    bare = await get(local, uri, Accept="application/octet-stream", Range="bytes=100-163")
    wrapped = await get(local, uri, Range="bytes=-10")
    open_ended = await get(local, uri, Accept="application/octet-stream", Range="bytes=32760-")

    assert bare.status_code == 206
    assert bare.content == value[100:164]
    assert bare.headers["content-range"] == f"bytes 100-163/{len(value)}"
    assert wrapped.status_code == 206
    (part,) = split_multipart(wrapped.content, wrapped.headers["content-type"])
    assert part.data == value[-10:]
    assert part.headers["content-range"] == f"bytes {len(value) - 10}-{len(value) - 1}/{len(value)}"
    assert open_ended.content == value[32760:]


async def test_unsatisfiable_range_is_416(local: LocalArchive) -> None:
    uri, value = await pixel_data_uri(local, "CT_small.dcm")

    response = await get(local, uri, Range=f"bytes={len(value)}-")

    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(value)}"


async def test_several_ranges_are_ignored_and_the_whole_value_sent(local: LocalArchive) -> None:
    uri, value = await pixel_data_uri(local, "CT_small.dcm")

    response = await get(local, uri, Accept="application/octet-stream", Range="bytes=0-1,4-5")

    assert response.status_code == 200
    assert response.content == value


async def test_bad_paths_and_types(local: LocalArchive) -> None:
    uri, _ = await pixel_data_uri(local, "CT_small.dcm")
    base = uri.rsplit("/", 1)[0]

    assert (await get(local, f"{base}/7fe00010x")).status_code == 400
    assert (await get(local, f"{base}/00100010")).status_code == 404  # not bulk data
    assert (await get(local, f"{base}/7FE00010", Accept="image/png")).status_code == 406
    missing = base.replace("/instances/", "/instances/9.9.9.9.").rsplit("/bulkdata", 1)[0]
    assert (await get(local, f"{missing}/bulkdata/7FE00010")).status_code == 404


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "emri_small.dcm", "SC_rgb_dcmtk_+eb+cy+n1.dcm", "image_dfl.dcm"],
)
async def test_large_objects_give_the_same_metadata_from_ranged_reads(
    local: LocalArchive, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ``LARGE_OBJECT_BYTES`` the metadata is built from ranged reads of the
    stored file (never whole in memory): the same BulkDataURI and the same value."""
    import dicomcloud.services.metadata as metadata_module

    monkeypatch.setattr(metadata_module, "LARGE_OBJECT_BYTES", 0)
    uri, value = await pixel_data_uri(local, name)

    response = await get(local, uri, accept="application/octet-stream")

    assert response.status_code == 200, response.text
    assert response.content == value
