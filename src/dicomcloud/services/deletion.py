"""Deleting a study, a series or an instance of a tenant (DESIGN.md "Deletion").

DICOM has no DICOMweb delete transaction (PS3.18 10 defines none; IOCM rejection notes,
PS3.3 C.X / PS3.4 KK, are the standard's soft delete): this is a hard delete, as the
non-standard ``DELETE`` of other archives.

Order of work, so that the index stays the truth:

1. the index transaction (``Index.delete_instances``): instance rows, the levels left
   empty, extended tag values, viewer-ready copy rows and an ``instance.deleted``
   outbox row per instance, all or nothing;
2. the QIDO-RS search cache of the tenant is invalidated and the outbox relay woken,
   before the caller answers;
3. the blobs (originals, viewer-ready copies, instance and series metadata objects)
   are removed, each retried a few times.  A crash or failure here leaves an orphan
   blob, never an index row without its blob; failures are logged and reported in the
   summary, never raised.

The same instance stored again while its old file still exists goes to a new,
versioned key (``services.ingest``: a taken key the index does not know is never
overwritten), so removing the old file cannot take the new one; as a second guard an
original is not removed if the index again holds an instance under its key.

Series metadata aggregates are kept per base URL (``MetadataService``): those of the
base URLs this process knows are removed (the configured ``server.base_url`` ones,
those of its metadata requests, the DELETE request's own).  Set ``server.base_url``
when other processes serve other base URLs (``dicomcloud delete`` knows only the
configured ones); an aggregate left behind is only served again if the same instances
are stored again with the same indexed attributes.

Objects built from the deleted instances while the deletion ran (series metadata, a
viewer-ready copy) are removed by their builders, which check the index after storing
them (``MetadataService.instance_object(verify=True)``, ``ViewerReadyCopies``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dicomcloud.errors import MethodNotAllowed, NotFound
from dicomcloud.ports import BlobStore, DeleteRequest, DerivedCopyStore, Index
from dicomcloud.services.metadata import MetadataService
from dicomcloud.services.search_cache import SearchCache

log = logging.getLogger(__name__)

#: Attempts per blob removal before it is reported as failed.
BLOB_ATTEMPTS = 3
#: First pause between attempts (doubles).
BLOB_RETRY_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class DeleteSummary:
    """What a deletion removed (the DICOMweb route answers 204; the CLI prints it)."""

    tenant_id: str
    study_instance_uid: str
    instances: int
    sop_instance_uids: tuple[str, ...]
    series_instance_uids: tuple[str, ...]
    removed_series: tuple[str, ...]
    study_removed: bool
    patient_removed: bool
    #: Stored files removed: originals and viewer-ready copies (metadata objects,
    #: which may never have been built, are not counted).
    blobs_removed: int
    #: Blob keys that could not be removed (orphans; the index no longer names them).
    blobs_failed: tuple[str, ...] = field(default=())


class DeletionService:
    """Deletes from the index, then removes the blobs (see the module notes)."""

    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        *,
        metadata: MetadataService | None = None,
        search_cache: SearchCache | None = None,
        copies: DerivedCopyStore | None = None,
        on_commit: Sequence[Callable[[], None]] = (),
        enabled: bool = True,
        attempts: int = BLOB_ATTEMPTS,
        retry_seconds: float = BLOB_RETRY_SECONDS,
    ) -> None:
        self.index = index
        self.blobs = blobs
        self.metadata = metadata
        self.search_cache = search_cache
        self.copies = copies
        self.on_commit = list(on_commit)
        self.enabled = enabled
        self.attempts = max(1, attempts)
        self.retry_seconds = retry_seconds
        #: Blob removals that failed after every attempt (observability, tests).
        self.blob_failures = 0

    def check_enabled(self) -> None:
        """Raise ``MethodNotAllowed`` if this archive never deletes."""
        if not self.enabled:
            raise MethodNotAllowed(
                "deletion is disabled on this archive ([retention] allow_delete = false)"
            )

    async def delete(self, request: DeleteRequest) -> DeleteSummary:
        """Delete what ``request`` names; ``NotFound`` if nothing matched."""
        self.check_enabled()
        before = await self.index.list_instances(
            request.tenant_id, request.study_instance_uid, request.series_instance_uid
        )
        deletion = await self.index.delete_instances(request)
        if deletion is None:
            raise NotFound(_describe(request) + " not found")
        if self.search_cache is not None:
            await self.search_cache.invalidate([request.tenant_id])
        for notify in self.on_commit:
            notify()

        # One query, whatever the number of instances: what was stored again meanwhile.
        again = await self.index.list_instances(
            request.tenant_id, request.study_instance_uid, request.series_instance_uid
        )
        taken = {r.blob_key for r in again}
        originals = [r.blob_key for r in deletion.instances if r.blob_key not in taken]
        if len(originals) < len(deletion.instances):
            log.warning("%s: stored again meanwhile, files kept", _describe(request))
        derived = list(deletion.derived_blob_keys)
        if self.copies is not None:  # a copy store outside the index transaction (memory)
            for record in deletion.instances:
                forgotten = await self.copies.forget(record.tenant_id, record.sop_instance_uid)
                derived += [copy.blob_key for copy in forgotten]
        removed, failed = await self._remove(self.blobs, [*originals, *sorted(set(derived))])
        if self.metadata is not None:
            stale = self.metadata.forget(before, deletion.instances)
            await self.metadata.drop_cached(stale)
            _, also_failed = await self._remove(self.metadata.store, stale)
            failed += also_failed
        if failed:
            log.error(
                "%s: %d blob(s) could not be removed and are left as orphans: %s",
                _describe(request),
                len(failed),
                ", ".join(failed[:20]),
            )
        return DeleteSummary(
            tenant_id=request.tenant_id,
            study_instance_uid=request.study_instance_uid,
            instances=len(deletion.instances),
            sop_instance_uids=tuple(r.sop_instance_uid for r in deletion.instances),
            series_instance_uids=tuple(sorted({r.series_instance_uid for r in deletion.instances})),
            removed_series=deletion.removed_series,
            study_removed=deletion.study_removed,
            patient_removed=deletion.patient_removed,
            blobs_removed=removed,
            blobs_failed=tuple(failed),
        )

    async def _remove(self, store: BlobStore, keys: Sequence[str]) -> tuple[int, list[str]]:
        """Remove ``keys`` from ``store`` (a few at a time); (how many, failed keys)."""
        limit = asyncio.Semaphore(8)

        async def one(key: str) -> bool:
            async with limit:
                return await self._remove_one(store, key)

        done = await asyncio.gather(*(one(key) for key in keys))
        failed = [key for key, ok in zip(keys, done, strict=True) if not ok]
        self.blob_failures += len(failed)
        return len(keys) - len(failed), failed

    async def _remove_one(self, store: BlobStore, key: str) -> bool:
        for attempt in range(1, self.attempts + 1):
            try:
                await store.delete(key)
                return True
            except Exception as exc:  # any store failure: retried, then reported
                log.warning("removing blob %s (attempt %d): %s", key, attempt, exc)
                if attempt < self.attempts:
                    await asyncio.sleep(self.retry_seconds * 2 ** (attempt - 1))
        return False


def _describe(request: DeleteRequest) -> str:
    if request.sop_instance_uid is not None:
        return f"instance {request.sop_instance_uid} of series {request.series_instance_uid}"
    if request.series_instance_uid is not None:
        return f"series {request.series_instance_uid} of study {request.study_instance_uid}"
    return f"study {request.study_instance_uid}"
