"""Composition root: settings -> backends -> services (transports attach to these)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from dicomcloud.config import Settings
from dicomcloud.events import OutboxRelay, open_event_bus
from dicomcloud.ports import BlobStore, EventBus, Index
from dicomcloud.services.ingest import IngestService
from dicomcloud.services.query import QueryService
from dicomcloud.services.retrieve import RetrieveService
from dicomcloud.storage import FilesystemBlobStore, open_blob_store

log = logging.getLogger(__name__)


async def open_index(url: str, *, migrate: bool = True, pool_size: int = 10) -> Index:
    """The index for ``url``; applies pending migrations first when ``migrate``."""
    from dicomcloud.index.engine import create_engine_for
    from dicomcloud.index.migrate import migrate_engine
    from dicomcloud.index.sql_index import SqlIndex

    engine = create_engine_for(url, pool_size=pool_size)
    if migrate:
        await migrate_engine(engine)
    return SqlIndex(engine)


def sweep_temporary_files(settings: Settings) -> int:
    """Delete what interrupted writes left behind (STOW-RS spool files, blob temp
    files).  Nothing there was ever acknowledged; call before serving starts."""
    removed = 0
    spool = settings.data_dir / "spool"
    if spool.is_dir():
        for leftover in spool.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
    blobs = open_blob_store(settings.storage_url, fsync=False)
    if isinstance(blobs, FilesystemBlobStore):
        removed += blobs.sweep_temporary()
    if removed:
        log.info("removed %d temporary file(s) left by interrupted writes", removed)
    return removed


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
    _started: bool = field(default=False, repr=False)

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True) -> Archive:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        index = await open_index(
            settings.index_url, migrate=migrate, pool_size=settings.index.pool_size
        )
        blobs = open_blob_store(settings.storage_url, fsync=settings.storage.fsync)
        bus = open_event_bus(settings.events.url)
        ingest = IngestService(
            index,
            blobs,
            duplicate_policy=settings.ingest.duplicate_policy,
            max_batch=settings.ingest.max_batch,
        )
        relay = OutboxRelay(index, bus)
        ingest.committer.on_commit.append(relay.notify)
        spool_dir = settings.data_dir / "spool"
        spool_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            settings,
            index,
            blobs,
            bus,
            ingest,
            RetrieveService(index, blobs),
            relay,
            spool_dir,
            QueryService(index),
        )

    async def start(self, *, relay: bool = True) -> None:
        """Start the group committer and (in one process of a node) the outbox relay."""
        if not self._started:
            await self.ingest.start()
            if relay:
                await self.relay.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            await self.ingest.stop()
            await self.relay.stop()
            self._started = False
        await self.bus.close()
        await self.index.close()
