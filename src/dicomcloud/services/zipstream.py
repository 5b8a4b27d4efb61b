"""A ZIP archive of stored instances, streamed (PS3.18 8.7.3.3.1 application/zip;
APPNOTE.TXT 4.3.9 data descriptors).

Python's ``zipfile`` writes to a sink that is drained after every chunk, so the archive
never sits in memory: entries are stored uncompressed (DICOM pixel data rarely
shrinks), laid out as ``{study}/{series}/{sop}.dcm``, with ZIP64 records when needed.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import AsyncIterator, Sequence

from dicomcloud.domain.records import InstanceRecord
from dicomcloud.services.retrieve import RetrieveService


class _Sink(io.RawIOBase):
    """An unseekable, write-only stream whose written bytes are taken out in pieces."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._pending += data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        data = bytes(self._pending)
        self._pending.clear()
        return data


def entry_name(record: InstanceRecord) -> str:
    return f"{record.study_instance_uid}/{record.series_instance_uid}/{record.sop_instance_uid}.dcm"


async def zip_instances(
    retrieve: RetrieveService, records: Sequence[InstanceRecord]
) -> AsyncIterator[bytes]:
    """The stored Part-10 files of ``records`` as one ZIP archive, chunk by chunk."""
    sink = _Sink()
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for record in records:
            info = zipfile.ZipInfo(entry_name(record), date_time=stamp)
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = record.size
            with archive.open(info, "w", force_zip64=record.size >= zipfile.ZIP64_LIMIT) as out:
                async for chunk in retrieve.blobs.stream(record.blob_key):
                    out.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()
