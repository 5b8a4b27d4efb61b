"""Bug: DimseServer.start() used ``AE.make_server`` without registering the server with
the AE, and pynetdicom's ``shutdown()`` unregisters it: ``stop()`` raised ValueError,
so whatever came after it (the archive's own stop) never ran.

Fixed in dimse/server.py ``start`` (registered as ``AE.start_server`` does).
"""

from __future__ import annotations

import asyncio

from conftest import ArchiveFactory
from dicomcloud.dimse.server import DimseServer
from integration.support import StoreSCU


async def test_stop_then_start_again(make_archive: ArchiveFactory) -> None:
    local = await make_archive(server__host="127.0.0.1", server__dicom_port=0)
    settings = local.archive.settings
    loop = asyncio.get_running_loop()

    for _ in range(2):
        server = DimseServer(settings, local.archive.ingest, loop)
        server.start()
        port = server.port

        def echo(port: int = port) -> int:
            with StoreSCU(port, []) as scu:
                return scu.echo()

        assert await asyncio.to_thread(echo) == 0x0000
        await asyncio.to_thread(server.stop)  # raised ValueError
        assert server.ae.active_associations == []
