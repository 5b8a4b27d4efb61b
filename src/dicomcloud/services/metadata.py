"""WADO-RS metadata (PS3.18 10.4.1.1.6, Annex F): precomputed, kept up to date, checked.

What is kept (in the metadata BlobStore, see ``storage/keys.py``):

* per instance, ``{tenant}/{study}/{series}/{sop}.{version}.json``: its DICOM JSON with
  relative BulkDataURIs and the byte offset of each bulk value in the stored file
  (:mod:`dicomcloud.services.metadata_json`); ``version`` fingerprints the index
  record of the stored object (blob key, size, indexed attributes), so a replaced
  instance never finds the metadata of its predecessor;
* per series and base URL, ``{tenant}/{study}/{series}/series.{etag}.json.gz``: the
  series' JSON array, gzip'd once, served as is to clients accepting gzip.  ``etag``
  fingerprints the base URL and the versions of the series' instances in index order.

Correctness never depends on events: every read lists the series' instances in the
index (one query), derives the ETag from them and builds whatever is missing (then
stores it).  Events only make it fast: :class:`MetadataWorker` builds each new
instance's metadata as it is stored and the series aggregate after a quiet period.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar, cast

from dicomcloud.cache.failsafe import FailSafeCache
from dicomcloud.domain.events import INSTANCE_STORED, StoredEvent
from dicomcloud.domain.records import InstanceRecord
from dicomcloud.errors import NotFound
from dicomcloud.ports import BlobStore, Delivery, Index
from dicomcloud.services.metadata_json import (
    FORMAT,
    BulkRef,
    RangeReader,
    build_instance_metadata,
    build_instance_metadata_from,
    bulk_value,
    with_base,
)
from dicomcloud.services.retrieve import find_instance
from dicomcloud.storage.keys import instance_metadata_key, series_metadata_key
from dicomcloud.workers import Consumer

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Base URLs per tenant for which the worker keeps series aggregates ready.
MAX_KNOWN_BASES = 8
#: Stored files above this size are read in pieces when their metadata is built, so
#: that a multi-gigabyte multi-frame object never sits in memory (bulk values with a
#: defined length are not read at all).
LARGE_OBJECT_BYTES = 32 << 20
#: Bytes per ranged read of such a file.
LARGE_OBJECT_READ = 1 << 20
#: Deflated Explicit VR Little Endian (PS3.5 A.5): positions are those of the inflated
#: stream, so such a file is always read whole.
_DEFLATED = "1.2.840.10008.1.2.1.99"
#: Tenants whose base URLs are remembered (least recently used forgotten first).
MAX_KNOWN_TENANTS = 4096


@dataclass(frozen=True, slots=True)
class SeriesState:
    """A series as the index lists it now, and the ETag of its metadata."""

    tenant_id: str
    study_uid: str
    series_uid: str
    records: tuple[InstanceRecord, ...]
    etag: str


def instance_version(record: InstanceRecord) -> str:
    """Fingerprint of the stored object an index record describes: where it is, its
    size and the indexed attributes that tell one version from another."""
    r = record
    text = (
        f"{FORMAT}|{r.blob_key}|{r.size}|{r.sop_class_uid}|{r.transfer_syntax_uid}|"
        f"{r.instance_number}|{r.number_of_frames}|{r.rows}|{r.columns}|{r.content_date}|"
        f"{r.content_time}|{r.image_position_patient}|{r.window_center}|{r.window_width}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _etag(parts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class MetadataService:
    """Instance, series and study metadata and bulk data locations."""

    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        store: BlobStore,
        executor: Executor,
        *,
        threshold: int = 1024,
        bases: Sequence[tuple[str, str]] = (),
        rebuild_on_event: bool = False,
        cache: FailSafeCache | None = None,
        cache_ttl: float = 600.0,
    ) -> None:
        self.index = index
        #: Series aggregates by their content address (the key holds the ETag).
        self.cache = cache
        self.cache_ttl = cache_ttl
        self.blobs = blobs
        self.store = store
        self.threshold = threshold
        #: With duplicate policy "replace" a new version may reuse a stored key of an
        #: older one: then every event rebuilds, rather than trust what is stored.
        self.rebuild_on_event = rebuild_on_event
        self._executor = executor
        #: Per tenant, the base URLs its clients use (most recent last).
        self._bases: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()
        for tenant_id, base in bases:
            self.note_base(tenant_id, base)
        self._building: dict[str, asyncio.Future[bytes]] = {}
        self._latest: dict[tuple[str, str, str, str], str] = {}
        #: Instance metadata objects built from stored files (observability, tests).
        self.instances_built = 0
        self.series_built = 0

    async def _cpu(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    # -- bases ---------------------------------------------------------------------------

    def note_base(self, tenant_id: str, base: str) -> None:
        """Remember a base URL the clients of ``tenant_id`` use (its own DICOMweb
        service), so the worker prepares that tenant's aggregates for it and for no
        other tenant."""
        known = self._bases.setdefault(tenant_id, OrderedDict())
        self._bases.move_to_end(tenant_id)
        while len(self._bases) > MAX_KNOWN_TENANTS:
            self._bases.popitem(last=False)
        known[base] = None
        known.move_to_end(base)
        while len(known) > MAX_KNOWN_BASES:
            known.popitem(last=False)

    def bases_of(self, tenant_id: str) -> list[str]:
        return list(self._bases.get(tenant_id, ()))

    # -- the index -----------------------------------------------------------------------

    async def series_state(
        self, tenant_id: str, study_uid: str, series_uid: str, base: str
    ) -> SeriesState:
        records = await self.index.list_instances(tenant_id, study_uid, series_uid)
        if not records:
            raise NotFound(f"series {series_uid} of study {study_uid} not found")
        return self._state(tenant_id, study_uid, series_uid, records, base)

    def _state(
        self,
        tenant_id: str,
        study_uid: str,
        series_uid: str,
        records: Sequence[InstanceRecord],
        base: str,
    ) -> SeriesState:
        etag = _etag([f"{FORMAT}|{self.threshold}|{base}", *(instance_version(r) for r in records)])
        return SeriesState(tenant_id, study_uid, series_uid, tuple(records), etag)

    async def study_states(self, tenant_id: str, study_uid: str, base: str) -> list[SeriesState]:
        """The study's series (in the order of their first instance), ``NotFound`` if
        the study has no instance."""
        records = await self.index.list_instances(tenant_id, study_uid)
        if not records:
            raise NotFound(f"study {study_uid} not found")
        by_series: dict[str, list[InstanceRecord]] = {}
        for record in records:
            by_series.setdefault(record.series_instance_uid, []).append(record)
        return [
            self._state(tenant_id, study_uid, series, members, base)
            for series, members in by_series.items()
        ]

    async def instance_record(
        self, tenant_id: str, study_uid: str, series_uid: str, sop_uid: str
    ) -> InstanceRecord:
        return await find_instance(self.index, tenant_id, study_uid, series_uid, sop_uid)

    # -- instances -----------------------------------------------------------------------

    def _instance_key(self, record: InstanceRecord) -> str:
        return instance_metadata_key(
            record.tenant_id,
            record.study_instance_uid,
            record.series_instance_uid,
            record.sop_instance_uid,
            instance_version(record),
        )

    async def instance_object(
        self, record: InstanceRecord, *, rebuild: bool = False, verify: bool = False
    ) -> bytes:
        """The stored metadata object of an instance (JSON bytes), built if missing.

        With ``verify``, a built object is kept only if the index still holds that
        version of the instance after it was stored: one deleted meanwhile
        (``services.deletion`` removes the objects after its commit) leaves no stale
        object for the same instance stored again."""
        key = self._instance_key(record)
        if not rebuild:
            with contextlib.suppress(NotFound):
                return await self.store.get(key)
        prefix = (
            f"/studies/{record.study_instance_uid}/series/{record.series_instance_uid}"
            f"/instances/{record.sop_instance_uid}/bulkdata/"
        )
        try:
            if record.size > LARGE_OBJECT_BYTES and record.transfer_syntax_uid != _DEFLATED:
                built = await self._build_large(record, prefix)
            else:
                part10 = await self.blobs.get(record.blob_key)
                built = await self._cpu(_build_object, part10, self.threshold, prefix)
        except NotFound as exc:
            raise NotFound(
                f"the stored object of instance {record.sop_instance_uid} is missing"
            ) from exc
        await self.store.put(key, [built])
        self.instances_built += 1
        if verify:
            current = await self.index.get_instance(record.tenant_id, record.sop_instance_uid)
            if current is None or self._instance_key(current) != key:
                with contextlib.suppress(Exception):
                    await self.store.delete(key)
        return built

    async def _build_large(self, record: InstanceRecord, prefix: str) -> bytes:
        """The metadata object of a large file, parsed in a CPU thread from ranged reads
        (run on this event loop), holding about one read buffer of it at a time."""
        loop = asyncio.get_running_loop()
        key = record.blob_key
        size = await self.blobs.size(key)

        def read_range(offset: int, length: int) -> bytes:
            future = asyncio.run_coroutine_threadsafe(
                self.blobs.read_range(key, offset, length), loop
            )
            return future.result()

        def build() -> bytes:
            reader = RangeReader(read_range, size, block=LARGE_OBJECT_READ)
            built = build_instance_metadata_from(
                cast(BinaryIO, reader), threshold=self.threshold, uri_prefix=prefix
            )
            return json.dumps(built, ensure_ascii=False, separators=(",", ":")).encode()

        return await self._cpu(build)

    async def instance_metadata(self, record: InstanceRecord, base: str) -> dict[str, Any]:
        """PS3.18 10.4.1.1.6 for one instance: its DICOM JSON data set."""
        stored = json.loads(await self.instance_object(record))
        dataset: dict[str, Any] = with_base(stored["dataset"], base)
        return dataset

    def instance_etag(self, record: InstanceRecord, base: str) -> str:
        return _etag([f"{FORMAT}|{self.threshold}|{base}", instance_version(record)])

    async def bulk_data(self, record: InstanceRecord, path: str) -> tuple[BulkRef, bytes | None]:
        """Where the bulk value at ``path`` lies in the stored file; when it is not
        stored as is (deflated data set), its bytes too.  ``NotFound`` if none."""
        stored = json.loads(await self.instance_object(record))
        location = stored["bulk"].get(path)
        if location is None:
            raise NotFound(f"instance {record.sop_instance_uid} has no bulk data {path}")
        ref = BulkRef(location[0], location[1])
        if ref.offset is not None:
            return ref, None
        part10 = await self.blobs.get(record.blob_key)
        return ref, await self._cpu(bulk_value, part10, path)

    # -- series and studies -------------------------------------------------------------

    async def series_gzip(self, state: SeriesState, base: str) -> bytes:
        """The series' metadata (a DICOM JSON array), gzip'd: the stored aggregate, or
        one built now (and stored) if it is missing."""
        key = series_metadata_key(state.tenant_id, state.study_uid, state.series_uid, state.etag)
        if self.cache is not None and self.cache_ttl > 0:
            cached = await self.cache.get(f"series-metadata:{key}")
            if cached is not None:
                return cached
        with contextlib.suppress(NotFound):
            body = await self.store.get(key)
            await self._keep(key, body)
            return body
        pending = self._building.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled
                # The request building it went away: build it here.
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._building[key] = future
        try:
            body = await self._build_series(state, base, key)
            future.set_result(body)
            return body
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if unawaited
            raise
        finally:
            del self._building[key]

    async def _build_series(self, state: SeriesState, base: str, key: str) -> bytes:
        objects = await self._gather_objects(state.records)
        body = await self._cpu(_aggregate, objects, base)
        await self.store.put(key, [body])
        if not await self._still_current(state, base):
            return body  # served to this request only; nothing kept
        await self._keep(key, body)
        self.series_built += 1
        slot = (state.tenant_id, state.study_uid, state.series_uid, base)
        previous = self._latest.get(slot)
        self._latest[slot] = key
        if previous is not None and previous != key:
            with contextlib.suppress(Exception):
                await self.store.delete(previous)
        return body

    async def _still_current(self, state: SeriesState, base: str) -> bool:
        """Whether the series is as ``state`` saw it, after its aggregate was stored;
        if not (instances deleted meanwhile), the aggregate and the objects of the
        instances gone are removed again, so that none outlives a deletion."""
        records = await self.index.list_instances(
            state.tenant_id, state.study_uid, state.series_uid
        )
        if (
            records
            and self._state(state.tenant_id, state.study_uid, state.series_uid, records, base).etag
            == state.etag
        ):
            return True
        now = {self._instance_key(r) for r in records}
        stale = [
            series_metadata_key(state.tenant_id, state.study_uid, state.series_uid, state.etag),
            *(k for k in map(self._instance_key, state.records) if k not in now),
        ]
        for key in stale:
            with contextlib.suppress(Exception):
                await self.store.delete(key)
        await self.drop_cached(stale)
        return False

    async def _keep(self, key: str, body: bytes) -> None:
        if self.cache is not None and self.cache_ttl > 0:
            await self.cache.set(f"series-metadata:{key}", body, self.cache_ttl)

    async def _gather_objects(self, records: Sequence[InstanceRecord]) -> list[bytes]:
        limit = asyncio.Semaphore(8)

        async def one(record: InstanceRecord) -> bytes | None:
            async with limit:
                try:
                    return await self.instance_object(record)
                except NotFound as exc:  # missing or unparsable file: leave it out
                    log.warning("metadata of %s left out: %s", record.sop_instance_uid, exc)
                    return None

        found = await asyncio.gather(*(one(r) for r in records))
        return [o for o in found if o is not None]

    async def study_json(self, states: Sequence[SeriesState], base: str) -> bytes:
        """The study's metadata: the arrays of its series, joined (JSON bytes)."""
        bodies = [await self.series_gzip(state, base) for state in states]
        return await self._cpu(_join_arrays, bodies)

    # -- deletion ------------------------------------------------------------------------

    def forget(
        self, before: Sequence[InstanceRecord], deleted: Sequence[InstanceRecord]
    ) -> list[str]:
        """The metadata-store keys made stale by deleting ``deleted`` from the series
        listed in ``before`` (as the index had them): the deleted instances' objects and
        the series aggregates of that state for every known base URL (the cached copies
        of those are dropped by ``drop_cached``)."""
        keys = {self._instance_key(record) for record in deleted}
        by_series: dict[tuple[str, str, str], list[InstanceRecord]] = {}
        for record in before:
            slot = (record.tenant_id, record.study_instance_uid, record.series_instance_uid)
            by_series.setdefault(slot, []).append(record)
        touched = {(r.tenant_id, r.study_instance_uid, r.series_instance_uid) for r in deleted}
        for tenant_id, study_uid, series_uid in touched:
            records = by_series.get((tenant_id, study_uid, series_uid), [])
            for base in self.bases_of(tenant_id):
                if records:
                    state = self._state(tenant_id, study_uid, series_uid, records, base)
                    keys.add(series_metadata_key(tenant_id, study_uid, series_uid, state.etag))
                latest = self._latest.pop((tenant_id, study_uid, series_uid, base), None)
                if latest is not None:
                    keys.add(latest)
        return sorted(keys)

    async def drop_cached(self, keys: Sequence[str]) -> None:
        """Drop cached series aggregates stored under these metadata-store keys."""
        if self.cache is None:
            return
        for key in keys:
            if key.endswith(".json.gz"):
                await self.cache.delete(f"series-metadata:{key}")

    # -- kept up to date from events ------------------------------------------------------

    async def on_stored(self, event: StoredEvent) -> bool:
        """Build the metadata of the instance an event announces (as the index has it
        now); False if it is gone."""
        record = await self.index.get_instance(event.tenant_id, event.sop_instance_uid)
        if record is None:
            return False
        await self.instance_object(
            record, rebuild=self.rebuild_on_event or event.replaced, verify=True
        )
        return True

    async def refresh_series(self, tenant_id: str, study_uid: str, series_uid: str) -> None:
        """Make the series aggregate ready for every base URL of the tenant."""
        for base in self.bases_of(tenant_id):
            try:
                state = await self.series_state(tenant_id, study_uid, series_uid, base)
            except NotFound:
                return
            await self.series_gzip(state, base)


