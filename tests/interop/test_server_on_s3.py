"""``dicomcloud serve`` storing on S3 (SeaweedFS) with a Redis cache, chosen as a user
would: DICOMCLOUD_STORAGE__URL=s3://..., credentials in AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, DICOMCLOUD_CACHE__URL=redis://...

storescu and STOW-RS in (one object large enough for a multipart upload), WADO-RS,
frames and metadata out, QIDO-RS seeing every acknowledged store; the objects are in
the bucket and nothing is on the local disk.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from pydicom import dcmread

from conftest import RealServer, require_tool, running_server
from contract.test_cache_contract import REDIS_URL, redis_reachable, require_redis
from dicomcloud.storage import S3Options, instance_key, open_blob_store
from integration.support import (
    AS_STORED,
    Instance,
    dataset_bytes,
    multipart_related,
    new_instance,
    pydicom_file,
    split_multipart,
)
from seaweedfs import SeaweedS3

pytestmark = [pytest.mark.interop, pytest.mark.backend, pytest.mark.timeout(300)]

OCTET = 'multipart/related; type="application/octet-stream"'
PART = 5 << 20


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"serve-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def s3_server(
    seaweed: SeaweedS3, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealServer]:
    require_redis()
    env = {
        **seaweed.env(f"{prefix}/blobs"),
        "DICOMCLOUD_METADATA__URL": seaweed.url(f"{prefix}/metadata"),
        "DICOMCLOUD_STORAGE__S3_MULTIPART_THRESHOLD": str(PART),
        "DICOMCLOUD_STORAGE__S3_PART_SIZE": str(PART),
        "DICOMCLOUD_CACHE__URL": REDIS_URL,
        "DICOMCLOUD_CACHE__KEY_PREFIX": f"dicomcloud-test:{prefix}:",
    }
    with running_server(tmp_path_factory.mktemp("s3-server") / "data", env) as running:
        yield running


def stow(http: httpx.Client, parts: list[bytes]) -> None:
    body, content_type = multipart_related(parts)
    response = http.post("/studies", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 200, response.text


def retrieved(http: httpx.Client, instance: Instance) -> bytes:
    response = http.get(instance.path, headers=AS_STORED)
    assert response.status_code == 200, response.text
    (part,) = split_multipart(response.content, response.headers["content-type"])
    return part.data


def study_instances(http: httpx.Client, study: str) -> list[str]:
    response = http.get(f"/studies/{study}/instances", headers={"Accept": "application/dicom+json"})
    assert response.status_code == 200, response.text
    return sorted(item["00080018"]["Value"][0] for item in response.json())


def cached_keys(prefix: str, pattern: str) -> list[bytes]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(match=f"dicomcloud-test:{prefix}:{pattern}"))
    finally:
        client.close()


def test_stow_storescu_wado_qido_on_s3(
    s3_server: RealServer, seaweed: SeaweedS3, prefix: str, tmp_path: Path
) -> None:
    storescu = require_tool("storescu")
    study = new_instance().study
    by_dimse = [new_instance(study=study) for _ in range(3)]
    by_stow = [new_instance(study=study) for _ in range(3)]
    large = new_instance(study=study, pixels=3 * PART)  # a multipart upload of 3+ parts
    for number, instance in enumerate(by_dimse):
        (tmp_path / f"{number}.dcm").write_bytes(instance.data)

    result = subprocess.run(
        [storescu, "-aec", s3_server.ae_title, "127.0.0.1", str(s3_server.dicom_port)]
        + [str(tmp_path / f"{n}.dcm") for n in range(len(by_dimse))],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TCP_NODELAY": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with httpx.Client(base_url=s3_server.dicomweb_url, timeout=120) as http:
        stow(http, [i.data for i in by_stow])
        # QIDO-RS twice (the second may come from the cache), then a store: seen at once.
        expected = sorted(i.sop for i in by_dimse + by_stow)
        assert study_instances(http, study) == expected
        assert study_instances(http, study) == expected
        assert cached_keys(prefix, "qido:default:*")  # the server did use Redis
        stow(http, [large.data])
        assert study_instances(http, study) == sorted([*expected, large.sop])

        for instance in [*by_stow, large]:
            assert retrieved(http, instance) == instance.data  # bytes back equal bytes in
        for instance in by_dimse:
            assert dataset_bytes(retrieved(http, instance)) == dataset_bytes(instance.data)

        series = http.get(
            f"/studies/{study}/series/{large.series}/metadata",
            headers={"Accept": "application/dicom+json"},
        )
        assert series.status_code == 200, series.text
        assert series.json()[0]["00080018"]["Value"] == [large.sop]
        assert cached_keys(prefix, "series-metadata:*")

    # The objects are in the bucket, under the configured prefix, and not on disk.
    blobs = open_blob_store(
        seaweed.url(f"{prefix}/blobs"),
        s3=S3Options(
            access_key_id=seaweed.access_key_id, secret_access_key=seaweed.secret_access_key
        ),
    )
    key = instance_key("default", large.study, large.series, large.sop)
    assert asyncio.run(blobs.get(key)) == large.data
    assert not any(p.is_file() for p in (s3_server.data_dir / "blobs").rglob("*"))


def test_frames_are_range_reads_on_s3(s3_server: RealServer, prefix: str) -> None:
    data = pydicom_file("emri_small.dcm").read_bytes()  # 10 native frames
    ds = dcmread(io.BytesIO(data))
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames"
    )
    with httpx.Client(base_url=s3_server.dicomweb_url, timeout=60) as http:
        body, content_type = multipart_related([data])
        response = http.post("/studies", content=body, headers={"Content-Type": content_type})
        assert response.status_code in (200, 202), response.text

        frames = http.get(f"{path}/3,10", headers={"Accept": OCTET})

    assert frames.status_code == 200, frames.text
    parts = split_multipart(frames.content, frames.headers["content-type"])
    arr = ds.pixel_array
    expected = [arr[i].astype(arr.dtype.newbyteorder("<")).tobytes() for i in (2, 9)]
    assert [p.data for p in parts] == expected


@pytest.fixture(scope="module", autouse=True)
def _drop_redis_keys(prefix: str) -> Iterator[None]:
    yield
    if not redis_reachable():
        return
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"dicomcloud-test:{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
