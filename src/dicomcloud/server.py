"""``dicomcloud serve``: DICOMweb (uvicorn) and DIMSE (pynetdicom) in one process."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from dicomcloud.app import Archive
from dicomcloud.config import Settings, redact_url
from dicomcloud.dicomweb.app import create_app
from dicomcloud.dimse.server import DimseServer

log = logging.getLogger(__name__)


async def run(settings: Settings) -> None:
    """Serve until interrupted (SIGINT / SIGTERM), then stop cleanly."""
    archive = await Archive.open(settings)
    await archive.start()
    dimse = DimseServer(
        settings, archive.ingest, asyncio.get_running_loop(), tenant_id=settings.default_tenant
    )
    try:
        dimse.start()
        web = create_app(archive)
        config = uvicorn.Config(
            web,
            host=settings.server.host,
            port=settings.server.http_port,
            log_level=settings.log_level.lower(),
            access_log=settings.log_level == "DEBUG",
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
        server = uvicorn.Server(config)
        log.info(
            "dicomcloud: DICOMweb on http://%s:%d/dicom-web, DICOM %s on port %d, "
            "index %s, storage %s",
            settings.server.host,
            settings.server.http_port,
            settings.server.ae_title,
            dimse.port,
            redact_url(settings.index_url),
            redact_url(settings.storage_url),
        )
        await server.serve()
    finally:
        await asyncio.to_thread(dimse.stop)
        await archive.stop()
