"""The ingest service: one use-case behind STOW-RS, C-STORE and ``dicomcloud import``.

Order of work for each instance (DESIGN.md, data flow):

1. parse once and validate the identifying attributes (reject with a reason);
2. write the Part-10 bytes to blob storage durably (temp file, fsync, rename);
3. index patient/study/series/instance rows and the outbox event in one transaction,
   shared with other concurrent instances (group commit);
4. only then report success.  A failure at any step is reported for that instance
   and leaves nothing behind: a blob written for an instance that could not be
   indexed is removed again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from dicomcloud.domain.events import StoredEvent, node_id, utc_now_iso, uuid7
from dicomcloud.domain.extraction import extract_instance
from dicomcloud.domain.records import (
    DuplicatePolicy,
    ExtractedInstance,
    ExtractionWarning,
    StoreOutcome,
)
from dicomcloud.errors import (
    CannotUnderstand,
    DataSetDoesNotMatchSOPClass,
    DicomCloudError,
    InstanceRejected,
    OutOfResources,
)
from dicomcloud.ports import BlobStore, Index, InstanceWrite
from dicomcloud.services.group_commit import GroupCommitter
from dicomcloud.services.part10 import (
    ParsedObject,
    build_header,
    element_text,
    parse_dataset,
    parse_part10,
)
from dicomcloud.storage.keys import instance_key

log = logging.getLogger(__name__)

#: PS3.4 B.2.3 warning statuses used for stored-with-warning outcomes.
WARNING_COERCION = 0xB000  # an indexed value was clipped or ignored
WARNING_ELEMENTS_DISCARDED = 0xB006  # a duplicate was discarded (keep-first policy)


@dataclass(frozen=True, slots=True)
class IngestContext:
    """Who sent the object and how; one per request or association."""

    tenant_id: str
    source: str  # "STOW-RS", "DIMSE", "IMPORT"
    source_ip: str | None = None
    source_ae: str | None = None
    #: STOW-RS ``POST /studies/{StudyInstanceUID}``: every instance must belong to it.
    expected_study_uid: str | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What happened to one received object (a typed outcome each transport maps)."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    outcome: StoreOutcome | None = None
    failure: DicomCloudError | None = None
    warnings: tuple[ExtractionWarning, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def status(self) -> int:
        """The PS3.4 B.2.3 status: 0x0000, a warning 0xBxxx, or the failure's code."""
        if self.failure is not None:
            return self.failure.dimse_status
        if self.outcome is StoreOutcome.DUPLICATE:
            return WARNING_ELEMENTS_DISCARDED
        if self.warnings:
            return WARNING_COERCION
        return 0x0000

    @property
    def comment(self) -> str:
        """Human-readable reason (C-STORE ErrorComment, STOW Warning header)."""
        if self.failure is not None:
            return self.failure.reason
        parts = []
        if self.outcome is StoreOutcome.DUPLICATE:
            parts.append("SOP Instance UID already stored; the stored instance was kept")
        parts.extend(f"{w.keyword}: {w.reason}" for w in self.warnings)
        return "; ".join(parts)


