"""Key rotation: re-encrypt every stored object not sealed with the active key.

For each object whose header names another key (or that has no header: written before
encryption was enabled), the object is opened segment by segment and sealed again with
the active key into the store's atomic ``put``: the new object replaces the old one
only once every old segment has passed its GCM check, so a damaged object or a
missing key leaves the old object untouched and is reported.  The new object is then
read back and its plaintext digest compared with the old one.

Objects already under the active key are skipped, so a rotation that was interrupted
(or one run twice) just continues: it is idempotent and resumable.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from dicomcloud.errors import DicomCloudError
from dicomcloud.storage.encrypted import (
    TAG_BYTES,
    EncryptedBlobStore,
    Header,
    Opener,
)

#: Plaintext objects (no header) are read in chunks of this size.
_PLAIN_CHUNK = 1 << 20


@dataclass
class RotationSummary:
    """What one rotation did."""

    rotated: int = 0
    current: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


async def rotate_keys(
    store: EncryptedBlobStore,
    keys: Iterable[str],
    *,
    progress: Callable[[int], None] | None = None,
) -> RotationSummary:
    """Re-encrypt each object of ``keys`` not under ``store``'s active key."""
    summary = RotationSummary()
    loop = asyncio.get_running_loop()
    for key in keys:
        try:
            header = await store.header(key)
            if header is not None and header.key_id == store.ring.active_key_id:
                summary.current += 1
            else:
                await _rotate_one(store, key, header, loop)
                summary.rotated += 1
        except DicomCloudError as exc:
            summary.failures.append((key, exc.reason))
        if progress is not None:
            progress(1)
    return summary


async def _rotate_one(
    store: EncryptedBlobStore, key: str, header: Header | None, loop: asyncio.AbstractEventLoop
) -> None:
    inner = store.inner
    sealed_size = await inner.size(key)
    digest = hashlib.sha256()

    def read(offset: int, length: int) -> bytes:
        future = asyncio.run_coroutine_threadsafe(inner.read_range(key, offset, length), loop)
        return future.result()

    def plaintext() -> Iterator[bytes]:
        if header is None:
            for offset in range(0, sealed_size, _PLAIN_CHUNK):
                chunk = read(offset, _PLAIN_CHUNK)
                digest.update(chunk)
                yield chunk
            return
        opener = Opener(store.ring, header, key)
        size = header.plain_size(sealed_size, key)
        step = header.segment_size + TAG_BYTES
        count = max(1, -(-size // header.segment_size))
        for index in range(count):
            sealed = read(header.length + index * step, step)
            chunk = opener.open(index, sealed, index == count - 1)
            digest.update(chunk)
            yield chunk

    # The inner put consumes the generator in its I/O thread and renames the new object
    # into place only after the last segment was opened (authenticated).
    await store.put(key, plaintext())
    check = hashlib.sha256()
    async for chunk in store.stream(key):
        check.update(chunk)
    if check.digest() != digest.digest():  # pragma: no cover - a disk fault
        raise DicomCloudError(f"stored object {key} reads back differently after rotation")
