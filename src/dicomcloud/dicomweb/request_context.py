"""What every DICOMweb route needs from its request: the archive, the tenant, the base
URL for URIs in responses, validated path UIDs, the effective Accept, and a way to run
CPU work off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request

from dicomcloud.app import Archive
from dicomcloud.domain.values import InvalidValue, is_valid_uid, parse_tenant_id
from dicomcloud.errors import BadRequest, NotFound

T = TypeVar("T")
#: The default tenant's DICOMweb service.
DICOMWEB_PREFIX = "/dicom-web"
#: Where the request's tenant is noted for the access log (``dicomweb.access_log``).
TENANT_SCOPE_KEY = "dicomcloud.tenant"
#: Every tenant's DICOMweb service: ``/tenants/{tenant}/dicom-web``.
TENANT_PREFIX = "/tenants/{tenant}"


def dicomweb_path(tenant_id: str | None) -> str:
    """The path of a tenant's DICOMweb service (None: the default tenant's)."""
    if tenant_id is None:
        return DICOMWEB_PREFIX
    return TENANT_PREFIX.format(tenant=tenant_id) + DICOMWEB_PREFIX


def archive_of(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def base_url(request: Request) -> str:
    """The DICOMweb base URL for URIs in responses (``server.base_url`` if set): the
    service the request came to, ``/tenants/{tenant}/dicom-web`` or ``/dicom-web``, so
    that every URI a tenant is given leads back to its own data."""
    configured = archive_of(request).settings.server.base_url
    root = configured.rstrip("/") if configured else str(request.base_url).rstrip("/")
    tenant = tenant_of(request) if "tenant" in request.path_params else None
    return root + dicomweb_path(tenant)


def path_uid(request: Request, name: str) -> str:
    """The UID path parameter ``name``; 400 unless it is a valid UID (PS3.5 9.1)."""
    value: str = request.path_params[name]
    if not is_valid_uid(value):
        raise BadRequest(f"{name} {value!r} is not a valid UID (PS3.5 9.1)")
    return value


def tenant_of(request: Request) -> str:
    """The tenant a request acts for: the ``{tenant}`` of ``/tenants/{tenant}/...``, or
    the configured ``default_tenant`` for ``/dicom-web/...`` and ``/wado``.

    400 for a path tenant that is not a tenant id (1-64 of A-Z a-z 0-9 _ -), 404 for
    one the ``[tenancy] tenants`` allow-list does not name.
    """
    settings = archive_of(request).settings
    text = request.path_params.get("tenant")
    if text is None:
        return settings.default_tenant
    try:
        tenant = parse_tenant_id(str(text))
    except InvalidValue as exc:
        raise BadRequest(str(exc)) from exc
    if not settings.tenancy.allows(tenant):
        raise NotFound(f"tenant {tenant!r} is not served here")
    request.scope[TENANT_SCOPE_KEY] = tenant  # for the access record
    return tenant


async def on_cpu(request: Request, func: Callable[..., T], *args: Any) -> T:
    """Run CPU work on the archive's retrieve threads, off the event loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(archive_of(request).cpu, func, *args)


def accept_of(request: Request) -> str | None:
    """The ``accept`` query parameter (PS3.18 8.3.3.1) if given, else the header."""
    return request.query_params.get("accept") or request.headers.get("accept")
