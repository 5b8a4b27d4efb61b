"""The BlobStore contract (ports.py), on the filesystem and on a real S3 server
(SeaweedFS): the same operations, the same answers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dicomcloud.errors import NotFound, StorageUnavailable
from dicomcloud.ports import BlobStore
from dicomcloud.storage import FilesystemBlobStore, S3BlobStore, S3Options, open_blob_store
from seaweedfs import SeaweedS3

KEY = "default/1.2/1.2.3/1.2.3.4.dcm"
MISSING = "default/1.2/1.2.3/9.9.dcm"
MIB = 1 << 20
#: Small multipart settings so that a 20 MiB object takes four parts.
SMALL_PARTS = {"multipart_threshold": 5 * MIB, "part_size": 5 * MIB}


def s3_store(seaweed: SeaweedS3, **options: object) -> S3BlobStore:
    """A store under a prefix of its own in the test bucket, credentials from config."""
    store = open_blob_store(
        seaweed.url(f"contract-{uuid.uuid4().hex}"),
        s3=S3Options(
            access_key_id=seaweed.access_key_id,
            secret_access_key=seaweed.secret_access_key,
            **options,  # type: ignore[arg-type]
        ),
    )
    assert isinstance(store, S3BlobStore)
    return store


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "file":
        return FilesystemBlobStore(tmp_path / "blobs")
    return s3_store(request.getfixturevalue("seaweed"), **SMALL_PARTS)


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_put_then_read_back(store: BlobStore) -> None:
    size = await store.put(KEY, [b"abc", memoryview(b"defg"), b""])

    assert size == 7
    assert await store.get(KEY) == b"abcdefg"
    assert await collect(store.stream(KEY, chunk_size=3)) == b"abcdefg"
    assert await store.exists(KEY)
    assert await store.size(KEY) == 7


async def test_put_replaces_unless_if_absent(store: BlobStore) -> None:
    assert await store.put(KEY, [b"first"], if_absent=True) == 5

    assert await store.put(KEY, [b"second"], if_absent=True) is None
    assert await store.get(KEY) == b"first"
    assert await store.put(KEY, [b"third"]) == 5
    assert await store.get(KEY) == b"third"


async def test_a_failing_writer_leaves_nothing(store: BlobStore) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("the source went away")

    with pytest.raises((OSError, StorageUnavailable)):
        await store.put(KEY, chunks())

    assert not await store.exists(KEY)


async def test_delete_and_missing_objects(store: BlobStore) -> None:
    await store.put(KEY, [b"x"])

    await store.delete(KEY)
    await store.delete(KEY)  # absent: no error

    assert not await store.exists(KEY)
    with pytest.raises(NotFound):
        await store.get(KEY)
    with pytest.raises(NotFound):
        await collect(store.stream(KEY))
    with pytest.raises(NotFound):
        await store.read_range(KEY, 0, 1)
    with pytest.raises(NotFound):
        await store.size(KEY)


async def test_read_range(store: BlobStore) -> None:
    await store.put(KEY, [b"0123456789"])

    assert await store.read_range(KEY, 2, 3) == b"234"
    assert await store.read_range(KEY, 0, 10) == b"0123456789"
    assert await store.read_range(KEY, 8, 5) == b"89"  # short at the end
    assert await store.read_range(KEY, 10, 5) == b""
    assert await store.read_range(KEY, 3, 0) == b""
    with pytest.raises(NotFound):
        await store.read_range(MISSING, 0, 1)
    with pytest.raises(ValueError, match="negative"):
        await store.read_range(KEY, -1, 1)


async def test_large_object_round_trip(store: BlobStore) -> None:
    """20 MiB from 1 MiB chunks: four 5 MiB parts on S3; every byte comes back."""
    data = os.urandom(20 * MIB + 12345)
    chunks = (data[i : i + MIB] for i in range(0, len(data), MIB))

    assert await store.put(KEY, chunks) == len(data)

    assert await store.size(KEY) == len(data)
    assert hashlib.sha256(await store.get(KEY)).digest() == hashlib.sha256(data).digest()
    assert await collect(store.stream(KEY, chunk_size=MIB)) == data
    boundary = 5 * MIB  # a read across the first part boundary
    assert await store.read_range(KEY, boundary - 10, 20) == data[boundary - 10 : boundary + 10]
    assert await store.read_range(KEY, len(data) - 5, 100) == data[-5:]


async def test_large_object_if_absent(store: BlobStore) -> None:
    data = os.urandom(11 * MIB)
    await store.put(KEY, [b"small"])

    assert await store.put(KEY, [data], if_absent=True) is None
    assert await store.get(KEY) == b"small"
    assert await store.put(KEY, [data]) == len(data)
    assert await store.get(KEY) == data


async def test_a_large_writer_failing_midway_leaves_nothing(store: BlobStore) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(12):  # past the multipart threshold: parts already uploaded
            yield os.urandom(MIB)
        raise OSError("the source went away")

    with pytest.raises((OSError, StorageUnavailable)):
        await store.put(KEY, chunks())

    assert not await store.exists(KEY)


@pytest.mark.parametrize("key", ["../outside.dcm", "a/../../b.dcm", "/etc/passwd", "a//b"])
async def test_keys_cannot_escape(store: BlobStore, key: str) -> None:
    with pytest.raises(StorageUnavailable):
        await store.put(key, [b"x"])


async def test_ping(store: BlobStore) -> None:
    await store.ping()


# --- S3 only ----------------------------------------------------------------------------------


async def test_s3_conditional_put_lets_exactly_one_writer_win(seaweed: SeaweedS3) -> None:
    store = s3_store(seaweed)

    results = await asyncio.gather(
        *(store.put(KEY, [f"writer {n}".encode()], if_absent=True) for n in range(8))
    )

    winners = [n for n, size in enumerate(results) if size is not None]
    assert len(winners) == 1
    assert await store.get(KEY) == f"writer {winners[0]}".encode()


async def test_s3_credentials_from_the_aws_variables(
    seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_access_key)
    store = open_blob_store(seaweed.url(f"env-{uuid.uuid4().hex}"))

    assert await store.put(KEY, [b"from env"]) == 8
    assert await store.get(KEY) == b"from env"


async def test_s3_wrong_credentials_are_storage_unavailable(
    seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    store = open_blob_store(
        seaweed.url("wrong"),
        s3=S3Options(access_key_id="nobody", secret_access_key="wrong", max_retries=0),
    )

    with pytest.raises(StorageUnavailable):
        await store.put(KEY, [b"x"])
    with pytest.raises(StorageUnavailable):
        await store.ping()


async def test_s3_unreachable_server_is_storage_unavailable_after_retries() -> None:
    store = open_blob_store(
        "s3://bucket/p?endpoint_url=http://127.0.0.1:9&region=us-east-1",
        s3=S3Options(access_key_id="a", secret_access_key="b", max_retries=2, retry_timeout=5),
    )

    with pytest.raises(StorageUnavailable, match="S3 request"):
        await store.get(KEY)
    with pytest.raises(StorageUnavailable):
        await store.ping()


async def test_list_objects(store: BlobStore) -> None:
    """Every object under a key prefix with its size and write time; nothing of a
    write in progress nor of ``ping``."""
    started = time.time()
    keys = {
        "t1/1.2/1.2.3/1.2.3.4.dcm": b"abc",
        "t1/1.2/1.2.3/1.2.3.5.0123abcd.dcm": b"de",
        "t1/1.2/1.2.3/1.2.3.4.derived/1.2.840.10008.1.2.4.201.0123abcd.dcm": b"f",
        "t10/1.2/1.2.3/1.2.3.4.dcm": b"ghij",
        "t2/1.2/1.2.3/1.2.3.4.dcm": b"k",
    }
    for key, data in keys.items():
        await store.put(key, [data])
    await store.ping()

    everything = {o.key: o for o in [found async for found in store.list_objects()]}
    assert {k: o.size for k, o in everything.items()} == {k: len(d) for k, d in keys.items()}
    assert all(started - 60 < o.modified < time.time() + 60 for o in everything.values())
    tenant = {found.key async for found in store.list_objects("t1/")}
    assert tenant == {k for k in keys if k.startswith("t1/")}
    assert {found.key async for found in store.list_objects("nobody/")} == set()
