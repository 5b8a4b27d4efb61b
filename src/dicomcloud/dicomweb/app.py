"""The ASGI application: DICOMweb routes, health and readiness.

Routes only translate HTTP to service calls and back; errors are mapped to responses
once, here, from the exception tree in ``dicomcloud.errors``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dicomcloud import __version__
from dicomcloud.app import Archive
from dicomcloud.config import CorsSettings
from dicomcloud.dicomweb import metadata as wado_metadata
from dicomcloud.dicomweb import rendered as wado_rendered
from dicomcloud.dicomweb.access_log import PRINCIPAL_KEY, AccessLogMiddleware, notes_of
from dicomcloud.dicomweb.admin import admin_routes
from dicomcloud.dicomweb.auth import install_auth
from dicomcloud.dicomweb.bulkdata import retrieve_bulkdata
from dicomcloud.dicomweb.cached_responses import cached_search_response, freeze_response
from dicomcloud.dicomweb.guards import QueryLengthLimit, public_reason
from dicomcloud.dicomweb.media import DicomChoice, negotiate_frames, negotiate_instances
from dicomcloud.dicomweb.openapi import openapi_document
from dicomcloud.dicomweb.qido import (
    cap_limit,
    negotiate,
    parse_query,
    search_response,
    sections_for,
)
from dicomcloud.dicomweb.request_context import (
    DICOMWEB_PREFIX,
    TENANT_PREFIX,
    archive_of,
    base_url,
    on_cpu,
    path_uid,
    tenant_of,
)
from dicomcloud.dicomweb.responses import error_response
from dicomcloud.dicomweb.stow import StowHandler
from dicomcloud.dicomweb.wado import frames_response, instances_response
from dicomcloud.dicomweb.wado_uri import check_supported, parse_wado_uri, render_parameters
from dicomcloud.domain import access
from dicomcloud.domain.query import QueryLevel
from dicomcloud.errors import DicomCloudError, MethodNotAllowed, NotFound
from dicomcloud.ports import DeleteRequest
from dicomcloud.services.frames import parse_frame_list
from dicomcloud.services.ingest import IngestContext
from dicomcloud.services.rendering import render_frame
from dicomcloud.services.retrieve import AS_STORED
from dicomcloud.ui.routes import ui_routes

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok", "version": __version__})


async def readyz(request: Request) -> Response:
    """Readiness: the index and the blob store are reachable."""
    archive = archive_of(request)
    checks: dict[str, str] = {}
    for name, ping in (("index", archive.index.ping), ("storage", archive.blobs.ping)):
        try:
            await ping()
            checks[name] = "ok"
        except DicomCloudError as exc:
            log.error("readiness: %s: %s", name, exc.reason)
            checks[name] = public_reason(exc.reason)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", **checks}, 200 if ready else 503
    )


async def openapi(request: Request) -> Response:
    """The OpenAPI 3 description of these routes."""
    return JSONResponse(openapi_document())


async def store_instances(request: Request) -> Response:
    """PS3.18 10.5: STOW-RS."""
    archive = archive_of(request)
    settings = archive.settings
    study = request.path_params.get("study")
    context = IngestContext(
        tenant_id=tenant_of(request),
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
        max_parts=settings.ingest.max_parts,
    )
    return await handler.handle(request, context, base_url(request))


#: Path parameters of QIDO-RS routes and the matching keys they become.
_PATH_KEYS = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID"}


def search(level: QueryLevel) -> Callable[[Request], Awaitable[Response]]:
    """PS3.18 10.6: the QIDO-RS route searching at ``level``; UIDs in the path are
    validated (400) and restrict the search."""

    async def handle(request: Request) -> Response:
        archive = archive_of(request)
        path = {
            key: path_uid(request, name)
            for name, key in _PATH_KEYS.items()
            if name in request.path_params
        }
        query = parse_query(request, level, path)
        media_type = negotiate(request)
        page = cap_limit(query, archive.settings.search.max_limit)
        tenant = tenant_of(request)
        base = base_url(request)
        # Everything the response depends on besides the index (path keys are matches).
        normalized = repr((level, query, page, media_type, base))
        cached = await archive.search_cache.lookup(tenant, normalized)
        if cached.hit is not None:
            return cached_search_response(cached.hit)
        results = await archive.query.search(tenant, page.query)
        sections = sections_for(level, path)
        response = search_response(results, query, sections, media_type, base, cap=page.cap)
        await archive.search_cache.store(cached, freeze_response(response))
        return response

    return handle


async def retrieve_study(request: Request) -> Response:
    """PS3.18 10.4: WADO-RS retrieve of a study or series (multipart DICOM or ZIP)."""
    archive = archive_of(request)
    study = path_uid(request, "study")
    series = path_uid(request, "series") if "series" in request.path_params else None
    choice = negotiate_instances(request.headers.get("accept"), single=False)
    records = await archive.retrieve.instances(tenant_of(request), study, series)
    return await instances_response(archive.retrieve, records, choice, filename=series or study)


async def retrieve_instance(request: Request) -> Response:
    """PS3.18 10.4: WADO-RS retrieve of one instance."""
    archive = archive_of(request)
    study, series, sop = (
        path_uid(request, "study"),
        path_uid(request, "series"),
        path_uid(request, "sop"),
    )
    choice = negotiate_instances(request.headers.get("accept"), single=True)
    record = await archive.retrieve.instance_record(tenant_of(request), study, series, sop)
    return await instances_response(archive.retrieve, [record], choice, filename=sop)


async def retrieve_frames(request: Request) -> Response:
    """PS3.18 10.4.1.1.4: WADO-RS frames of one instance (``/frames/1,3,5``)."""
    archive = archive_of(request)
    study, series, sop = (
        path_uid(request, "study"),
        path_uid(request, "series"),
        path_uid(request, "sop"),
    )
    numbers = parse_frame_list(request.path_params["frames"])
    choice = negotiate_frames(request.headers.get("accept"), count=len(numbers))
    record = await archive.retrieve.instance_record(tenant_of(request), study, series, sop)
    return await frames_response(archive.retrieve, record, numbers, choice)


async def wado_uri(request: Request) -> Response:
    """PS3.18 9: WADO-URI retrieve of one instance as application/dicom or rendered."""
    archive = archive_of(request)
    wado = parse_wado_uri(request)
    check_supported(wado, rendering=True)
    rendered = wado.content_type != "application/dicom"
    frame, params = render_parameters(request, wado.content_type) if rendered else (0, None)
    record = await archive.retrieve.instance_record(
        tenant_of(request), wado.study_uid, wado.series_uid, wado.sop_uid
    )
    if params is not None:
        try:
            part10 = await archive.blobs.get(record.blob_key)
        except NotFound as exc:
            raise NotFound(f"the stored object of instance {wado.sop_uid} is missing") from exc
        image = await on_cpu(request, render_frame, part10, frame, params)
        return Response(image, 200, media_type=params.media_type)
    syntax = wado.transfer_syntax
    choice = DicomChoice("single", (syntax,) if syntax != AS_STORED else (AS_STORED,))
    response = await instances_response(archive.retrieve, [record], choice)
    response.headers["content-type"] = "application/dicom"  # PS3.18 9.3.2.1: no parameters
    return response


async def delete_resource(request: Request) -> Response:
    """DELETE of a study, a series or an instance (non-standard: PS3.18 defines no
    delete; as Microsoft's DICOM service, a hard delete answered with 204 No Content).
    400 for an invalid UID, 404 if nothing matched, 405 with ``[retention]
    allow_delete = false``; the ``delete`` permission is checked by the auth layer."""
    archive = archive_of(request)
    study = path_uid(request, "study")
    series = path_uid(request, "series") if "series" in request.path_params else None
    sop = path_uid(request, "sop") if "sop" in request.path_params else None
    tenant = tenant_of(request)
    try:
        archive.deletion.check_enabled()
    except MethodNotAllowed as exc:
        response = error_response(exc)
        response.headers["allow"] = "GET" if sop or series else "GET, POST"
        return response
    # The series metadata aggregates to remove are those of every base URL this process
    # knows: the configured ones, those of earlier metadata requests, and this one.
    archive.metadata.note_base(tenant, base_url(request))
    principal = request.scope.get(PRINCIPAL_KEY)
    summary = await archive.deletion.delete(
        DeleteRequest(
            tenant,
            study,
            series,
            sop,
            source="DICOMweb",
            principal=principal if isinstance(principal, str) and principal else None,
        )
    )
    notes = notes_of(request.scope)
    if notes is not None:
        notes.instances = summary.instances
        if series is None:
            notes.series_uids.extend(summary.series_instance_uids[: access.MAX_UIDS])
        if sop is None:
            notes.sop_instance_uids.extend(summary.sop_instance_uids[: access.MAX_UIDS])
    return Response(status_code=204)


async def _dicomcloud_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DicomCloudError)
    if exc.http_status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.reason)
        return error_response(exc, reason=public_reason(exc.reason))
    return error_response(exc)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse({"status": 500, "error": "internal error; see the server log"}, 500)


def _retrieve_routes(web: str) -> list[Route]:
    """PS3.18 10.4: metadata, bulk data, rendered and thumbnail resources."""
    study = f"{web}/studies/{{study}}"
    series = f"{study}/series/{{series}}"
    instance = f"{series}/instances/{{sop}}"
    frames = f"{instance}/frames/{{frames}}"
    r = wado_rendered
    handlers = [
        (f"{study}/metadata", wado_metadata.study_metadata),
        (f"{series}/metadata", wado_metadata.series_metadata),
        (f"{instance}/metadata", wado_metadata.instance_metadata),
        (f"{instance}/bulkdata/{{path}}", retrieve_bulkdata),
        (f"{study}/rendered", r.study_rendered),
        (f"{series}/rendered", r.series_rendered),
        (f"{instance}/rendered", r.instance_rendered),
        (f"{frames}/rendered", r.frames_rendered),
        (f"{study}/thumbnail", r.study_thumbnail),
        (f"{series}/thumbnail", r.series_thumbnail),
        (f"{instance}/thumbnail", r.instance_thumbnail),
        (f"{frames}/thumbnail", r.frames_thumbnail),
    ]
    return [Route(path, handler, methods=["GET"]) for path, handler in handlers]


Endpoint = Callable[[Request], Awaitable[Response]]


def _tenant_checked(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` behind the check of the path's tenant (400 / 404 before any work)."""

    async def handle(request: Request) -> Response:
        tenant_of(request)
        return await endpoint(request)

    handle.__doc__ = endpoint.__doc__
    return handle


def _dicomweb_routes(web: str) -> list[Route]:
    """Every DICOMweb route under the service path ``web`` (PS3.18 10); under a
    ``{tenant}`` path the tenant is checked first."""
    routes = _service_routes(web)
    if "{tenant}" not in web:
        return routes
    return [
        Route(r.path, _tenant_checked(r.endpoint), methods=sorted(r.methods or ())) for r in routes
    ]


def _service_routes(web: str) -> list[Route]:
    study = f"{web}/studies/{{study}}"
    series = f"{study}/series/{{series}}"
    instance = f"{series}/instances/{{sop}}"
    return [
        Route(f"{web}/studies", store_instances, methods=["POST"]),
        Route(f"{web}/studies", search(QueryLevel.STUDY), methods=["GET"]),
        Route(study, store_instances, methods=["POST"]),
        Route(f"{web}/series", search(QueryLevel.SERIES), methods=["GET"]),
        Route(f"{web}/instances", search(QueryLevel.IMAGE), methods=["GET"]),
        Route(f"{study}/series", search(QueryLevel.SERIES), methods=["GET"]),
        Route(f"{study}/instances", search(QueryLevel.IMAGE), methods=["GET"]),
        Route(f"{series}/instances", search(QueryLevel.IMAGE), methods=["GET"]),
        Route(instance, retrieve_instance, methods=["GET"]),
        *_retrieve_routes(web),
        Route(study, retrieve_study, methods=["GET"]),
        Route(series, retrieve_study, methods=["GET"]),
        Route(f"{instance}/frames/{{frames}}", retrieve_frames, methods=["GET"]),
        Route(f"{web}/wado", wado_uri, methods=["GET"]),
        Route(study, delete_resource, methods=["DELETE"]),
        Route(series, delete_resource, methods=["DELETE"]),
        Route(instance, delete_resource, methods=["DELETE"]),
    ]


def cors_middleware(cors: CorsSettings) -> list[Middleware]:
    """Starlette's CORS middleware for the configured origins; none when no origin is
    allowed (then no CORS header is ever sent and browsers keep the same-origin rule)."""
    if not cors.allow_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(cors.allow_origins),
            allow_credentials=cors.allow_credentials,
            allow_methods=list(cors.allow_methods),
            allow_headers=list(cors.allow_headers),
            expose_headers=list(cors.expose_headers),
            max_age=cors.max_age,
        )
    ]