class IngestService:
    """Stores received objects durably and indexes them (see module docstring)."""

    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        *,
        duplicate_policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
        max_batch: int = 200,
    ) -> None:
        self.index = index
        self.blobs = blobs
        self.duplicate_policy = duplicate_policy
        self.committer = GroupCommitter(index, max_batch)

    async def start(self) -> None:
        await self.committer.start()

    async def stop(self) -> None:
        await self.committer.stop()

    # -- entry points -------------------------------------------------------------------

    async def store_part10(self, source: bytes | Path, context: IngestContext) -> IngestResult:
        """Store one PS3.10 file as received (STOW-RS part, imported file)."""
        try:
            if isinstance(source, Path):
                parsed = await asyncio.to_thread(parse_part10, source)
            else:
                parsed = parse_part10(source)
        except InstanceRejected as exc:
            return IngestResult(None, None, failure=exc)
        return await self._store(parsed, source, context)

    async def store_dataset(
        self,
        dataset: bytes,
        transfer_syntax_uid: str,
        context: IngestContext,
    ) -> IngestResult:
        """Store one dataset received over DIMSE in its negotiated transfer syntax."""
        prepared = self._prepare_dataset(dataset, transfer_syntax_uid, context)
        if isinstance(prepared, IngestResult):
            return prepared
        return await self._write_and_index(prepared)

    def prepare_dataset_blocking(
        self,
        dataset: bytes,
        transfer_syntax_uid: str,
        context: IngestContext,
    ) -> IngestResult | PreparedStore:
        """Everything before the index commit of a DIMSE dataset, in the calling thread.

        Parses, validates and, where the blob store can write without an event loop,
        writes the blob durably: a DIMSE association thread does this work itself
        and hands only ``commit_prepared`` to the event loop (one thread hop instead
        of several, and the loop stays free for other requests).  Returns the
        failure as an ``IngestResult``, or what ``commit_prepared`` needs.
        """
        prepared = self._prepare_dataset(dataset, transfer_syntax_uid, context)
        if isinstance(prepared, IngestResult) or not isinstance(self.blobs, BlockingPut):
            return prepared
        try:
            size = self.blobs.put_blocking(
                prepared.key, _chunks(prepared.parsed, prepared.source), if_absent=True
            )
        except DicomCloudError as exc:
            return prepared.failed(exc)
        if size is not None:
            prepared.written = size
        return prepared

    async def commit_prepared(self, prepared: PreparedStore) -> IngestResult:
        """The rest of ``prepare_dataset_blocking``'s store, on the event loop."""
        return await self._write_and_index(prepared)

    # -- the use-case -------------------------------------------------------------------

    def _prepare_dataset(
        self, dataset: bytes, transfer_syntax_uid: str, context: IngestContext
    ) -> IngestResult | PreparedStore:
        try:
            ds = parse_dataset(dataset, transfer_syntax_uid)
        except InstanceRejected as exc:
            return IngestResult(None, None, failure=exc)
        sop_class = element_text(ds, "SOPClassUID")
        sop_instance = element_text(ds, "SOPInstanceUID")
        try:
            header = build_header(
                sop_class, sop_instance, transfer_syntax_uid, source_ae=context.source_ae
            )
        except InstanceRejected as exc:
            return IngestResult(sop_class or None, sop_instance or None, failure=exc)
        parsed = ParsedObject(ds, transfer_syntax_uid, header, 0)
        return self._prepare(parsed, dataset, context)

    async def _store(
        self, parsed: ParsedObject, source: bytes | Path, context: IngestContext
    ) -> IngestResult:
        prepared = self._prepare(parsed, source, context)
        if isinstance(prepared, IngestResult):
            return prepared
        return await self._write_and_index(prepared)

    def _prepare(
        self, parsed: ParsedObject, source: bytes | Path, context: IngestContext
    ) -> IngestResult | PreparedStore:
        """Extract and validate what the index keeps (no I/O)."""
        ds = parsed.dataset
        sop_class = element_text(ds, "SOPClassUID") or None
        sop_instance = element_text(ds, "SOPInstanceUID") or None
        try:
            extracted = extract_instance(
                ds, tenant_id=context.tenant_id, transfer_syntax_uid=parsed.transfer_syntax_uid
            )
        except InstanceRejected as exc:
            return IngestResult(sop_class, sop_instance, failure=exc)
        inst = extracted.instance
        result = IngestResult(
            inst.sop_class_uid,
            inst.sop_instance_uid,
            inst.study_instance_uid,
            inst.series_instance_uid,
        )
        if context.expected_study_uid and inst.study_instance_uid != context.expected_study_uid:
            return _with(
                result,
                failure=DataSetDoesNotMatchSOPClass(
                    f"StudyInstanceUID {inst.study_instance_uid} does not match the study "
                    f"{context.expected_study_uid} of the request"
                ),
            )
        warnings = extracted.warnings + tuple(
            ExtractionWarning("FileMetaInformation", note) for note in parsed.notes
        )
        try:
            key = _key_for(context, extracted)
        except InstanceRejected as exc:
            return _with(result, failure=exc)
        return PreparedStore(extracted, parsed, source, context, result, warnings, key)

    async def _write_and_index(self, prepared: PreparedStore) -> IngestResult:
        inst = prepared.extracted.instance
        try:
            outcome = await self._write_and_index_unchecked(prepared)
        except InstanceRejected as exc:
            log.warning("instance %s not stored: %s", inst.sop_instance_uid, exc.reason)
            return _with(prepared.result, failure=exc)
        except DicomCloudError as exc:
            return prepared.failed(exc)
        return _with(prepared.result, outcome=outcome, warnings=prepared.warnings)

    async def _write_and_index_unchecked(self, prepared: PreparedStore) -> StoreOutcome:
        extracted, parsed, source, context = (
            prepared.extracted,
            prepared.parsed,
            prepared.source,
            prepared.context,
        )
        inst = extracted.instance
        # The common case, a new instance, costs no index read: the file is created
        # only if its key is free.  A taken key means a stored instance (or the
        # leftover of an interrupted store, which the index does not know).
        existing = None
        key = prepared.key
        size = prepared.written
        if size is None:
            size = await self.blobs.put(key, _chunks(parsed, source), if_absent=True)
        if size is None:
            existing = await self.index.get_instance(context.tenant_id, inst.sop_instance_uid)
            if existing is not None and self.duplicate_policy is DuplicatePolicy.KEEP_FIRST:
                return StoreOutcome.DUPLICATE
            # A replacement goes to a new key: the stored version stays intact until
            # the index points at the new one.  So does an instance the index does not
            # know (anymore) whose key is taken: the file may belong to a deletion
            # that removes it after its commit (services.deletion), or be the
            # leftover of an interrupted store (never acknowledged; left alone).
            key = _key_for(context, extracted, uuid.uuid4().hex[:12])
            size = await self.blobs.put(key, _chunks(parsed, source))
            assert size is not None
        elif self.duplicate_policy is DuplicatePolicy.REPLACE:
            # The unversioned key was free, yet an earlier replacement may be indexed
            # under a versioned key: it is removed once the index points at this one.
            existing = await self.index.get_instance(context.tenant_id, inst.sop_instance_uid)
        record = _replace_instance(extracted, key, size)
        event = StoredEvent(
            event_id=str(uuid7()),
            tenant_id=context.tenant_id,
            patient_id=record.patient.patient_id,
            study_instance_uid=inst.study_instance_uid,
            series_instance_uid=inst.series_instance_uid,
            sop_instance_uid=inst.sop_instance_uid,
            sop_class_uid=inst.sop_class_uid,
            transfer_syntax_uid=inst.transfer_syntax_uid,
            blob_key=key,
            file_size=size,
            number_of_frames=inst.number_of_frames,
            accession_number=record.study.accession_number,
            study_date=record.study.study_date,
            source=context.source,
            source_ip=context.source_ip,
            source_ae=context.source_ae,
            replaced=existing is not None,
            stored_at=utc_now_iso(),
            node_id=node_id(),
        )
        write = InstanceWrite(record, event, self.duplicate_policy)
        try:
            outcome = await self.committer.submit(write)
        except BaseException:
            if existing is None or existing.blob_key != key:
                await _quietly_delete(self.blobs, key)
            raise
        if outcome is StoreOutcome.REPLACED and existing is not None and existing.blob_key != key:
            await _quietly_delete(self.blobs, existing.blob_key)
        elif outcome is StoreOutcome.DUPLICATE and (existing is None or existing.blob_key != key):
            # Lost a race with a concurrent first store under keep-first.
            stored = await self.index.get_instance(context.tenant_id, inst.sop_instance_uid)
            if stored is None or stored.blob_key != key:
                await _quietly_delete(self.blobs, key)
        return outcome


