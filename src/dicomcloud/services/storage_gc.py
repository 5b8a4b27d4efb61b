"""Storage garbage collection: remove stored objects that no index row references.

Orphans come from two places (DESIGN.md "Deletion"):

* a deletion whose blob removals all failed: the index rows are gone, the files stay
  (``services.deletion`` logs them and goes on);
* a store interrupted between writing the file and committing the index (a crash, a
  failed index transaction): the file was never acknowledged; storing the same
  instance again writes a new, versioned key (``services.ingest``), so the old file is
  never reused.

What is recognised, by key layout (``storage.keys``), and when it is an orphan:

* an original ``{tenant}/{study}/{series}/{sop}[.{version}].dcm``: no instance row
  of the tenant has that ``blob_key``;
* a viewer-ready copy ``{tenant}/{study}/{series}/{sop}.derived/{syntax}.{version}.dcm``
  (only with a SQL index, which keeps the copy rows): no instance or copy row has it;
* a metadata object ``{tenant}/{study}/{series}/....json[.gz]`` (metadata store): the
  series holds no instance at all any more.  Metadata of a live series is left alone,
  even a stale version (it is keyed by content and never served for other content).

Anything else is skipped, never removed.  An object is removed only if it was last
written more than ``older_than`` seconds ago: a store in progress writes its file
before its index row, and that grace period is what keeps its file safe.  The index is
asked right before each batch is removed, so an instance committed meanwhile keeps
its file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from dicomcloud.ports import BlobStore, Index, StoredObject

log = logging.getLogger(__name__)

#: Default grace period (seconds): objects written more recently are never removed.
DEFAULT_OLDER_THAN = 3600.0
#: Series asked about in one index query.
SERIES_BATCH = 500
#: Attempts per removal before it is reported as failed.
REMOVE_ATTEMPTS = 3


class Kind(Enum):
    ORIGINAL = "original"
    DERIVED = "viewer-ready copy"
    METADATA = "metadata"


@dataclass(frozen=True, slots=True)
class Orphan:
    """One unreferenced object found."""

    key: str
    kind: Kind
    size: int
    #: Seconds since it was last written.
    age: float


@dataclass
class GcSummary:
    """What one collection over one store found and did."""

    store: str
    scanned: int = 0
    #: Unreferenced objects older than the grace period.
    orphans: list[Orphan] = field(default_factory=list)
    removed: int = 0
    removed_bytes: int = 0
    failed: list[str] = field(default_factory=list)
    #: Unreferenced objects kept because they are younger than the grace period.
    young: int = 0
    #: Keys that match no known layout (left alone).
    unrecognised: int = 0

    @property
    def found_bytes(self) -> int:
        return sum(o.size for o in self.orphans)


def classify(key: str, *, metadata: bool) -> tuple[str, str, Kind] | None:
    """(tenant, series UID, kind) of a key this module knows, else None."""
    segments = key.split("/")
    if len(segments) == 4 and not metadata and segments[3].endswith(".dcm"):
        return segments[0], segments[2], Kind.ORIGINAL
    if (
        len(segments) == 5
        and not metadata
        and segments[3].endswith(".derived")
        and segments[4].endswith(".dcm")
    ):
        return segments[0], segments[2], Kind.DERIVED
    if len(segments) == 4 and metadata and segments[3].endswith((".json", ".json.gz")):
        return segments[0], segments[2], Kind.METADATA
    return None


class StorageCollector:
    """Finds (and removes) orphans of one blob store against the index."""

    def __init__(
        self,
        index: Index,
        store: BlobStore,
        *,
        name: str = "instances",
        metadata: bool = False,
        copies_in_index: bool = True,
        older_than: float = DEFAULT_OLDER_THAN,
        clock: Callable[[], float] = time.time,
        retry_seconds: float = 0.2,
    ) -> None:
        self.index = index
        self.store = store
        self.name = name
        self.metadata = metadata
        #: Whether the index holds the viewer-ready copy rows (SQL); otherwise copies
        #: are never taken for orphans.
        self.copies_in_index = copies_in_index
        self.older_than = older_than
        self.clock = clock
        self.retry_seconds = retry_seconds

    async def collect(self, tenant_id: str | None = None, *, dry_run: bool = False) -> GcSummary:
        """Scan the store (one tenant's objects, or all), removing orphans unless
        ``dry_run``."""
        summary = GcSummary(self.name)
        now = self.clock()
        pending: dict[tuple[str, str], list[tuple[StoredObject, Kind]]] = {}
        prefix = f"{tenant_id}/" if tenant_id else ""
        async for found in self.store.list_objects(prefix):
            summary.scanned += 1
            known = classify(found.key, metadata=self.metadata)
            if known is None or (known[2] is Kind.DERIVED and not self.copies_in_index):
                summary.unrecognised += known is None
                continue
            tenant, series, kind = known
            pending.setdefault((tenant, series), []).append((found, kind))
            if len(pending) >= SERIES_BATCH:
                await self._settle(pending, summary, now, dry_run)
                pending = {}
        await self._settle(pending, summary, now, dry_run)
        return summary

    async def _settle(
        self,
        pending: dict[tuple[str, str], list[tuple[StoredObject, Kind]]],
        summary: GcSummary,
        now: float,
        dry_run: bool,
    ) -> None:
        by_tenant: dict[str, list[str]] = {}
        for tenant, series in pending:
            by_tenant.setdefault(tenant, []).append(series)
        orphans: list[Orphan] = []
        for tenant, series_uids in by_tenant.items():
            referenced = await self.index.series_blob_keys(tenant, series_uids)
            for series in series_uids:
                keys = referenced.get(series)
                for found, kind in pending[(tenant, series)]:
                    if kind is Kind.METADATA:
                        if keys is not None:
                            continue
                    elif keys is not None and found.key in keys:
                        continue
                    age = now - found.modified
                    if age < self.older_than:
                        summary.young += 1
                        continue
                    orphans.append(Orphan(found.key, kind, found.size, age))
        summary.orphans += orphans
        if dry_run or not orphans:
            return
        limit = asyncio.Semaphore(8)

        async def remove(orphan: Orphan) -> None:
            async with limit:
                if await self._remove(orphan.key):
                    summary.removed += 1
                    summary.removed_bytes += orphan.size
                else:
                    summary.failed.append(orphan.key)

        await asyncio.gather(*(remove(o) for o in orphans))

    async def _remove(self, key: str) -> bool:
        for attempt in range(1, REMOVE_ATTEMPTS + 1):
            try:
                await self.store.delete(key)
                return True
            except Exception as exc:  # any store failure: retried, then reported
                log.warning("removing orphan %s (attempt %d): %s", key, attempt, exc)
                if attempt < REMOVE_ATTEMPTS:
                    await asyncio.sleep(self.retry_seconds * 2 ** (attempt - 1))
        return False