def _build_object(part10: bytes, threshold: int, prefix: str) -> bytes:
    built = build_instance_metadata(part10, threshold=threshold, uri_prefix=prefix)
    return json.dumps(built, ensure_ascii=False, separators=(",", ":")).encode()


def _aggregate(objects: Sequence[bytes], base: str) -> bytes:
    datasets = [with_base(json.loads(o)["dataset"], base) for o in objects]
    text = json.dumps(datasets, ensure_ascii=False, separators=(",", ":"))
    return gzip.compress(text.encode(), compresslevel=6, mtime=0)


def _join_arrays(bodies: Sequence[bytes]) -> bytes:
    inner = [gzip.decompress(b).strip()[1:-1] for b in bodies]
    return b"[" + b",".join(i for i in inner if i) + b"]"


class MetadataWorker:
    """The series metadata builder, consumer group ``metadata`` of ``instance.stored``:
    builds each instance's metadata at once and its series' aggregate once no new
    instance arrived for ``quiet_seconds``.

    Idempotent: an event handled twice finds the metadata built (a replaced instance
    is rebuilt, which is the same work again).  A failure raises, so the bus retries
    the event and dead-letters it in the end; a read builds whatever was missed.
    """

    GROUP = "metadata"
    #: Events handled at once (their CPU work shares the retrieve threads).
    CONCURRENCY = 16

    def __init__(self, service: MetadataService, *, quiet_seconds: float = 1.0) -> None:
        self.service = service
        self._quiet = quiet_seconds
        self._dirty: dict[tuple[str, str, str], float] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._busy = 0
        self.processed = 0

    @property
    def consumer(self) -> Consumer:
        return Consumer(self.GROUP, self.handle, INSTANCE_STORED, self.CONCURRENCY)

    async def start(self) -> None:
        """Start the series flusher (the consumer is subscribed by ``Workers``)."""
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="metadata-series")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None

    async def settled(self) -> None:
        """Wait until no handled event's series waits for its aggregate (tests; wrap
        it in ``asyncio.timeout``)."""
        while self._dirty or self._busy:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def handle(self, delivery: Delivery) -> None:
        event = StoredEvent.from_json(delivery.payload)
        self._busy += 1
        try:
            await self.service.on_stored(event)
        finally:
            self._busy -= 1
        key = (event.tenant_id, event.study_instance_uid, event.series_instance_uid)
        self._dirty[key] = asyncio.get_running_loop().time()
        self.processed += 1

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self._quiet, 0.1) or 0.01)
            now = loop.time()
            for key, last in list(self._dirty.items()):
                if now - last < self._quiet:
                    continue
                self._busy += 1
                try:
                    if self._dirty.get(key) == last:
                        del self._dirty[key]
                    await self.service.refresh_series(*key)
                except Exception:
                    log.exception("metadata of series %s could not be built", key[2])
                finally:
                    self._busy -= 1
