"""Relay committed outbox rows to the event bus (transactional outbox pattern).

An event is written in the same transaction as its instance, so it exists if and only
if the instance does; the relay publishes it afterwards and deletes it only once the
bus accepted it.  A crash between the two republishes the event (at-least-once), it
never loses one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dicomcloud.ports import EventBus, Index

log = logging.getLogger(__name__)


class OutboxRelay:
    """Background task: poll the outbox (or wake on ``notify``) and publish."""

    def __init__(
        self,
        index: Index,
        bus: EventBus,
        *,
        batch: int = 500,
        idle_seconds: float = 1.0,
        linger_seconds: float = 0.2,
    ) -> None:
        self._index = index
        self._bus = bus
        self._batch = batch
        self._idle = idle_seconds
        # Relaying costs two index transactions whatever the batch size: let events
        # gather for a moment after a wake-up instead of relaying them one by one.
        self._linger = linger_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.relayed = 0

    def notify(self) -> None:
        """Something was committed: relay soon rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.relay_once()  # drain what is committed, best effort

    async def relay_once(self) -> int:
        """Publish one batch; return how many messages were relayed.  The batch is
        deleted from the outbox only once the bus took all of it (if it fails half
        way, the next attempt publishes the whole batch again: at least once)."""
        messages = await self._index.fetch_outbox(self._batch)
        if not messages:
            return 0
        await self._bus.publish_many([(m.topic, m.key, m.payload) for m in messages])
        await self._index.mark_published([m.id for m in messages])
        self.relayed += len(messages)
        return len(messages)

    async def _run(self) -> None:
        backoff = self._idle
        while True:
            try:
                count = await self.relay_once()
                backoff = self._idle
            except Exception:
                log.exception("outbox relay failed; retrying in %.1fs", backoff)
                count = 0
                backoff = min(backoff * 2, 30.0)
            if count >= self._batch:
                continue
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that arrives together with the wake-up (CPython gh-86296),
            # and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._wake.wait()
                await asyncio.sleep(self._linger)
