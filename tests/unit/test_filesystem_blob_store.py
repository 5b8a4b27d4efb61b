"""The filesystem blob store: atomic, durable puts; reads; nothing outside its root."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomcloud.errors import ConfigurationError, NotFound, StorageUnavailable
from dicomcloud.storage import open_blob_store
from dicomcloud.storage.filesystem import FilesystemBlobStore

KEY = "default/1.2/1.2.3/1.2.3.4.dcm"


def files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs")


async def test_put_then_read_back(store: FilesystemBlobStore, tmp_path: Path) -> None:
    size = await store.put(KEY, [b"abc", memoryview(b"defg"), b""])

    assert size == 7
    assert await store.get(KEY) == b"abcdefg"
    assert b"".join([c async for c in store.stream(KEY, chunk_size=3)]) == b"abcdefg"
    assert await store.exists(KEY)
    assert files(tmp_path / "blobs") == [Path(KEY)]  # no temporary file left


async def test_put_replaces_unless_if_absent(store: FilesystemBlobStore) -> None:
    await store.put(KEY, [b"first"])

    assert await store.put(KEY, [b"second"], if_absent=True) is None
    assert await store.get(KEY) == b"first"
    assert await store.put(KEY, [b"third"]) == 5
    assert await store.get(KEY) == b"third"


async def test_a_failing_writer_leaves_nothing(store: FilesystemBlobStore, tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("the source went away")

    with pytest.raises((OSError, StorageUnavailable)):
        await store.put(KEY, chunks())

    assert not await store.exists(KEY)
    assert files(tmp_path / "blobs") == []


async def test_delete_and_missing_objects(store: FilesystemBlobStore) -> None:
    await store.put(KEY, [b"x"])

    await store.delete(KEY)
    await store.delete(KEY)  # absent: no error

    assert not await store.exists(KEY)
    with pytest.raises(NotFound):
        await store.get(KEY)
    with pytest.raises(NotFound):
        async for _ in store.stream(KEY):
            pass


@pytest.mark.parametrize("key", ["../outside.dcm", "a/../../b.dcm", "/etc/passwd", "a//b"])
async def test_keys_cannot_escape_the_root(
    store: FilesystemBlobStore, tmp_path: Path, key: str
) -> None:
    with pytest.raises(StorageUnavailable):
        await store.put(key, [b"x"])

    assert files(tmp_path) == []


async def test_ping(store: FilesystemBlobStore, tmp_path: Path) -> None:
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
    with pytest.raises(ConfigurationError, match="s3"):
        open_blob_store("s3://bucket/prefix")
