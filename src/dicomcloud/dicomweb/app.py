"""The ASGI application: DICOMweb routes, health and readiness.

Routes only translate HTTP to service calls and back; errors are mapped to responses
once, here, from the exception tree in ``dicomcloud.errors``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dicomcloud import __version__
from dicomcloud.app import Archive
from dicomcloud.dicomweb.qido import negotiate, parse_query, search_response, sections_for
from dicomcloud.dicomweb.responses import error_response
from dicomcloud.dicomweb.stow import StowHandler
from dicomcloud.dicomweb.wado import check_accept, instance_response
from dicomcloud.domain.query import QueryLevel
from dicomcloud.domain.values import is_valid_uid
from dicomcloud.errors import BadRequest, DicomCloudError
from dicomcloud.services.ingest import IngestContext

log = logging.getLogger(__name__)

DICOMWEB_PREFIX = "/dicom-web"


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def _base_url(request: Request) -> str:
    configured = _archive(request).settings.server.base_url
    if configured:
        return configured.rstrip("/") + DICOMWEB_PREFIX
    return str(request.base_url).rstrip("/") + DICOMWEB_PREFIX


def _uid(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    if not is_valid_uid(value):
        raise BadRequest(f"{name} {value!r} is not a valid UID (PS3.5 9.1)")
    return value


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok", "version": __version__})


async def readyz(request: Request) -> Response:
    """Readiness: the index and the blob store are reachable."""
    archive = _archive(request)
    checks: dict[str, str] = {}
    for name, ping in (("index", archive.index.ping), ("storage", archive.blobs.ping)):
        try:
            await ping()
            checks[name] = "ok"
        except DicomCloudError as exc:
            checks[name] = exc.reason
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", **checks}, 200 if ready else 503
    )


async def store_instances(request: Request) -> Response:
    """PS3.18 10.5: STOW-RS."""
    archive = _archive(request)
    settings = archive.settings
    study = request.path_params.get("study")
    context = IngestContext(
        tenant_id=settings.default_tenant,
        source="STOW-RS",
        source_ip=request.client.host if request.client else None,
        expected_study_uid=study,
    )
    handler = StowHandler(
        archive.ingest,
        spool_dir=archive.spool_dir,
        spool_threshold=settings.ingest.spool_memory_bytes,
        max_request_bytes=settings.ingest.max_request_bytes,
        max_instance_bytes=settings.ingest.max_instance_bytes,
        concurrency=settings.ingest.request_concurrency,
    )
    return await handler.handle(request, context, _base_url(request))


#: Path parameters of QIDO-RS routes and the matching keys they become.
_PATH_KEYS = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID"}


def search(level: QueryLevel) -> Callable[[Request], Awaitable[Response]]:
    """PS3.18 10.6: the QIDO-RS route searching at ``level``; UIDs in the path are
    validated (400) and restrict the search."""

    async def handle(request: Request) -> Response:
        archive = _archive(request)
        path = {
            key: _uid(request, name)
            for name, key in _PATH_KEYS.items()
            if name in request.path_params
        }
        query = parse_query(request, level, path)
        media_type = negotiate(request)
        results = await archive.query.search(archive.settings.default_tenant, query)
        sections = sections_for(level, path)
        return search_response(results, query, sections, media_type, _base_url(request))

    return handle


async def retrieve_instance(request: Request) -> Response:
    """PS3.18 10.4: WADO-RS retrieve of one instance."""
    archive = _archive(request)
    study, series, sop = _uid(request, "study"), _uid(request, "series"), _uid(request, "sop")
    stored = await archive.retrieve.instance(archive.settings.default_tenant, study, series, sop)
    check_accept(request, stored.record.transfer_syntax_uid)
    return instance_response(stored)


async def _dicomcloud_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DicomCloudError)
    if exc.http_status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.reason)
    return error_response(exc)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse({"status": 500, "error": "internal error; see the server log"}, 500)


def create_app(archive: Archive, *, manage_lifecycle: bool = False) -> Starlette:
    """The ASGI app for ``archive``.

    With ``manage_lifecycle`` the app starts and stops the archive in its lifespan (for
    tests and ``uvicorn dicomcloud...``); ``dicomcloud serve`` manages it itself.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_lifecycle:
            await archive.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await archive.stop()

    web = DICOMWEB_PREFIX
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route(f"{web}/studies", store_instances, methods=["POST"]),
        Route(f"{web}/studies", search(QueryLevel.STUDY), methods=["GET"]),
        Route(f"{web}/studies/{{study}}", store_instances, methods=["POST"]),
        Route(f"{web}/series", search(QueryLevel.SERIES), methods=["GET"]),
        Route(f"{web}/instances", search(QueryLevel.IMAGE), methods=["GET"]),
        Route(f"{web}/studies/{{study}}/series", search(QueryLevel.SERIES), methods=["GET"]),
        Route(f"{web}/studies/{{study}}/instances", search(QueryLevel.IMAGE), methods=["GET"]),
        Route(
            f"{web}/studies/{{study}}/series/{{series}}/instances",
            search(QueryLevel.IMAGE),
            methods=["GET"],
        ),
        Route(
            f"{web}/studies/{{study}}/series/{{series}}/instances/{{sop}}",
            retrieve_instance,
            methods=["GET"],
        ),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            DicomCloudError: _dicomcloud_error,
            Exception: _unexpected_error,
        },
    )
    app.state.archive = archive
    return app
