"""Fill the search columns of data already stored (``dicomcloud reindex``).

Migration 0002 added columns that ingest now writes (each level's attributes as DICOM
JSON for QIDO-RS ``includefield``, folded person names for ``fuzzymatching``); rows
stored before it, or bulk-loaded without them, have them empty.  Reindexing reads each
stored file again, extracts the records as ingest does and rewrites only those derived
columns and the extended query tag values (with the folded copies of PN values that
migration 0008 added), in batches, in ``(tenant, SOP Instance UID)`` order.  No event
is published and no searchable attribute changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dicomcloud.domain.extraction import extract_instance
from dicomcloud.domain.records import ExtractedInstance, InstanceRecord
from dicomcloud.errors import DicomCloudError
from dicomcloud.ports import BlobStore
from dicomcloud.services.part10 import parse_part10

__all__ = ["ReindexSummary", "Reindexable", "reindex"]


class Reindexable(Protocol):
    """What reindexing needs from an index (``SqlIndex`` and ``MemoryIndex``)."""

    async def count_all_instances(self) -> int: ...

    async def instance_page(
        self, after: tuple[str, str] | None, limit: int
    ) -> list[InstanceRecord]: ...

    async def refresh_derived(self, extracted: Sequence[ExtractedInstance]) -> None: ...


@dataclass
class ReindexSummary:
    """How many instances were reindexed, and which could not be (blob key, reason)."""

    reindexed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


async def reindex(
    index: Reindexable,
    blobs: BlobStore,
    *,
    batch: int = 200,
    progress: Callable[[int], None] = lambda _: None,
) -> ReindexSummary:
    """Rewrite the derived search columns of every stored instance; ``progress`` is
    called with the number of instances done after each batch.  A file that cannot be
    read or parsed is reported, not fatal."""
    summary = ReindexSummary()
    after: tuple[str, str] | None = None
    while True:
        page = await index.instance_page(after, batch)
        if not page:
            return summary
        extracted: list[ExtractedInstance] = []
        for record in page:
            try:
                parsed = parse_part10(await blobs.get(record.blob_key))
                extracted.append(
                    extract_instance(
                        parsed.dataset,
                        tenant_id=record.tenant_id,
                        transfer_syntax_uid=record.transfer_syntax_uid,
                        blob_key=record.blob_key,
                        size=record.size,
                    )
                )
            except DicomCloudError as exc:
                summary.failures.append((record.blob_key, exc.reason))
        await index.refresh_derived(extracted)
        summary.reindexed += len(extracted)
        progress(len(page))
        last = page[-1]
        after = (last.tenant_id, last.sop_instance_uid)
