"""The access-log sink: access records written in batches, off the request path.

Transports hand each finished request or association to :meth:`AccessLogSink.put`,
which only appends to a bounded queue.  One background task writes what gathered, at
most one transaction per ``linger_seconds`` (so a busy archive writes a few rows-heavy
transactions a second, not one per request), then publishes the batch on the event
bus (topic ``access``).

Losing records is avoided rather than cheapened: a batch the database refuses is kept
and retried with back-off while the queue keeps filling; once the queue is full a
request waits up to ``block_seconds`` for room (back-pressure), and only then is its
record dropped, counted in :attr:`AccessLogSink.dropped` and logged.  :meth:`stop`
writes everything queued before it returns.  The bus copy is best effort (the database
row is the record of truth); a failed publish is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from dicomcloud.domain.access import ACCESS_TOPIC, AccessRecord
from dicomcloud.ports import AccessLogStore, EventBus

log = logging.getLogger(__name__)

#: Seconds between two retention purges.
PURGE_INTERVAL = 3600.0
#: Longest back-off between two attempts at writing a refused batch.
MAX_BACKOFF = 30.0


class AccessLogSink:
    """Queue + batch writer + publisher of access records (one per process)."""

    def __init__(
        self,
        store: AccessLogStore,
        bus: EventBus | None,
        *,
        queue_size: int = 100_000,
        block_seconds: float = 5.0,
        batch: int = 500,
        linger_seconds: float = 1.0,
        retention_days: int = 0,
    ) -> None:
        self.store = store
        self._bus = bus
        self._queue: asyncio.Queue[AccessRecord] = asyncio.Queue(queue_size)
        self._block = block_seconds
        self._batch = batch
        self._linger = linger_seconds
        self._retention = retention_days
        self._hurry = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self._closed = False
        #: records written to the store, published on the bus, dropped (queue full)
        self.written = 0
        self.published = 0
        self.dropped = 0

    async def start(self, *, purge: bool = True) -> None:
        """Start the writer (and, with ``purge`` and a retention, the hourly purge)."""
        self._closed = False
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_forever(), name="access-log")
        if purge and self._retention > 0 and self._purger is None:
            self._purger = asyncio.create_task(self._purge_forever(), name="access-log-purge")

    async def put(self, record: AccessRecord) -> None:
        """Queue ``record``; when the queue is full wait up to ``block_seconds`` for
        room, then drop it (counted, logged)."""
        if not self._closed:
            try:
                self._queue.put_nowait(record)
                return
            except asyncio.QueueFull:
                pass
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._block):
                    await self._queue.put(record)
                    return
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning(
                "access log: %d record(s) dropped so far (%s); is the index database slow or down?",
                self.dropped,
                "stopped" if self._closed else "queue full",
            )

    async def flush(self) -> None:
        """Return once every record queued so far is written (and published)."""
        if self._writer is None:
            return
        self._hurry.set()
        try:
            await self._queue.join()
        finally:
            if not self._closed:
                self._hurry.clear()

    async def stop(self, grace: float = 30.0) -> None:
        """Write what is queued (waiting at most ``grace`` seconds), then stop."""
        self._closed = True
        self._hurry.set()
        if self._writer is not None:
            try:
                async with asyncio.timeout(grace):
                    await self._queue.join()
            except TimeoutError:
                log.error("access log: %d record(s) not written at shutdown", self._queue.qsize())
        for task in (self._writer, self._purger):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._writer = self._purger = None

    async def _write_forever(self) -> None:
        while True:
            first = await self._queue.get()
            if not self._hurry.is_set():
                # Let records gather: one transaction per linger period, not per request.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger):
                        await self._hurry.wait()
            batch = [first]
            while len(batch) < self._batch:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[AccessRecord]) -> None:
        backoff = 0.1
        while True:
            try:
                await self.store.append(batch)
                self.written += len(batch)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "access log: writing %d record(s) failed; retrying in %.1fs",
                    len(batch),
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        if self._bus is None:
            return
        for record in batch:
            try:
                await self._bus.publish(ACCESS_TOPIC, record.key, record.to_json())
                self.published += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("access log: publishing a record on the bus failed")

    async def _purge_forever(self) -> None:
        while True:
            before = datetime.now(UTC) - timedelta(days=self._retention)
            try:
                removed = await self.store.purge(before)
                if removed:
                    log.info("access log: %d record(s) older than %s removed", removed, before)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("access log: the retention purge failed")
            await asyncio.sleep(PURGE_INTERVAL)