def create_app(
    archive: Archive, *, manage_lifecycle: bool = False, probes_only: bool = False
) -> Starlette:
    """The ASGI app for ``archive``.

    With ``manage_lifecycle`` the app starts and stops the archive in its lifespan (for
    tests and ``uvicorn dicomcloud...``); ``dicomcloud serve`` manages it itself.  With
    ``probes_only`` (a node without the ``web`` role) it answers only ``/healthz`` and
    ``/readyz``.
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

    probes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    if probes_only:
        probe_app = Starlette(routes=probes, lifespan=lifespan)
        probe_app.state.archive = archive
        return probe_app
    routes = [
        *probes,
        Route("/openapi.json", openapi, methods=["GET"]),
        # The default tenant's service, and every tenant's under /tenants/{tenant}.
        *_dicomweb_routes(DICOMWEB_PREFIX),
        Route("/wado", wado_uri, methods=["GET"]),
        *_dicomweb_routes(TENANT_PREFIX + DICOMWEB_PREFIX),
        Route(f"{TENANT_PREFIX}/wado", _tenant_checked(wado_uri), methods=["GET"]),
        *admin_routes(),
        *ui_routes(),
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
    install_auth(app, archive)
    # Before authentication: an over-long query is refused whoever sends it (414).
    app.add_middleware(QueryLengthLimit, limit=archive.settings.search.max_query_length)
    # Around authentication: a refused request's 401 still carries the CORS headers a
    # browser needs to read it.
    for cors_layer in reversed(cors_middleware(archive.settings.cors)):
        app.add_middleware(cors_layer.cls, *cors_layer.args, **cors_layer.kwargs)
    if archive.access is not None:
        # Outermost (added last): refused requests (401, 403) are recorded too.
        app.add_middleware(
            AccessLogMiddleware,
            sink=archive.access,
            default_tenant=archive.settings.default_tenant,
        )
    return app
