"""Retrieve use-case shared by WADO-RS, WADO-URI and C-GET / C-MOVE (PS3.18 10.4,
PS3.18 9, PS3.4 C.4.2-3).

The service lists the instances of a study, series or instance from the index, picks
the transfer syntax each one is sent in (PS3.18 8.7.3.5), and streams the stored bytes
(or a transcoded copy, made in a worker pool) one instance at a time, so that memory
stays bounded by the largest instance whatever the size of the study.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from dicomcloud.domain.derived import DerivedCopy, source_version
from dicomcloud.domain.records import InstanceRecord
from dicomcloud.errors import IndexUnavailable, NotAcceptable, NotFound
from dicomcloud.ports import BlobStore, DerivedCopyStore, Index
from dicomcloud.services import syntaxes as ts
from dicomcloud.services.frames import (
    Frame,
    FrameLayout,
    check_frames,
    convert_frame,
    load_layout,
    raw_frame,
    stored_form,
)
from dicomcloud.services.transcode import (
    TARGETS,
    PixelFormat,
    can_decode,
    can_transcode,
    pixel_problem,
    transcode_part10,
)

log = logging.getLogger(__name__)

#: A transfer syntax preference: a UID, ``AS_STORED`` ("*", PS3.18 8.7.3.5.2) or
#: ``DEFAULT`` (no transfer-syntax parameter: PS3.18 8.7.3.4).
AS_STORED = "*"
DEFAULT = ""

#: Objects up to this size are read in one call; larger ones are streamed in chunks.
_WHOLE_READ_LIMIT = 8 << 20
#: Frame layouts kept (a few kB each: the header up to the pixel data and the offsets).
_LAYOUTS_KEPT = 256
#: The largest value length of Explicit VR Little Endian (PS3.5 7.1.2).
_MAX_NATIVE_LENGTH = 0xFFFFFFFE


@dataclass(frozen=True, slots=True)
class StoredInstance:
    record: InstanceRecord
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class PlannedInstance:
    """An instance and the transfer syntax it will be sent in."""

    record: InstanceRecord
    transfer_syntax: str

    @property
    def as_stored(self) -> bool:
        return self.transfer_syntax == self.record.transfer_syntax_uid


def pixel_format(record: InstanceRecord) -> PixelFormat | None:
    """The indexed Image Pixel attributes (PS3.3 C.7.6.3), None without pixel data."""
    if record.bits_allocated is None or record.rows is None:
        return None
    return PixelFormat(
        record.bits_allocated,
        record.bits_stored or record.bits_allocated,
        record.samples_per_pixel or 1,
        record.pixel_representation or 0,
    )


def _native_length(record: InstanceRecord) -> int:
    if record.bits_allocated is None or record.rows is None or record.columns is None:
        return 0
    samples = record.samples_per_pixel or 1
    bits = record.rows * record.columns * samples * (record.number_of_frames or 1)
    return bits * record.bits_allocated // 8


def default_syntax(record: InstanceRecord) -> str:
    """PS3.18 8.7.3.4: Explicit VR Little Endian, unless the pixel data is stored lossy,
    too long for Explicit VR Little Endian, or cannot be decoded here: then as stored
    (the standard permits the lossy form and a lossless alternative; an object that
    cannot be decoded is better sent than refused)."""
    source = record.transfer_syntax_uid
    if ts.is_lossy(source) or _native_length(record) > _MAX_NATIVE_LENGTH or not can_decode(source):
        return source
    return ts.DICOMWEB_DEFAULT


def _problem(record: InstanceRecord, target: str) -> str | None:
    """Why this instance cannot be sent in ``target``, or None if it can."""
    source = record.transfer_syntax_uid
    if source == target:
        return None
    if not can_transcode(source, target):
        if target not in TARGETS:
            return f"transcoding to {target} is not supported"
        return f"pixel data in {source} cannot be decoded here"
    return pixel_problem(target, pixel_format(record))


def _possible(record: InstanceRecord, target: str) -> bool:
    return _problem(record, target) is None


def select_syntax(record: InstanceRecord, preferences: Sequence[str]) -> str:
    """The first acceptable transfer syntax this instance can be sent in
    (PS3.18 8.7.3.5: the Selected Transfer Syntax), or ``NotAcceptable`` with the
    reason for each one refused."""
    reasons: list[str] = []
    for preference in preferences:
        if preference == AS_STORED:
            return record.transfer_syntax_uid
        target = default_syntax(record) if preference == DEFAULT else preference
        problem = _problem(record, target)
        if problem is None:
            return target
        reasons.append(f"{target}: {problem}")
    raise NotAcceptable(
        f"instance {record.sop_instance_uid} is stored in {record.transfer_syntax_uid} "
        f"and cannot be sent as asked ({'; '.join(reasons)})"
    )


def stored_frame_syntax(record: InstanceRecord) -> str:
    """The syntax frames are in as stored: native ones are sent as Explicit VR Little
    Endian bytes (PS3.18 8.7.3.3.2, application/octet-stream)."""
    source = record.transfer_syntax_uid
    return source if ts.is_encapsulated(source) else ts.EXPLICIT_VR_LE


def select_frame_syntax(record: InstanceRecord, options: Sequence[tuple[str, str]]) -> str:
    """The Selected Transfer Syntax of an instance's frames (PS3.18 8.7.3.5) from
    acceptable (media type, transfer syntax preference) pairs, best first.

    ``("*", AS_STORED)`` and ``(application/octet-stream, AS_STORED)`` (what OHIF sends)
    take the frames as stored; a media type with ``DEFAULT`` takes its default syntax of
    PS3.18 table 8.7.3-4; a named syntax must fit the media type.
    """
    stored = stored_frame_syntax(record)
    native = not ts.is_encapsulated(record.transfer_syntax_uid)
    reasons: list[str] = []
    for media, preference in options:
        if preference == AS_STORED:
            if media in ("*", ts.OCTET_STREAM) or ts.frame_media_matches(media, stored):
                return stored
            reasons.append(f"{media}: the frames are stored as {ts.frame_media_type(stored)}")
            continue
        target = ts.FRAME_MEDIA_DEFAULTS.get(media, "") if preference == DEFAULT else preference
        if media != "*" and not ts.frame_media_matches(media, target):
            reasons.append(f"{media}: transfer syntax {target or '?'} does not fit it")
            continue
        if target == stored or (native and target == ts.EXPLICIT_VR_LE):
            return target
        problem = _problem(record, target)
        if problem is None:
            return target
        reasons.append(f"{media} ({target}): {problem}")
    raise NotAcceptable(
        f"the frames of instance {record.sop_instance_uid} are stored in {stored} and "
        f"cannot be sent as asked ({'; '.join(reasons)})"
    )


async def find_instance(
    index: Index, tenant_id: str, study_uid: str, series_uid: str, sop_uid: str
) -> InstanceRecord:
    """The indexed instance at this study/series/instance path (PS3.18 10.4.1.1.3 and
    every resource below it); ``NotFound`` naming the path otherwise."""
    record = await index.get_instance(tenant_id, sop_uid)
    if (
        record is None
        or record.study_instance_uid != study_uid
        or record.series_instance_uid != series_uid
    ):
        raise NotFound(f"instance {sop_uid} of series {series_uid} in study {study_uid} not found")
    return record


class RetrieveService:
    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        *,
        workers: int | None = None,
        copies: DerivedCopyStore | None = None,
    ) -> None:
        self.index = index
        self.blobs = blobs
        #: Viewer-ready copies (``services.viewer_ready``): sent instead of converting.
        self.copies = copies
        #: Instances and frames sent from a viewer-ready copy (observability, tests).
        self.copies_served = 0
        # Transcoding is CPU work: off the event loop (codecs release the GIL).
        self._pool = ThreadPoolExecutor(
            workers or min(4, os.cpu_count() or 1), thread_name_prefix="transcode"
        )
        self._layouts: OrderedDict[tuple[object, ...], FrameLayout] = OrderedDict()

    # -- finding instances ----------------------------------------------------------------

    async def instance_record(
        self, tenant_id: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> InstanceRecord:
        return await find_instance(self.index, tenant_id, study_uid, series_uid, sop_uid)

    async def instances(
        self, tenant_id: str, study_uid: str, series_uid: str | None = None
    ) -> list[InstanceRecord]:
        """Every instance of a study or series, in series then instance order
        (PS3.18 10.4.1.1.1-2 targets); ``NotFound`` if there is none."""
        records = await self.index.list_instances(tenant_id, study_uid, series_uid)
        if not records:
            what = f"series {series_uid} of study {study_uid}" if series_uid else study_uid
            raise NotFound(f"no instance of {'study ' if not series_uid else ''}{what} found")
        return records

    def plan(
        self, records: Sequence[InstanceRecord], preferences: Sequence[str]
    ) -> list[PlannedInstance]:
        """Choose every instance's transfer syntax before the first byte of a response
        is sent, so that an impossible one is reported as a status (PS3.18 8.7.5).

        Stored objects are not probed one by one here: an indexed instance whose object
        is missing is a server-side fault, found when it is read (the first instance of
        a response is read before the status is sent)."""
        return [PlannedInstance(r, select_syntax(r, preferences)) for r in records]

    # -- bytes ----------------------------------------------------------------------------

    async def instance(
        self, tenant_id: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> StoredInstance:
        """The stored Part-10 bytes of one instance (PS3.18 10.4.1.1.3 target)."""
        record = await self.instance_record(tenant_id, study_uid, series_uid, sop_uid)
        if not await self.blobs.exists(record.blob_key):
            raise NotFound(f"the stored object of instance {sop_uid} is missing")
        return StoredInstance(record, self.blobs.stream(record.blob_key))

    async def stored_copy(self, record: InstanceRecord, target: str) -> DerivedCopy | None:
        """The viewer-ready copy of this stored version of the instance in ``target``,
        if one is recorded.  The copies only save work: if the index cannot tell, the
        instance is converted as if there were none."""
        if self.copies is None or target == record.transfer_syntax_uid:
            return None
        try:
            copy = await self.copies.get_copy(record.tenant_id, record.sop_instance_uid, target)
        except IndexUnavailable as exc:
            log.warning("viewer-ready copies not looked up: %s", exc)
            return None
        if copy is None or copy.source_version != source_version(record):
            return None  # none, or made from a version the instance replaced
        return copy

    async def copy_bytes(self, record: InstanceRecord, target: str) -> bytes | None:
        """The Part-10 bytes of the instance's viewer-ready copy in ``target``, or None
        (C-GET / C-MOVE sub-operations: sent instead of converting)."""
        copy = await self.stored_copy(record, target)
        if copy is None:
            return None
        try:
            data = await self.blobs.get(copy.blob_key)
        except NotFound:
            return None
        self.copies_served += 1
        return data

    async def transcoded(self, record: InstanceRecord, target: str) -> bytes:
        """The instance as Part-10 bytes in ``target``: its viewer-ready copy if one is
        kept, otherwise converted now (in the worker pool)."""
        kept = await self.copy_bytes(record, target)
        if kept is not None:
            return kept
        data = await self.blobs.get(record.blob_key)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, transcode_part10, data, target)

    async def content(self, planned: PlannedInstance) -> tuple[int, AsyncIterator[bytes]]:
        """Length and chunks of one planned instance: streamed as stored, or transcoded
        whole (one instance at a time)."""
        record = planned.record
        if planned.as_stored and record.size > _WHOLE_READ_LIMIT:
            return record.size, self.blobs.stream(record.blob_key)
        if planned.as_stored:
            data = await self.blobs.get(record.blob_key)  # one read: most objects are small
        else:
            data = await self.transcoded(record, planned.transfer_syntax)

        async def one() -> AsyncIterator[bytes]:
            yield data

        return len(data), one()

    async def frames(
        self,
        record: InstanceRecord,
        numbers: Sequence[int],
        target: str,
    ) -> list[Frame]:
        """Frames ``numbers`` (one-based) of an instance (PS3.18 10.4.1.1.4) in the
        transfer syntax ``target``; only the needed bytes are read and decoded.

        Where the frames of an object lie is parsed once and kept (viewers fetch the
        frames of an instance one after the other); a frame as stored is then one
        range read, done on the event loop.
        """
        layout = await self._layout(record)
        check_frames(layout, record.transfer_syntax_uid, numbers, target)
        if target != stored_form(layout):
            copy = await self.stored_copy(record, target)
            if copy is not None:
                # The frames of the viewer-ready copy are in ``target`` already.
                source = replace(
                    record,
                    blob_key=copy.blob_key,
                    size=copy.size,
                    transfer_syntax_uid=copy.transfer_syntax_uid,
                )
                with contextlib.suppress(NotFound):
                    copied = await self._layout(source)
                    if stored_form(copied) == target and copied.frames == layout.frames:
                        record, layout = source, copied
                        self.copies_served += 1
        loop = asyncio.get_running_loop()
        frames: list[Frame] = []
        for number in numbers:
            raw = await raw_frame(
                self.blobs, record.blob_key, record.size, layout, number - 1, loop
            )
            if target == stored_form(layout):
                frames.append(Frame(raw, ts.frame_media_type(target), target))
            else:
                frame = await loop.run_in_executor(self._pool, convert_frame, raw, layout, target)
                frames.append(frame)
        return frames

    async def _layout(self, record: InstanceRecord) -> FrameLayout:
        # The key holds what a replaced object (duplicate policy "replace") would change.
        key = (
            record.blob_key,
            record.size,
            record.transfer_syntax_uid,
            record.number_of_frames,
            record.rows,
            record.columns,
            record.bits_allocated,
        )
        layout = self._layouts.get(key)
        if layout is not None:
            self._layouts.move_to_end(key)
            return layout
        loop = asyncio.get_running_loop()
        layout = await loop.run_in_executor(
            self._pool,
            load_layout,
            self.blobs,
            record.blob_key,
            record.size,
            record.transfer_syntax_uid,
            loop,
        )
        self._layouts[key] = layout
        while len(self._layouts) > _LAYOUTS_KEPT:
            self._layouts.popitem(last=False)
        return layout

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