@runtime_checkable
class BlockingPut(Protocol):
    """A blob store that can also write from a thread without an event loop."""

    def put_blocking(
        self, key: str, chunks: Iterable[bytes | memoryview], *, if_absent: bool = False
    ) -> int | None:
        """``BlobStore.put``, blocking the calling thread."""
        ...


@dataclass(slots=True)
class PreparedStore:
    """A validated instance on its way to the index (see ``prepare_dataset_blocking``)."""

    extracted: ExtractedInstance
    parsed: ParsedObject
    source: bytes | Path
    context: IngestContext
    result: IngestResult
    warnings: tuple[ExtractionWarning, ...]
    key: str
    #: Size of the blob already written under ``key``; None: not written yet.
    written: int | None = None

    def failed(self, exc: DicomCloudError) -> IngestResult:
        """The result for a storage or index failure (reported as out of resources)."""
        log.error("instance %s not stored: %s", self.result.sop_instance_uid, exc.reason)
        return _with(self.result, failure=OutOfResources(exc.reason))


def _key_for(context: IngestContext, extracted: ExtractedInstance, version: str = "") -> str:
    inst = extracted.instance
    try:
        return instance_key(
            context.tenant_id,
            inst.study_instance_uid,
            inst.series_instance_uid,
            inst.sop_instance_uid,
            version,
        )
    except ValueError as exc:  # extraction validated the UIDs; a safety net
        raise CannotUnderstand(str(exc)) from exc


def _with(result: IngestResult, **changes: object) -> IngestResult:
    return replace(result, **changes)  # type: ignore[arg-type]


def _replace_instance(extracted: ExtractedInstance, key: str, size: int) -> ExtractedInstance:
    return replace(extracted, instance=replace(extracted.instance, blob_key=key, size=size))


def _chunks(parsed: ParsedObject, source: bytes | Path) -> Iterable[bytes | memoryview]:
    """The bytes to store: the received object, behind a corrected header if needed."""
    if parsed.new_header is not None:
        yield parsed.new_header
    if isinstance(source, bytes):
        view = memoryview(source)
        yield view[parsed.dataset_offset :] if parsed.new_header is not None else view
        return
    yield from _file_chunks(source, parsed.dataset_offset if parsed.new_header else 0)


def _file_chunks(path: Path, offset: int, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(size):
            yield chunk


async def _quietly_delete(blobs: BlobStore, key: str) -> None:
    try:
        await blobs.delete(key)
    except Exception:  # the orphan is harmless; log and go on
        log.exception("could not remove blob %s", key)
