"""Composition root: settings -> backends -> services (transports attach to these)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dicomcloud.cache import FailSafeCache, MemoryCache, open_cache
from dicomcloud.config import Settings
from dicomcloud.domain.extended_tags import ExtendedTag
from dicomcloud.domain.records import DuplicatePolicy
from dicomcloud.events import OutboxRelay, open_event_bus
from dicomcloud.ports import (
    AccessLogStore,
    BlobStore,
    DerivedCopyStore,
    EventBus,
    Index,
    InstanceWrite,
    RetryPolicy,
)
from dicomcloud.services.access_log import AccessLogSink
from dicomcloud.services.deletion import DeletionService
from dicomcloud.services.ingest import IngestService
from dicomcloud.services.metadata import MetadataService, MetadataWorker
from dicomcloud.services.query import QueryService
from dicomcloud.services.retrieve import RetrieveService
from dicomcloud.services.search_cache import SearchCache
from dicomcloud.services.viewer_ready import TranscoderWorker, ViewerReadyCopies
from dicomcloud.storage import FilesystemBlobStore, S3Options, open_blob_store
from dicomcloud.workers import Consumer, Workers, load_consumer

log = logging.getLogger(__name__)


async def open_index(
    url: str,
    *,
    migrate: bool = True,
    pool_size: int = 10,
    extended_tags: Sequence[ExtendedTag] = (),
) -> Index:
    """The index for ``url``; applies pending migrations first when ``migrate``;
    ``extended_tags`` are the configured extended query tags."""
    from dicomcloud.index.engine import create_engine_for
    from dicomcloud.index.migrate import migrate_engine
    from dicomcloud.index.sql_index import SqlIndex

    engine = create_engine_for(url, pool_size=pool_size)
    if migrate:
        await migrate_engine(engine)
    return SqlIndex(engine, extended_tags)


def s3_options(settings: Settings) -> S3Options:
    """The ``[storage] s3_*`` settings (used by every ``s3://`` store)."""
    s = settings.storage
    return S3Options(
        access_key_id=s.s3_access_key_id,
        secret_access_key=s.s3_secret_access_key,
        session_token=s.s3_session_token,
        region=s.s3_region,
        endpoint_url=s.s3_endpoint_url,
        multipart_threshold=s.s3_multipart_threshold,
        part_size=s.s3_part_size,
        max_concurrency=s.s3_max_concurrency,
        max_retries=s.s3_max_retries,
        retry_timeout=s.s3_retry_timeout,
        conditional_put=s.s3_conditional_put,
    )


def open_blobs(settings: Settings, url: str, *, fsync: bool | None = None) -> BlobStore:
    """The blob store at ``url`` (the storage or the metadata URL) with the settings:
    S3 options, and AES-256-GCM sealing when ``[storage.encryption]`` is enabled."""
    return open_blob_store(
        url,
        fsync=settings.storage.fsync if fsync is None else fsync,
        s3=s3_options(settings),
        encryption=settings.storage.encryption,
    )


def open_archive_cache(settings: Settings) -> FailSafeCache:
    """The ``[cache]`` backend, behind the fail-safe wrapper every user goes through."""
    c = settings.cache
    backend = open_cache(
        c.url,
        key_prefix=c.key_prefix,
        max_entries=c.max_entries,
        max_bytes=c.max_bytes,
        timeout=c.timeout_seconds,
    )
    return FailSafeCache(backend, retry_after=c.retry_after_seconds)


def open_access_store(index: Index) -> AccessLogStore:
    """The access log's store: the index database's ``access_log`` table (sharing the
    index's transactions runner), or memory next to an in-memory index."""
    from dicomcloud.index.access_log import SqlAccessLog
    from dicomcloud.index.memory_access_log import MemoryAccessLog
    from dicomcloud.index.sql_index import SqlIndex

    if isinstance(index, SqlIndex):
        return SqlAccessLog(index.runner)
    return MemoryAccessLog()


def open_copy_store(index: Index) -> DerivedCopyStore:
    """Where viewer-ready copies are recorded: the index database's ``derived_copy``
    and ``transcode_failure`` tables, or memory next to an in-memory index."""
    from dicomcloud.index.derived import SqlDerivedCopies
    from dicomcloud.index.memory_derived import MemoryDerivedCopies
    from dicomcloud.index.sql_index import SqlIndex

    if isinstance(index, SqlIndex):
        return SqlDerivedCopies(index.runner)
    return MemoryDerivedCopies()


def sweep_temporary_files(settings: Settings) -> int:
    """Delete what interrupted writes left behind (STOW-RS spool files, blob temp
    files).  Nothing there was ever acknowledged; call before serving starts."""
    removed = 0
    spool = settings.data_dir / "spool"
    if spool.is_dir():
        for leftover in spool.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
    blobs = open_blobs(settings, settings.storage_url, fsync=False)
    if isinstance(blobs, FilesystemBlobStore):
        removed += blobs.sweep_temporary()
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes", removed)
    return removed


def _sql_index_type() -> type:
    from dicomcloud.index.sql_index import SqlIndex

    return SqlIndex


def configured_bases(settings: Settings) -> list[tuple[str, str]]:
    """(tenant, DICOMweb base URL) pairs known from ``server.base_url``: the default
    tenant's ``/dicom-web`` and each allow-listed tenant's ``/tenants/{t}/dicom-web``."""
    root = settings.server.base_url.rstrip("/")
    if not root:
        return []
    bases = [(settings.default_tenant, f"{root}/dicom-web")]
    bases += [(t, f"{root}/tenants/{t}/dicom-web") for t in settings.tenancy.tenants]
    return bases


@dataclass
class Archive:
    """Every long-lived component of one dicomcloud process."""

    settings: Settings
    index: Index
    blobs: BlobStore
    bus: EventBus
    ingest: IngestService
    retrieve: RetrieveService
    relay: OutboxRelay
    spool_dir: Path
    query: QueryService
    metadata: MetadataService
    #: Threads for CPU work of retrieve: metadata building, rendering (off the loop).
    cpu: ThreadPoolExecutor
    #: The cache (series metadata, QIDO-RS results; JWKS for the security layer).
    cache: FailSafeCache
    search_cache: SearchCache

    #: Where access records are kept (queried by ``/admin/access-log``).
    access_store: AccessLogStore
    #: The access-log sink; None with ``[audit] enabled = false``.
    access: AccessLogSink | None
    #: Deleting studies, series and instances (``[retention]``).
    deletion: DeletionService
    #: Viewer-ready copies (``[workers.transcoder]``); None when it is disabled.
    viewer_ready: ViewerReadyCopies | None = None
    _started: bool = field(default=False, repr=False)
    _metadata_worker: MetadataWorker | None = field(default=None, repr=False)
    _workers: Workers | None = field(default=None, repr=False)
    _transcoder: TranscoderWorker | None = field(default=None, repr=False)

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True) -> Archive:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        index = await open_index(
            settings.index_url,
            migrate=migrate,
            pool_size=settings.index.pool_size,
            extended_tags=settings.search.extended_tags(),
        )
        blobs = open_blobs(settings, settings.storage_url)
        bus = open_event_bus(settings.events.url)
        cache = open_archive_cache(settings)
        # A memory cache is private to its process: a commit in another worker could
        # not invalidate it, so QIDO results are cached there only with one worker.
        shared = not isinstance(cache.backend, MemoryCache) or settings.server.workers == 1
        search_cache = SearchCache(cache, ttl=settings.cache.qido_ttl_seconds, enabled=shared)
        ingest = IngestService(
            index,
            blobs,
            duplicate_policy=settings.ingest.duplicate_policy,
            max_batch=settings.ingest.max_batch,
        )
        relay = OutboxRelay(index, bus)
        ingest.committer.on_commit.append(relay.notify)

        async def invalidate(writes: Sequence[InstanceWrite]) -> None:
            await search_cache.invalidate(w.event.tenant_id for w in writes)

        ingest.committer.before_acknowledge.append(invalidate)
        spool_dir = settings.data_dir / "spool"
        spool_dir.mkdir(parents=True, exist_ok=True)
        cpu = ThreadPoolExecutor(settings.metadata.render_threads, thread_name_prefix="retrieve")
        audit = settings.audit
        access_store = open_access_store(index)
        access = (
            AccessLogSink(
                access_store,
                bus if audit.publish else None,
                queue_size=audit.queue_size,
                block_seconds=audit.block_seconds,
                batch=audit.batch,
                linger_seconds=audit.linger_seconds,
                retention_days=audit.retention_days,
            )
            if audit.enabled
            else None
        )
        metadata = MetadataService(
            index,
            blobs,
            open_blobs(settings, settings.metadata_url),
            cpu,
            threshold=settings.metadata.bulk_data_threshold,
            bases=configured_bases(settings),
            rebuild_on_event=settings.ingest.duplicate_policy is DuplicatePolicy.REPLACE,
            cache=cache,
            cache_ttl=settings.cache.metadata_ttl_seconds,
        )
        transcoder = settings.workers.transcoder
        viewer_ready = None
        if transcoder.enabled:
            viewer_ready = ViewerReadyCopies(
                index,
                blobs,
                open_copy_store(index),
                cpu,
                sources=transcoder.sources,
                target=transcoder.target,
                verify=transcoder.verify,
            )
        copies = viewer_ready.copies if viewer_ready is not None else None
        deletion = DeletionService(
            index,
            blobs,
            metadata=metadata,
            search_cache=search_cache,
            # the SQL copy rows go in the index transaction; memory ones are separate
            copies=None if isinstance(index, _sql_index_type()) else copies,
            on_commit=[relay.notify],
            enabled=settings.retention.allow_delete,
        )
        return cls(
            settings,
            index,
            blobs,
            bus,
            ingest,
            RetrieveService(index, blobs, copies=copies),
            relay,
            spool_dir,
            QueryService(index),
            metadata,
            cpu,
            cache,
            search_cache,
            access_store,
            access,
            deletion,
            viewer_ready,
        )

    async def start(self, *, relay: bool = True, workers: bool | None = None) -> None:
        """Start the group committer and (in one process of a node) the outbox relay,
        and with it the workers unless ``workers`` (default ``[workers] in_process``)
        is false."""
        if not self._started:
            if relay and (self.settings.workers.in_process if workers is None else workers):
                # Subscribed before the relay publishes anything (memory:// keeps only
                # what is published once a group exists), and before anything else
                # starts: a consumer that cannot be loaded stops start-up cleanly.
                await self.start_workers()
            await self.ingest.start()
            if self.access is not None:
                # One process of a node purges old records; every process writes its own.
                await self.access.start(purge=relay)
            if relay:
                await self.relay.start()
            self._started = True

    async def start_workers(self, extra: Sequence[str] = ()) -> None:
        """Start the metadata builder and the configured consumers (and ``extra``
        ones) on the bus: what ``dicomcloud worker`` runs."""
        if self._workers is not None:
            return
        config = self.settings.workers
        users = [load_consumer(spec) for spec in (*config.consumers, *extra)]
        consumers: list[Consumer] = []
        if config.metadata:
            self._metadata_worker = MetadataWorker(
                self.metadata, quiet_seconds=self.settings.metadata.quiet_seconds
            )
            await self._metadata_worker.start()
            consumers.append(self._metadata_worker.consumer)
        if self.viewer_ready is not None:
            self._transcoder = TranscoderWorker(
                self.viewer_ready, concurrency=config.transcoder.concurrency
            )
            consumers.append(self._transcoder.consumer)
        consumers.extend(users)
        retry = RetryPolicy(config.max_attempts, config.retry_backoff_seconds)
        self._workers = Workers(self.bus, consumers, retry)
        await self._workers.start()

    async def stop_workers(self) -> None:
        if self._workers is not None:
            await self._workers.stop()
            self._workers = None
        if self._metadata_worker is not None:
            await self._metadata_worker.stop()

    async def stop(self) -> None:
        if self._started:
            await self.ingest.stop()
            if self.access is not None:
                await self.access.stop()
            await self.relay.stop()
            self._started = False
        await self.stop_workers()
        await self.bus.close()
        await self.cache.close()
        await self.index.close()
        self.cpu.shutdown(wait=False, cancel_futures=True)

    @property
    def transcoder(self) -> TranscoderWorker | None:
        """The viewer-ready transcoder (None where it does not run)."""
        return self._transcoder

    @property
    def metadata_worker(self) -> MetadataWorker | None:
        """The series metadata builder (None where no workers run)."""
        return self._metadata_worker
