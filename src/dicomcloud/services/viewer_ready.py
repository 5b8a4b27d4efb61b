"""Viewer-ready copies (the seed's conversion queue, done without loss).

For each stored instance whose transfer syntax is one of the configured sources, the
transcoder worker (consumer group ``transcoder`` of ``instance.stored``) keeps one more
copy in the configured target syntax (PS3.5 Annex A: the same instance, another
encoding, PS3.5 10), stored next to the original under ``storage.keys.derived_key``
and recorded in the index (``DerivedCopyStore``).  WADO-RS then sends that copy when a
client asks for the target syntax instead of converting on request.

What never happens: the original is never written, moved or deleted here; a copy that
does not decode to the original's pixels is never kept (``verify``).  A failed
conversion is recorded (reason, attempts) and raised, so that the bus retries the
event with backoff and dead-letters it after ``[workers] max_attempts``; a conversion
that is impossible by its nature (no decoder for the source, a pixel format the target
cannot hold) is recorded once and not retried, since it would fail the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from pydicom import dcmread

from dicomcloud.domain.derived import DerivedCopy, TranscodeFailure, source_version
from dicomcloud.domain.events import INSTANCE_STORED, StoredEvent
from dicomcloud.domain.records import InstanceRecord
from dicomcloud.errors import DicomCloudError
from dicomcloud.ports import BlobStore, Delivery, DerivedCopyStore, Index
from dicomcloud.services.retrieve import pixel_format
from dicomcloud.services.transcode import (
    can_transcode,
    decoding_plugin,
    pixel_problem,
    transcode_part10,
)
from dicomcloud.storage.keys import derived_key
from dicomcloud.workers import Consumer

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ``sources`` entry meaning every transfer syntax (but the target).
ALL = "*"


class TranscodeFailed(DicomCloudError):
    """A viewer-ready copy could not be made (the original is untouched)."""


def _pixels(data: bytes) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(io.BytesIO(data), force=True)
        plugin = decoding_plugin(str(ds.file_meta.TransferSyntaxUID))
        if plugin:
            ds.pixel_array_options(decoding_plugin=plugin)
        return ds.pixel_array


def convert(data: bytes, target: str, verify: bool) -> bytes:
    """``data`` in ``target``; with ``verify``, ``TranscodeFailed`` unless the copy
    decodes to exactly the original's pixels (CPU work: call from a worker thread)."""
    out = transcode_part10(data, target)
    if verify:
        original, copy = _pixels(data), _pixels(out)
        if original.shape != copy.shape or not np.array_equal(original, copy):
            raise TranscodeFailed(
                f"the copy in {target} does not decode to the original's pixels "
                f"(shapes {original.shape} and {copy.shape})"
            )
    return out


