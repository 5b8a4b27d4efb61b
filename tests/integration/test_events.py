"""The instance-stored event reaches the event bus through the outbox (DESIGN.md 5).

One event per stored or replaced instance, none for a rejected one or a kept-first
duplicate, carrying what the seed's DicomStoreMeta carried; the outbox is empty once
the events are relayed.
"""

from __future__ import annotations

import asyncio
import json

from conftest import ArchiveFactory
from dicomcloud.domain.events import INSTANCE_STORED
from dicomcloud.events.memory import MemoryEventBus, Message
from integration.support import new_instance


async def _next(queue: asyncio.Queue[Message]) -> dict[str, object]:
    message = await asyncio.wait_for(queue.get(), timeout=10)
    assert message.topic == INSTANCE_STORED
    payload: dict[str, object] = json.loads(message.payload)
    assert message.key == f"{payload['tenant_id']}/{payload['study_instance_uid']}"
    return payload


async def test_stored_instances_are_published_once(make_archive: ArchiveFactory) -> None:
    local = await make_archive(ingest__duplicate_policy="replace")
    bus = local.archive.bus
    assert isinstance(bus, MemoryEventBus)
    queue = bus.subscribe(INSTANCE_STORED)
    first, second = new_instance(), new_instance()

    stored = await local.stow([first.data, second.data, b"not DICOM"])
    assert stored.status_code == 202

    events = {str(p["sop_instance_uid"]): p for p in [await _next(queue), await _next(queue)]}
    assert set(events) == {first.sop, second.sop}
    event = events[first.sop]
    assert event["study_instance_uid"] == first.study
    assert event["series_instance_uid"] == first.series
    assert event["sop_class_uid"] == first.sop_class
    assert event["file_size"] == len(first.data)
    assert event["source"] == "STOW-RS"
    assert event["replaced"] is False
    assert event["node_id"]
    assert event["version"] == 1

    replaced = await local.stow([first.data])
    assert replaced.status_code == 200
    again = await _next(queue)
    assert again["sop_instance_uid"] == first.sop
    assert again["replaced"] is True

    await asyncio.sleep(0.5)
    assert queue.empty()  # the rejected part made no event
    assert await local.archive.index.fetch_outbox(10) == []


async def test_kept_first_duplicate_makes_no_event(make_archive: ArchiveFactory) -> None:
    local = await make_archive()
    bus = local.archive.bus
    assert isinstance(bus, MemoryEventBus)
    queue = bus.subscribe(INSTANCE_STORED)
    instance = new_instance()

    assert (await local.stow([instance.data])).status_code == 200
    assert (await _next(queue))["sop_instance_uid"] == instance.sop
    assert (await local.stow([instance.data])).status_code == 202

    await asyncio.sleep(1.0)
    assert queue.empty()
