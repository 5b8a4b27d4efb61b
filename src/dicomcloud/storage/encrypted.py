"""Encryption at rest: a BlobStore wrapper sealing every object with AES-256-GCM.

Object format (version 1), all integers big-endian::

    MAGIC (4) | version (1) | key id length (1) | key id | segment size (4) | nonce (12)
    segment 0 ciphertext + tag (16) | segment 1 ... | last segment ciphertext + tag

* ``nonce`` is 96 random bits drawn for each object.  The object key is
  HKDF-SHA256(master key of ``key id``, salt=nonce, info=key id), so no two objects
  share a key and the per-key limit on random GCM nonces (NIST SP 800-38D 8.3) never
  applies.
* The plaintext is cut into segments of ``segment size`` bytes, each sealed on its own
  (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár, 2015): segment
  ``i`` uses the nonce ``i`` (11 bytes) followed by 1 for the last segment, 0 for the
  others, and the header as associated data.  Reordered, dropped, truncated or appended
  segments and an altered header all fail authentication.
* Memory stays bounded (one segment) whatever the object size, and ``read_range``
  decrypts only the segments holding the requested bytes (frames, bulk data).

A missing key, a wrong key or a modified object raises :class:`StoredObjectUnreadable`:
bytes are returned only after their GCM tag is verified.  Key material never appears in
an error message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dicomcloud.errors import ConfigurationError, StoredObjectUnreadable
from dicomcloud.ports import BlobStore, StoredObject

MAGIC: Final = b"\x89DCE"
VERSION: Final = 1
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
KEY_BYTES: Final = 32  # AES-256
DEFAULT_SEGMENT_BYTES: Final = 64 * 1024
#: Longest possible header: fixed fields and a 255-byte key id.
MAX_HEADER_BYTES: Final = 4 + 1 + 1 + 255 + 4 + NONCE_BYTES
#: Decrypting more than this runs in a worker thread, off the event loop.
_OFF_LOOP_BYTES: Final = 256 * 1024

KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Header:
    """The clear header of one encrypted object."""

    key_id: str
    segment_size: int
    nonce: bytes
    raw: bytes

    @property
    def length(self) -> int:
        return len(self.raw)

    @classmethod
    def new(cls, key_id: str, segment_size: int) -> Header:
        nonce = os.urandom(NONCE_BYTES)
        encoded = key_id.encode("ascii")
        raw = (
            MAGIC
            + bytes([VERSION, len(encoded)])
            + encoded
            + struct.pack(">I", segment_size)
            + nonce
        )
        return cls(key_id, segment_size, nonce, raw)

    @classmethod
    def parse(cls, data: bytes, key: str) -> Header | None:
        """The header at the start of ``data``; None if ``data`` has no MAGIC (an
        object written before encryption was enabled)."""
        if not data.startswith(MAGIC):
            return None
        if len(data) < 6 or data[4] != VERSION:
            raise StoredObjectUnreadable(
                f"stored object {key} has an unknown encryption format version"
            )
        id_length = data[5]
        end = 6 + id_length + 4 + NONCE_BYTES
        if len(data) < end:
            raise StoredObjectUnreadable(f"stored object {key} has a truncated header")
        key_id = data[6 : 6 + id_length].decode("ascii", "replace")
        (segment_size,) = struct.unpack_from(">I", data, 6 + id_length)
        if segment_size < 1:
            raise StoredObjectUnreadable(f"stored object {key} has an invalid header")
        nonce = data[end - NONCE_BYTES : end]
        return cls(key_id, segment_size, nonce, data[:end])

    def sealed_size(self, plain_size: int) -> int:
        """The stored size of an object of ``plain_size`` bytes."""
        segments = max(1, -(-plain_size // self.segment_size))
        return self.length + plain_size + segments * TAG_BYTES

    def plain_size(self, sealed_size: int, key: str) -> int:
        """The plaintext size of a stored object of ``sealed_size`` bytes."""
        body = sealed_size - self.length
        step = self.segment_size + TAG_BYTES
        segments = -(-body // step)
        if body < TAG_BYTES or body - (segments - 1) * step < TAG_BYTES:
            raise StoredObjectUnreadable(f"stored object {key} is truncated")
        return body - segments * TAG_BYTES


def _segment_nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(NONCE_BYTES - 1, "big") + (b"\x01" if last else b"\x00")


class KeyRing:
    """Master keys by id and the active one new objects are sealed with."""

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        for key_id, key in keys.items():
            if not KEY_ID.match(key_id):
                raise ConfigurationError(f"encryption key id {key_id!r} is not [A-Za-z0-9._-]")
            if len(key) != KEY_BYTES:
                raise ConfigurationError(
                    f"encryption key {key_id!r} must be {KEY_BYTES} bytes (AES-256), not {len(key)}"
                )
        if active_key_id not in keys:
            raise ConfigurationError(
                f"storage.encryption.active_key_id {active_key_id!r} is not among the "
                f"configured keys ({', '.join(sorted(keys)) or 'none'})"
            )
        self._keys = dict(keys)
        self.active_key_id = active_key_id

    def __repr__(self) -> str:  # never the key bytes
        return f"KeyRing(ids={sorted(self._keys)}, active={self.active_key_id!r})"

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def object_cipher(self, header: Header, key: str) -> AESGCM:
        master = self._keys.get(header.key_id)
        if master is None:
            raise StoredObjectUnreadable(
                f"stored object {key} is encrypted with key {header.key_id!r}, which is "
                "not configured (storage.encryption.keys)"
            )
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=KEY_BYTES,
            salt=header.nonce,
            info=b"dicomcloud blob v1 " + header.key_id.encode("ascii"),
        ).derive(master)
        return AESGCM(derived)


class Opener:
    """Decrypts the segments of one object."""

    def __init__(self, ring: KeyRing, header: Header, key: str) -> None:
        self._cipher = ring.object_cipher(header, key)
        self._header = header
        self._key = key

    def open(self, index: int, sealed: bytes, last: bool) -> bytes:
        try:
            return self._cipher.decrypt(_segment_nonce(index, last), sealed, self._header.raw)
        except InvalidTag as exc:
            raise StoredObjectUnreadable(
                f"stored object {self._key} failed its integrity check (AES-GCM): it was "
                f"modified or truncated, or key {self._header.key_id!r} is not the key it "
                "was encrypted with"
            ) from exc


def seal(chunks: Iterable[bytes | memoryview], ring: KeyRing, segment_size: int) -> Iterator[bytes]:
    """The sealed object of the concatenated ``chunks``: header, then segments."""
    header = Header.new(ring.active_key_id, segment_size)
    cipher = ring.object_cipher(header, "(new)")
    yield header.raw
    buffer = bytearray()
    index = 0
    for chunk in chunks:
        buffer += chunk
        # Strictly more than a segment: the one sealed now is certainly not the last.
        while len(buffer) > segment_size:
            piece = bytes(buffer[:segment_size])
            del buffer[:segment_size]
            yield cipher.encrypt(_segment_nonce(index, False), piece, header.raw)
            index += 1
    yield cipher.encrypt(_segment_nonce(index, True), bytes(buffer), header.raw)


class EncryptedBlobStore:
    """A BlobStore sealing what it writes and opening what it reads (module docstring).

    ``allow_plaintext``: objects without the encryption header (written before
    encryption was enabled) are read as they are; otherwise reading one is an error.
    """

    def __init__(
        self,
        inner: BlobStore,
        ring: KeyRing,
        *,
        segment_size: int = DEFAULT_SEGMENT_BYTES,
        allow_plaintext: bool = False,
    ) -> None:
        self.inner = inner
        self.ring = ring
        self._segment_size = segment_size
        self._allow_plaintext = allow_plaintext

    def __repr__(self) -> str:
        return f"EncryptedBlobStore({self.inner!r}, {self.ring!r})"

    # -- writing ------------------------------------------------------------------------

    async def put(
        self, key: str, chunks: Iterable[bytes | memoryview], *, if_absent: bool = False
    ) -> int | None:
        counter = _Counter(chunks)
        written = await self.inner.put(
            key, seal(counter, self.ring, self._segment_size), if_absent=if_absent
        )
        return None if written is None else counter.size

    def put_blocking(
        self, key: str, chunks: Iterable[bytes | memoryview], *, if_absent: bool = False
    ) -> int | None:
        """``put`` in the calling thread, where the inner store can (DIMSE threads)."""
        put_blocking = getattr(self.inner, "put_blocking", None)
        if put_blocking is None:  # pragma: no cover - the filesystem store has it
            raise TypeError("the inner blob store cannot write without an event loop")
        counter = _Counter(chunks)
        sealed = seal(counter, self.ring, self._segment_size)
        written = put_blocking(key, sealed, if_absent=if_absent)
        return None if written is None else counter.size

    async def put_sealed(self, key: str, chunks: Iterable[bytes]) -> None:
        """Store already sealed bytes (key rotation)."""
        await self.inner.put(key, chunks)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    # -- reading ------------------------------------------------------------------------

    async def header(self, key: str) -> Header | None:
        """The object's encryption header; None for a plaintext object (whatever
        ``allow_plaintext`` says)."""
        return Header.parse(await self.inner.read_range(key, 0, MAX_HEADER_BYTES), key)

    async def _header_or_plain(self, key: str) -> Header | None:
        header = await self.header(key)
        if header is None and not self._allow_plaintext:
            raise StoredObjectUnreadable(
                f"stored object {key} is not encrypted and storage.encryption."
                "allow_plaintext is off (run `dicomcloud storage rotate-keys`)"
            )
        return header

    async def get(self, key: str) -> bytes:
        data = await self.inner.get(key)
        header = Header.parse(data[:MAX_HEADER_BYTES], key)
        if header is None:
            await self._header_or_plain(key)
            return data
        if len(data) > _OFF_LOOP_BYTES:
            return await asyncio.to_thread(self._open_all, header, data, key)
        return self._open_all(header, data, key)

    def _open_all(self, header: Header, data: bytes, key: str) -> bytes:
        opener = Opener(self.ring, header, key)
        size = header.plain_size(len(data), key)
        step = header.segment_size + TAG_BYTES
        count = max(1, -(-size // header.segment_size))
        out = bytearray()
        for index in range(count):
            start = header.length + index * step
            out += opener.open(index, data[start : start + step], index == count - 1)
        return bytes(out)

    async def stream(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        header = await self._header_or_plain(key)
        if header is None:
            async for chunk in self.inner.stream(key, chunk_size):
                yield chunk
            return
        opener = Opener(self.ring, header, key)
        step = header.segment_size + TAG_BYTES
        buffer = bytearray()
        skip = header.length
        index = 0
        pending = bytearray()
        async for chunk in self.inner.stream(key, max(chunk_size, step)):
            buffer += chunk
            if skip:
                taken = min(skip, len(buffer))
                del buffer[:taken]
                skip -= taken
            # Strictly more than a segment: the one opened now is not the last.
            while len(buffer) > step:
                pending += opener.open(index, bytes(buffer[:step]), False)
                del buffer[:step]
                index += 1
            if len(pending) >= chunk_size:
                yield bytes(pending)
                pending.clear()
        if skip or len(buffer) < TAG_BYTES:
            raise StoredObjectUnreadable(f"stored object {key} is truncated")
        pending += opener.open(index, bytes(buffer), True)
        if pending:
            yield bytes(pending)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        header = await self._header_or_plain(key)
        if header is None:
            return await self.inner.read_range(key, offset, length)
        size = header.plain_size(await self.inner.size(key), key)
        end = min(offset + length, size)
        if offset >= end:
            return b""
        segment = header.segment_size
        step = segment + TAG_BYTES
        count = max(1, -(-size // segment))
        first, last = offset // segment, (end - 1) // segment
        sealed = await self.inner.read_range(
            key, header.length + first * step, (last - first + 1) * step
        )

        def open_range() -> bytes:
            opener = Opener(self.ring, header, key)
            out = bytearray()
            for index in range(first, last + 1):
                start = (index - first) * step
                out += opener.open(index, sealed[start : start + step], index == count - 1)
            begin = offset - first * segment
            return bytes(out[begin : begin + end - offset])

        if len(sealed) > _OFF_LOOP_BYTES:
            return await asyncio.to_thread(open_range)
        return open_range()

    async def size(self, key: str) -> int:
        header = await self._header_or_plain(key)
        sealed = await self.inner.size(key)
        return sealed if header is None else header.plain_size(sealed, key)

    async def list_objects(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        """The inner store's objects (sizes as stored: sealed)."""
        async for found in self.inner.list_objects(prefix):
            yield found

    async def exists(self, key: str) -> bool:
        return await self.inner.exists(key)

    async def ping(self) -> None:
        await self.inner.ping()


class _Counter:
    """Passes chunks through, counting their bytes (the plaintext size)."""

    def __init__(self, chunks: Iterable[bytes | memoryview]) -> None:
        self._chunks = chunks
        self.size = 0

    def __iter__(self) -> Iterator[bytes | memoryview]:
        for chunk in self._chunks:
            self.size += len(chunk)
            yield chunk
