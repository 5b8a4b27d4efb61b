"""A broker outage loses no event (DESIGN.md 5): the outbox keeps what the bus does
not take, the relay retries with backoff, and once Redis is reachable again every
event is published and consumed (the series metadata builder handles it)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from buses import REDIS_URL, TcpProxy, drop_redis_prefix, require_redis, unique_prefix
from conftest import ArchiveFactory
from dicomcloud.domain.events import INSTANCE_STORED
from integration.support import new_instance

pytestmark = pytest.mark.backend


async def _all_acknowledged(
    local: Any, processed: int, client: aioredis.Redis, stream: str
) -> bool:
    """The outbox is empty, both events were handled and the group acknowledged them."""
    if await local.archive.index.fetch_outbox(10) or processed < 2:
        return False
    return (await client.xpending(stream, "metadata"))["pending"] == 0


async def test_events_wait_in_the_outbox_while_redis_is_down(make_archive: ArchiveFactory) -> None:
    require_redis()
    prefix = unique_prefix()
    redis_host, _, redis_port = REDIS_URL.split("//")[1].split("/")[0].partition(":")
    proxy = TcpProxy(redis_host, int(redis_port or 6379))  # down: nothing listens yet
    try:
        local = await make_archive(
            events__url=f"redis://127.0.0.1:{proxy.port}/0?stream_prefix={prefix}:"
            "&claim_idle_seconds=1&block_seconds=0.2",
            metadata__quiet_seconds=0.1,
        )
        worker = local.archive.metadata_worker
        assert worker is not None
        first, second = new_instance(), new_instance()

        stored = await local.stow([first.data, second.data])  # ingest never waits for the bus
        assert stored.status_code == 200, stored.text
        await asyncio.sleep(3.0)  # the relay tries, and fails, meanwhile
        waiting = await local.archive.index.fetch_outbox(10)
        assert sorted(json.loads(m.payload)["sop_instance_uid"] for m in waiting) == sorted(
            [first.sop, second.sop]
        )
        assert worker.processed == 0

        await proxy.up()
        stream = f"{prefix}:{INSTANCE_STORED}"
        client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            # The builder acknowledges an event after handling it, so wait for the
            # acknowledgement itself, not only for the handler count.
            async with asyncio.timeout(90):
                while not await _all_acknowledged(local, worker.processed, client, stream):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            entries = await client.xrange(stream)
            pending = await client.xpending(stream, "metadata")
        finally:
            await client.aclose()
        published = [json.loads(fields["payload"])["sop_instance_uid"] for _, fields in entries]
        assert sorted(published) == sorted([first.sop, second.sop])
        assert pending["pending"] == 0  # the metadata builder acknowledged both
        await local.close()
    finally:
        await proxy.down()
        drop_redis_prefix(prefix)
