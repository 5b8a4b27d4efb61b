"""The filesystem blob store beyond the shared contract
(tests/contract/test_blob_store_contract.py): no temporary file survives, nothing lands
outside its root, and stores open by URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomcloud.errors import ConfigurationError, StorageUnavailable
from dicomcloud.storage import S3BlobStore, open_blob_store
from dicomcloud.storage.filesystem import FilesystemBlobStore

KEY = "default/1.2/1.2.3/1.2.3.4.dcm"


def files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs")


async def test_put_leaves_no_temporary_file(store: FilesystemBlobStore, tmp_path: Path) -> None:
    await store.put(KEY, [b"abc", memoryview(b"defg"), b""])

    assert files(tmp_path / "blobs") == [Path(KEY)]


async def test_a_failing_writer_leaves_no_file(store: FilesystemBlobStore, tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("the source went away")

    with pytest.raises((OSError, StorageUnavailable)):
        await store.put(KEY, chunks())

    assert files(tmp_path / "blobs") == []


@pytest.mark.parametrize("key", ["../outside.dcm", "a/../../b.dcm", "/etc/passwd", "a//b"])
async def test_keys_cannot_escape_the_root(
    store: FilesystemBlobStore, tmp_path: Path, key: str
) -> None:
    with pytest.raises(StorageUnavailable):
        await store.put(key, [b"x"])

    assert files(tmp_path) == []


async def test_ping_leaves_no_probe(store: FilesystemBlobStore, tmp_path: Path) -> None:
    await store.ping()

    assert [p for p in files(tmp_path) if "ping" in p.name] == []


async def test_ping_fails_when_the_root_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    store = FilesystemBlobStore(blocker / "blobs")

    with pytest.raises(StorageUnavailable):
        await store.ping()


def test_open_blob_store_by_url(tmp_path: Path) -> None:
    store = open_blob_store(f"file://{tmp_path}/b")

    assert isinstance(store, FilesystemBlobStore)
    assert store.root == (tmp_path / "b").resolve()
    with pytest.raises(ConfigurationError, match="not supported"):
        open_blob_store("gs://bucket/prefix")


def test_open_s3_store_by_url() -> None:
    store = open_blob_store("s3://archive/site-a/blobs?endpoint_url=http://127.0.0.1:1&region=eu-1")

    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("archive", "site-a/blobs")
    assert store.options.endpoint_url == "http://127.0.0.1:1"
    assert store.options.region == "eu-1"
    with pytest.raises(ConfigurationError, match="no bucket"):
        open_blob_store("s3:///prefix")
    with pytest.raises(ConfigurationError, match="'acl' is unknown"):
        open_blob_store("s3://archive/p?acl=private")
