"""Users' own consumers (docs/events.md "Your own consumer"): named in
``[workers] consumers`` (or ``dicomcloud worker --consumer``), they get every stored
instance as an event, a failing one is retried then dead-lettered, and a consumer that
cannot be loaded stops start-up with a message naming it."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from conftest import DICOMCLOUD, ArchiveFactory, clean_environment, require
from dicomcloud.errors import ConfigurationError
from dicomcloud.events import MemoryEventBus
from dicomcloud.workers import Consumer, load_consumer
from integration import ai_router
from integration.support import new_instance


@pytest.fixture(autouse=True)
def _fresh_router() -> None:
    ai_router.sent.clear()
    ai_router.failing_studies.clear()


async def test_a_configured_consumer_gets_each_stored_instance(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(workers__consumers=["integration.ai_router:consumer"])
    first, second = new_instance(), new_instance()

    stored = await local.stow([first.data, second.data])
    assert stored.status_code == 200, stored.text
    async with asyncio.timeout(30):
        while len(ai_router.sent) < 2:  # noqa: ASYNC110 - the relay publishes after a linger
            await asyncio.sleep(0.05)

    tenant = local.archive.settings.default_tenant
    assert sorted(ai_router.sent) == sorted(
        [(tenant, first.study, first.sop), (tenant, second.study, second.sop)]
    )


async def test_a_failing_consumer_dead_letters_the_event_and_goes_on(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(
        workers__consumers=["integration.ai_router:route_to_ai"],
        workers__max_attempts=2,
        workers__retry_backoff_seconds=0.05,
    )
    bus = local.archive.bus
    assert isinstance(bus, MemoryEventBus)
    dead_letters = bus.subscribe("instance.stored.dlq")
    bad, good = new_instance(), new_instance()
    ai_router.failing_studies.add(bad.study)

    assert (await local.stow([bad.data])).status_code == 200
    letter = await asyncio.wait_for(dead_letters.get(), timeout=30)
    assert (await local.stow([good.data])).status_code == 200
    async with asyncio.timeout(30):
        while not ai_router.sent:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    assert json.loads(letter.payload)["sop_instance_uid"] == bad.sop
    assert letter.key == f"{local.archive.settings.default_tenant}/{bad.study}"
    assert [sop for _, _, sop in ai_router.sent] == [good.sop]
    # A function is its own consumer group, named by its spec.
    assert bus.backlog("instance.stored", "integration.ai_router:route_to_ai") == 0


def test_consumer_specs_are_loaded_or_refused_with_a_reason() -> None:
    loaded = load_consumer("integration.ai_router:consumer")
    assert isinstance(loaded, Consumer)
    assert loaded.group == "ai-router"
    assert load_consumer("integration.ai_router:route_to_ai").group == (
        "integration.ai_router:route_to_ai"
    )
    with pytest.raises(ConfigurationError, match="no_such_module"):
        load_consumer("integration.no_such_module:handler")
    with pytest.raises(ConfigurationError, match="neither"):
        load_consumer("integration.ai_router:sent")


async def test_an_unloadable_consumer_stops_start_up(make_archive: ArchiveFactory) -> None:
    with pytest.raises(ConfigurationError, match=r"integration\.ai_router:missing"):
        await make_archive(workers__consumers=["integration.ai_router:missing"])


def test_worker_needs_a_shared_bus(tmp_path: Path) -> None:
    require(DICOMCLOUD.exists(), f"{DICOMCLOUD} is not installed (uv sync)")
    result = subprocess.run(
        [str(DICOMCLOUD), "worker", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=clean_environment(),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1
    assert "needs a bus shared with dicomcloud serve" in " ".join(result.stderr.split())