class ViewerReadyCopies:
    """Makes, finds and forgets the viewer-ready copies of instances."""

    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        copies: DerivedCopyStore,
        executor: Executor,
        *,
        sources: Sequence[str],
        target: str,
        verify: bool = True,
    ) -> None:
        self.index = index
        self.blobs = blobs
        self.copies = copies
        self.sources = frozenset(sources)
        self.target = target
        self.verify = verify
        self._executor = executor
        #: Copies made, and conversions that failed (observability, tests).
        self.made = 0
        self.failed = 0

    def wanted(self, transfer_syntax_uid: str) -> bool:
        """Whether instances stored in ``transfer_syntax_uid`` get a copy."""
        if transfer_syntax_uid == self.target:
            return False
        return ALL in self.sources or transfer_syntax_uid in self.sources

    async def _cpu(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def on_stored(self, event: StoredEvent) -> DerivedCopy | None:
        """Make the copy of the instance an event announces, as the index has it now
        (nothing if it is gone, not wanted, or has no pixel data); the copy kept.
        Raises ``TranscodeFailed`` (after recording it) when the conversion failed."""
        if not event.replaced and not self.wanted(event.transfer_syntax_uid):
            return None
        record = await self.index.get_instance(event.tenant_id, event.sop_instance_uid)
        if record is None:
            return None
        version = source_version(record)
        if event.replaced:
            await self._drop_stale(record, version)
        if not self.wanted(record.transfer_syntax_uid) or record.rows is None:
            return None
        existing = await self.copies.get_copy(
            record.tenant_id, record.sop_instance_uid, self.target
        )
        if (
            existing is not None
            and existing.source_version == version
            and await self.blobs.exists(existing.blob_key)
        ):
            return existing  # a redelivered event: made already
        problem = self._impossible(record)
        if problem is not None:
            await self._record_failure(record, version, problem)
            log.warning(
                "no viewer-ready copy of %s in %s: %s",
                record.sop_instance_uid,
                self.target,
                problem,
            )
            return None
        try:
            return await self._make(record, version)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):  # the event is retried whatever happens
                await self._record_failure(record, version, reason)
            raise TranscodeFailed(
                f"no viewer-ready copy of {record.sop_instance_uid} in {self.target}: {reason}"
            ) from exc

    def _impossible(self, record: InstanceRecord) -> str | None:
        source = record.transfer_syntax_uid
        if not can_transcode(source, self.target):
            return f"pixel data in {source} cannot be transcoded to {self.target} here"
        return pixel_problem(self.target, pixel_format(record))

    async def _make(self, record: InstanceRecord, version: str) -> DerivedCopy | None:
        data = await self.blobs.get(record.blob_key)
        out = await self._cpu(convert, data, self.target, self.verify)
        key = derived_key(
            record.tenant_id,
            record.study_instance_uid,
            record.series_instance_uid,
            record.sop_instance_uid,
            self.target,
            version,
        )
        size = await self.blobs.put(key, [out])
        current = await self.index.get_instance(record.tenant_id, record.sop_instance_uid)
        if current is None or source_version(current) != version:
            # Deleted or replaced while converting: the later event handles the rest.
            await self._delete_blob(key)
            return None
        copy = DerivedCopy(
            tenant_id=record.tenant_id,
            study_instance_uid=record.study_instance_uid,
            series_instance_uid=record.series_instance_uid,
            sop_instance_uid=record.sop_instance_uid,
            transfer_syntax_uid=self.target,
            blob_key=key,
            size=len(out) if size is None else size,
            source_version=version,
            created_at=datetime.now(UTC),
        )
        previous = await self.copies.record_copy(copy)
        if previous is not None and previous.blob_key != key:
            await self._delete_blob(previous.blob_key)
        current = await self.index.get_instance(record.tenant_id, record.sop_instance_uid)
        if current is None:
            # Deleted between the check above and the record: the deletion's
            # transaction did not see this copy, so it is removed here.
            if await self.copies.delete_copy(copy):
                await self._delete_blob(key)
            return None
        self.made += 1
        return copy

    async def _record_failure(self, record: InstanceRecord, version: str, reason: str) -> None:
        self.failed += 1
        await self.copies.record_failure(
            TranscodeFailure(
                tenant_id=record.tenant_id,
                study_instance_uid=record.study_instance_uid,
                series_instance_uid=record.series_instance_uid,
                sop_instance_uid=record.sop_instance_uid,
                transfer_syntax_uid=self.target,
                source_version=version,
                attempts=1,
                reason=reason,
                failed_at=datetime.now(UTC),
            )
        )

    async def _drop_stale(self, record: InstanceRecord, version: str) -> None:
        """Forget the copies of versions the instance replaced."""
        for copy in await self.copies.list_copies(record.tenant_id, record.sop_instance_uid):
            if copy.source_version != version and await self.copies.delete_copy(copy):
                await self._delete_blob(copy.blob_key)

    async def forget(self, tenant_id: str, sop_instance_uid: str) -> int:
        """Remove every copy of an instance (it was deleted); how many."""
        removed = await self.copies.forget(tenant_id, sop_instance_uid)
        for copy in removed:
            await self._delete_blob(copy.blob_key)
        return len(removed)

    async def _delete_blob(self, key: str) -> None:
        try:
            await self.blobs.delete(key)
        except Exception:
            log.exception("could not remove the derived copy %s", key)


class TranscoderWorker:
    """The viewer-ready transcoder, consumer group ``transcoder`` of
    ``instance.stored``.  Idempotent: a redelivered event finds its copy made."""

    GROUP = "transcoder"

    def __init__(self, service: ViewerReadyCopies, *, concurrency: int = 2) -> None:
        self.service = service
        self.concurrency = concurrency
        self.processed = 0

    @property
    def consumer(self) -> Consumer:
        return Consumer(self.GROUP, self.handle, INSTANCE_STORED, self.concurrency)

    async def handle(self, delivery: Delivery) -> None:
        await self.service.on_stored(StoredEvent.from_json(delivery.payload))
        self.processed += 1
