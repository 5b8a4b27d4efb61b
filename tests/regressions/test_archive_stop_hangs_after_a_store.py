"""Bug (fixed in src/dicomcloud/events/outbox.py): ``Archive.stop()`` could hang forever
right after an instance was stored - at the end of ``dicomcloud import``, on shutdown,
in any test that stores then stops.

The commit of the last instance calls ``OutboxRelay.notify()``, which completed the
relay's ``asyncio.wait_for(self._wake.wait(), ...)`` before the relay task ran again;
``OutboxRelay.stop()`` then cancelled the task, and Python 3.11's ``wait_for`` returns
the inner result instead of raising CancelledError when both happen in the same step
(CPython gh-86296, fixed in 3.12): the cancellation was lost, the relay looped on, and
``await self._task`` never returned.  The relay now waits with ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dicomcloud.app import Archive
from dicomcloud.config import load_settings
from dicomcloud.services.ingest import IngestContext
from integration.support import new_instance

pytestmark = pytest.mark.timeout(60)


async def test_stop_right_after_a_store_returns(tmp_path: Path) -> None:
    archive = await Archive.open(load_settings(data_dir=tmp_path / "data"))
    await archive.start()
    relay_task = archive.relay._task
    assert relay_task is not None
    try:
        result = await archive.ingest.store_part10(
            new_instance().data, IngestContext(tenant_id="default", source="TEST")
        )
        assert result.ok

        started = time.monotonic()
        # Directly, not in a new task: the relay must not get a turn in between.
        async with asyncio.timeout(3):  # cancels the hung stop() (which swallows it)
            await archive.stop()

        assert time.monotonic() - started < 2
    finally:
        if not relay_task.done():  # clean up after the hang
            relay_task.cancel()
            await asyncio.gather(relay_task, return_exceptions=True)
            archive.relay._task = None
            await archive.stop()
