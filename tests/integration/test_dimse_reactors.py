"""The event-driven association reactors (dimse/reactors.py) end associations as
pynetdicom's polling ones do: on A-ABORT, on a dropped connection, on the network
timeout (PS3.8 9.1.5, 9.2), and the SCP keeps serving afterwards."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import ArchiveFactory, LocalArchive
from dicomcloud.dimse.reactors import PromptAssociation
from dicomcloud.dimse.server import DimseServer
from integration.support import (
    SECONDARY_CAPTURE_STORAGE,
    STATUS_SUCCESS,
    StoreSCU,
    new_instance,
)

pytestmark = pytest.mark.timeout(60)

CONTEXTS = [(SECONDARY_CAPTURE_STORAGE, "1.2.840.10008.1.2.1")]


async def started(local: LocalArchive) -> DimseServer:
    settings = local.archive.settings
    server = DimseServer(
        settings,
        local.archive.ingest,
        asyncio.get_running_loop(),
    )
    server.start()
    return server


@pytest.fixture
async def archive(make_archive: ArchiveFactory) -> LocalArchive:
    return await make_archive(
        server__host="127.0.0.1",
        server__dicom_port=0,
        dimse__network_timeout=1.0,
        dimse__acse_timeout=1.0,
    )


@pytest.fixture
async def server(archive: LocalArchive) -> AsyncIterator[DimseServer]:
    running = await started(archive)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


async def until_no_association(server: DimseServer, within: float = 10.0) -> float:
    """Seconds until the SCP has no association left (fails after ``within``)."""
    start = time.monotonic()
    while server.ae.active_associations:
        assert time.monotonic() - start < within, "the association never ended"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def association_appears(server: DimseServer, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not server.ae.active_associations:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def echo(port: int) -> int:
    with StoreSCU(port, CONTEXTS) as scu:
        return scu.echo()


async def test_accepted_associations_run_on_the_prompt_reactors(
    server: DimseServer, archive: LocalArchive
) -> None:
    seen: list[bool] = []

    def open_and_look() -> None:
        with StoreSCU(server.port, CONTEXTS) as scu:
            scu.echo()
            seen.extend(isinstance(a, PromptAssociation) for a in server.ae.active_associations)

    await asyncio.to_thread(open_and_look)

    assert seen == [True]
    await until_no_association(server)


async def test_abort_by_the_peer_ends_the_association_and_the_scp_keeps_serving(
    server: DimseServer, archive: LocalArchive, tmp_path: Path
) -> None:
    instance = new_instance()
    path = tmp_path / "one.dcm"
    path.write_bytes(instance.data)

    def store_then_abort() -> int:
        scu = StoreSCU(server.port, CONTEXTS)
        status = scu.store(path).status
        scu.assoc.abort()
        return status

    assert await asyncio.to_thread(store_then_abort) == STATUS_SUCCESS
    await until_no_association(server)
    assert await archive.indexed(instance.sop)
    assert await asyncio.to_thread(echo, server.port) == STATUS_SUCCESS


async def test_a_connection_dropped_before_the_request_ends_within_the_acse_timeout(
    server: DimseServer, archive: LocalArchive
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        assert await asyncio.to_thread(association_appears, server)
    # closed without a word: no A-ASSOCIATE-RQ, no A-ABORT

    assert await until_no_association(server) < 5  # ACSE timeout 1 s
    assert await asyncio.to_thread(echo, server.port) == STATUS_SUCCESS


async def test_a_connection_dropped_mid_association_ends_it(
    server: DimseServer, archive: LocalArchive
) -> None:
    def echo_then_drop() -> int:
        scu = StoreSCU(server.port, CONTEXTS)
        status = scu.echo()
        scu.assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # no A-RELEASE, no A-ABORT
        scu.assoc.kill()
        return status

    assert await asyncio.to_thread(echo_then_drop) == STATUS_SUCCESS
    assert await until_no_association(server) < 5
    assert await asyncio.to_thread(echo, server.port) == STATUS_SUCCESS


async def test_an_idle_association_is_released_after_the_network_timeout(
    server: DimseServer, archive: LocalArchive
) -> None:
    def idle() -> bool:
        scu = StoreSCU(server.port, CONTEXTS)
        scu.echo()
        deadline = time.monotonic() + 10
        while scu.assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        return bool(scu.assoc.is_released or scu.assoc.is_aborted)

    assert await asyncio.to_thread(idle)
    waited = await until_no_association(server)
    assert waited < 10
