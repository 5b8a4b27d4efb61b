"""Administration routes, all under ``/admin`` (ADMIN-ONLY: authorization must let only
administrators reach this prefix; ``ADMIN_PREFIX`` is what it checks).

``GET /admin/access-log``: the access records (``dicomcloud.domain.access``), newest
first, as JSON, filtered by ``tenant``, ``from`` / ``to`` (ISO 8601 date or date-time,
UTC unless it names an offset; ``from`` inclusive, ``to`` exclusive), ``action``,
``principal``, ``protocol`` (DICOMweb / DIMSE) and ``study`` (a StudyInstanceUID the
record names), paged by ``limit`` (default 100, at most 10000) and ``offset``;
``order=asc`` gives oldest first.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dicomcloud.dicomweb.request_context import archive_of
from dicomcloud.domain.access import AccessQuery
from dicomcloud.errors import BadRequest

ADMIN_PREFIX: Final = "/admin"
ACCESS_LOG_PATH: Final = f"{ADMIN_PREFIX}/access-log"
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 10_000
_KNOWN: Final = frozenset(
    {"tenant", "from", "to", "action", "principal", "protocol", "study", "limit", "offset", "order"}
)


def parse_time(name: str, text: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or date-time (UTC unless it has an offset)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        value = datetime.fromisoformat(text.replace(" ", "+") if "T" in text else text)
    except ValueError as exc:
        raise BadRequest(
            f"{name}={text!r} is not an ISO 8601 date or date-time (2026-11-22T10:00:00Z)"
        ) from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _number(request: Request, name: str, default: int, maximum: int) -> int:
    text = request.query_params.get(name)
    if not text:  # absent or empty (``limit=``)
        return default
    if not text.isdigit() or int(text) > maximum:
        raise BadRequest(f"{name}={text!r} must be a whole number from 0 to {maximum}")
    return int(text)


def access_query(request: Request) -> AccessQuery:
    """The filters of a ``/admin/access-log`` request; 400 naming a bad one."""
    params = request.query_params
    unknown = sorted(set(params.keys()) - _KNOWN)
    if unknown:
        raise BadRequest(
            f"unknown parameter {unknown[0]!r}; use one of {', '.join(sorted(_KNOWN))}"
        )
    order = params.get("order", "desc").lower()
    if order not in ("asc", "desc"):
        raise BadRequest(f"order={order!r} must be asc or desc")
    since = parse_time("from", params["from"]) if params.get("from") else None
    until = parse_time("to", params["to"]) if params.get("to") else None
    return AccessQuery(
        tenant_id=params.get("tenant") or None,
        since=since,
        until=until,
        action=params.get("action") or None,
        principal=params.get("principal") or None,
        protocol=params.get("protocol") or None,
        study_uid=params.get("study") or None,
        limit=max(1, _number(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)),
        offset=_number(request, "offset", 0, 1 << 62),
        newest_first=order == "desc",
    )


async def access_log(request: Request) -> Response:
    """``GET /admin/access-log`` (admin only)."""
    query = access_query(request)
    records = await archive_of(request).access_store.search(query)
    return JSONResponse(
        {
            "records": [record.to_dict() for record in records],
            "limit": query.limit,
            "offset": query.offset,
        }
    )


def admin_routes() -> list[Route]:
    """Every route under ``ADMIN_PREFIX``."""
    return [Route(ACCESS_LOG_PATH, access_log, methods=["GET"])]
