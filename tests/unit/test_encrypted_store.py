"""EncryptedBlobStore: AES-256-GCM segments over the filesystem store, round trips,
ranges, and every way a stored object can be damaged or misread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomcloud.errors import ConfigurationError, StoredObjectUnreadable
from dicomcloud.storage import EncryptedBlobStore, FilesystemBlobStore
from dicomcloud.storage.encrypted import TAG_BYTES, Header, KeyRing

SEGMENT = 4096
KEY_A = os.urandom(32)
KEY_B = os.urandom(32)
KEY = "t/1.2/1.2.3/1.2.3.4.dcm"


def store(
    root: Path, keys: dict[str, bytes] | None = None, active: str = "a", **kw: bool
) -> EncryptedBlobStore:
    ring = KeyRing(keys if keys is not None else {"a": KEY_A}, active)
    return EncryptedBlobStore(
        FilesystemBlobStore(root, fsync=False), ring, segment_size=SEGMENT, **kw
    )


def raw_path(root: Path) -> Path:
    return root / KEY


@pytest.mark.parametrize(
    "size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 5 * SEGMENT + 17]
)
async def test_round_trip_of_every_read(tmp_path: Path, size: int) -> None:
    blobs = store(tmp_path)
    data = os.urandom(size)
    chunks = [data[i : i + 1000] for i in range(0, size, 1000)]

    assert await blobs.put(KEY, chunks) == size

    assert await blobs.get(KEY) == data
    assert b"".join([c async for c in blobs.stream(KEY, chunk_size=3000)]) == data
    assert await blobs.size(KEY) == size
    assert await blobs.read_range(KEY, 0, size + 10) == data
    raw = raw_path(tmp_path).read_bytes()
    header = Header.parse(raw, KEY)
    assert header is not None and header.key_id == "a"
    assert len(raw) == header.sealed_size(size)
    if size >= 64:
        assert data[:64] not in raw


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(offset=st.integers(0, 4 * SEGMENT + 100), length=st.integers(0, 3 * SEGMENT))
async def test_read_range_equals_the_slice(tmp_path: Path, offset: int, length: int) -> None:
    blobs = store(tmp_path)
    data = bytes(range(256)) * (4 * SEGMENT // 256) + b"tail" * 20
    if not await blobs.exists(KEY):
        await blobs.put(KEY, [data])
    assert await blobs.read_range(KEY, offset, length) == data[offset : offset + length]


async def test_each_object_has_its_own_nonce(tmp_path: Path) -> None:
    blobs = store(tmp_path)
    await blobs.put(KEY, [b"same bytes" * 100])
    first = raw_path(tmp_path).read_bytes()
    await blobs.put(KEY, [b"same bytes" * 100])
    second = raw_path(tmp_path).read_bytes()
    assert first != second
    assert Header.parse(first, KEY).nonce != Header.parse(second, KEY).nonce  # type: ignore[union-attr]


def _damage(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "where",
    ["header key id", "header nonce", "first segment", "last segment", "last tag"],
)
async def test_a_modified_byte_anywhere_is_detected(tmp_path: Path, where: str) -> None:
    blobs = store(tmp_path)
    data = os.urandom(2 * SEGMENT + 100)
    await blobs.put(KEY, [data])
    path = raw_path(tmp_path)
    header = Header.parse(path.read_bytes(), KEY)
    assert header is not None
    offsets = {
        "header key id": 6,
        "header nonce": header.length - 1,
        "first segment": header.length + 10,
        "last segment": header.length + 2 * (SEGMENT + TAG_BYTES) + 5,
        "last tag": path.stat().st_size - 1,
    }
    _damage(path, offsets[where])

    with pytest.raises(StoredObjectUnreadable) as get_error:
        await blobs.get(KEY)
    with pytest.raises(StoredObjectUnreadable):
        _ = [c async for c in blobs.stream(KEY)]
    if where == "header key id":  # the object now names a key that is not configured
        assert "not configured" in get_error.value.reason
    else:
        assert "integrity check" in get_error.value.reason
    assert KEY_A.hex() not in get_error.value.reason


async def test_truncation_at_a_segment_boundary_is_detected(tmp_path: Path) -> None:
    blobs = store(tmp_path)
    await blobs.put(KEY, [os.urandom(3 * SEGMENT)])
    path = raw_path(tmp_path)
    header = Header.parse(path.read_bytes(), KEY)
    assert header is not None
    # Drop the last whole segment: the one left last was sealed as "not last".
    path.write_bytes(path.read_bytes()[: header.length + 2 * (SEGMENT + TAG_BYTES)])

    with pytest.raises(StoredObjectUnreadable):
        await blobs.get(KEY)
    with pytest.raises(StoredObjectUnreadable):
        await blobs.read_range(KEY, 2 * SEGMENT - 10, 10)


async def test_swapped_segments_are_detected(tmp_path: Path) -> None:
    blobs = store(tmp_path)
    await blobs.put(KEY, [os.urandom(3 * SEGMENT)])
    path = raw_path(tmp_path)
    raw = path.read_bytes()
    header = Header.parse(raw, KEY)
    assert header is not None
    step = SEGMENT + TAG_BYTES
    body = raw[header.length :]
    path.write_bytes(raw[: header.length] + body[step : 2 * step] + body[:step] + body[2 * step :])

    with pytest.raises(StoredObjectUnreadable):
        await blobs.read_range(KEY, 0, 10)


async def test_missing_and_wrong_keys_are_clear_errors(tmp_path: Path) -> None:
    await store(tmp_path).put(KEY, [b"secret pixels" * 1000])

    with pytest.raises(StoredObjectUnreadable, match="key 'a', which is not configured"):
        await store(tmp_path, {"b": KEY_B}, "b").get(KEY)
    with pytest.raises(StoredObjectUnreadable, match="integrity check"):
        await store(tmp_path, {"a": KEY_B}, "a").get(KEY)  # another key under the same id
    # Both keys configured, the new one active: old objects still read.
    assert await store(tmp_path, {"a": KEY_A, "b": KEY_B}, "b").get(KEY) == b"secret pixels" * 1000


async def test_plaintext_objects_only_with_allow_plaintext(tmp_path: Path) -> None:
    plain = FilesystemBlobStore(tmp_path, fsync=False)
    await plain.put(KEY, [b"\0" * 128 + b"DICM" + b"x" * 100])

    with pytest.raises(StoredObjectUnreadable, match="not encrypted"):
        await store(tmp_path).get(KEY)
    with pytest.raises(StoredObjectUnreadable, match="not encrypted"):
        await store(tmp_path).read_range(KEY, 128, 4)
    lenient = store(tmp_path, allow_plaintext=True)
    assert await lenient.read_range(KEY, 128, 4) == b"DICM"
    assert await lenient.size(KEY) == 232


async def test_put_blocking_and_if_absent(tmp_path: Path) -> None:
    blobs = store(tmp_path)
    assert blobs.put_blocking(KEY, [b"first"], if_absent=True) == 5
    assert blobs.put_blocking(KEY, [b"second"], if_absent=True) is None
    assert await blobs.get(KEY) == b"first"


def test_key_material_never_shown() -> None:
    ring = KeyRing({"a": KEY_A}, "a")
    text = repr(ring) + repr(EncryptedBlobStore(FilesystemBlobStore("/tmp/x"), ring))
    assert KEY_A.hex() not in text and repr(KEY_A) not in text
    with pytest.raises(ConfigurationError, match="32 bytes"):
        KeyRing({"a": b"short"}, "a")
    with pytest.raises(ConfigurationError, match="not among the configured keys"):
        KeyRing({"a": KEY_A}, "b")
