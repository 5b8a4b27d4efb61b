"""Access records of HTTP requests: a pure ASGI middleware around the DICOMweb app.

It counts the request and response body bytes as they stream (a streamed WADO-RS
response stays streamed), and when the response has ended it queues one
:class:`~dicomcloud.domain.access.AccessRecord` on the archive's access-log sink: what
the request was (from the matched route), which UIDs it named, its status, bytes,
duration, peer and User-Agent.  No other header is read: an ``Authorization`` or
``Cookie`` value never reaches a record.

Scope keys other components set (ASGI ``scope`` is shared by every layer of one
request; ``request.scope[...]`` in a route or dependency):

* ``scope["dicomcloud.principal"]``: who made the request (user name / token subject /
  API client id, never the credential itself); authentication sets it, else the record
  says ``anonymous``;
* ``scope["dicomcloud.tenant"]``: the tenant the request was served for; tenancy sets
  it, else the configured default tenant;
* ``scope["dicomcloud.access"]``: an :class:`AccessNotes` this middleware puts there,
  where a route adds the UIDs it touched beyond those in its path (STOW-RS: the
  instances it stored).

``/healthz`` and ``/readyz`` (probes, many per minute) are not recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomcloud.domain import access
from dicomcloud.domain.access import AccessRecord, bounded
from dicomcloud.domain.events import node_id, uuid7
from dicomcloud.services.access_log import AccessLogSink

PRINCIPAL_KEY: Final = "dicomcloud.principal"
TENANT_KEY: Final = "dicomcloud.tenant"
NOTES_KEY: Final = "dicomcloud.access"

#: Paths never recorded (liveness and readiness probes).
UNRECORDED: Final = frozenset({"/healthz", "/readyz"})

#: Last path segment of a WADO-RS resource -> action (PS3.18 10.4.1.1).
_RESOURCE_ACTIONS: Final = {
    "metadata": access.WADO_RS_METADATA,
    "rendered": access.WADO_RS_RENDERED,
    "thumbnail": access.WADO_RS_THUMBNAIL,
}
#: Collections searched by QIDO-RS (PS3.18 10.6).
_COLLECTIONS: Final = frozenset({"studies", "series", "instances"})
#: WADO-URI query parameters naming the object (PS3.18 9.2.2).
_WADO_URI_UIDS: Final = (("studyUID", "study"), ("seriesUID", "series"), ("objectUID", "sop"))


@dataclass
class AccessNotes:
    """What a route adds to its request's access record."""

    study_uids: list[str] = field(default_factory=list)
    series_uids: list[str] = field(default_factory=list)
    sop_instance_uids: list[str] = field(default_factory=list)
    instances: int = 0

    def add_instance(self, study: str | None, series: str | None, sop: str | None) -> None:
        """One instance the request stored or returned."""
        self.instances += 1
        if len(self.sop_instance_uids) < access.MAX_UIDS:
            for uid, kept in (
                (study, self.study_uids),
                (series, self.series_uids),
                (sop, self.sop_instance_uids),
            ):
                if uid:
                    kept.append(uid)


def notes_of(scope: Scope) -> AccessNotes | None:
    """The request's notes (None when access is not recorded)."""
    notes = scope.get(NOTES_KEY)
    return notes if isinstance(notes, AccessNotes) else None


def action_of(method: str, template: str | None) -> str:
    """The action of a request, from its method and matched route template."""
    if template is None:
        return access.HTTP_OTHER
    if template.startswith("/admin/access-log"):
        return access.AUDIT_QUERY
    segments = [s for s in template.split("/") if s]
    if not segments:
        return access.HTTP_OTHER
    last = segments[-1]
    if last == "wado":
        return access.WADO_URI
    if method == "POST" and last in ("studies", "{study}"):
        return access.STOW_RS
    if method == "DELETE" and last in ("{study}", "{series}", "{sop}"):
        return access.DELETE
    if last in _RESOURCE_ACTIONS:
        return _RESOURCE_ACTIONS[last]
    if len(segments) >= 2 and segments[-2] == "bulkdata":
        return access.WADO_RS_BULKDATA
    if last == "{frames}":
        return access.WADO_RS_FRAMES
    if last in _COLLECTIONS:
        return access.QIDO_RS
    if last in ("{study}", "{series}", "{sop}"):
        return access.WADO_RS_RETRIEVE
    return access.HTTP_OTHER


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _uids(scope: Scope, notes: AccessNotes) -> tuple[list[str], list[str], list[str]]:
    params: dict[str, Any] = dict(scope.get("path_params") or {})
    if not params and scope.get("path", "").endswith("/wado"):
        query = _query_params(scope)
        params = {name: query[key] for key, name in _WADO_URI_UIDS if key in query}
    studies = [params["study"]] if isinstance(params.get("study"), str) else []
    series = [params["series"]] if isinstance(params.get("series"), str) else []
    sops = [params["sop"]] if isinstance(params.get("sop"), str) else []
    return (
        studies + notes.study_uids,
        series + notes.series_uids,
        sops + notes.sop_instance_uids,
    )


def _query_params(scope: Scope) -> dict[str, str]:
    from urllib.parse import parse_qsl

    raw = scope.get("query_string", b"").decode("latin-1")
    return dict(parse_qsl(raw, keep_blank_values=True))


class AccessLogMiddleware:
    """Pure ASGI middleware queuing an access record per HTTP request."""

    def __init__(self, app: ASGIApp, *, sink: AccessLogSink, default_tenant: str) -> None:
        self.app = app
        self._sink = sink
        self._tenant = default_tenant
        self._node = node_id()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNRECORDED:
            await self.app(scope, receive, send)
            return
        started = datetime.now(UTC)
        clock = time.perf_counter()
        notes = AccessNotes()
        scope[NOTES_KEY] = notes
        counts = {"in": 0, "out": 0, "status": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counts["in"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.body":
                counts["out"] += len(message.get("body", b""))
            elif kind == "http.response.start":
                counts["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        except Exception:
            if not counts["status"]:
                counts["status"] = 500  # what the error handler outside answers
            raise
        finally:
            await self._sink.put(
                self._record(scope, notes, started, clock, counts["status"], counts)
            )

    def _record(
        self,
        scope: Scope,
        notes: AccessNotes,
        started: datetime,
        clock: float,
        status: int,
        counts: dict[str, int],
    ) -> AccessRecord:
        method: str = scope.get("method", "GET")
        route = scope.get("route")
        template = getattr(route, "path", None)
        studies, series, sops = _uids(scope, notes)
        principal = scope.get(PRINCIPAL_KEY)
        tenant = scope.get(TENANT_KEY)
        return AccessRecord(
            event_id=str(uuid7()),
            time=started,
            node_id=self._node,
            protocol=access.DICOMWEB,
            action=action_of(method, template),
            tenant_id=tenant if isinstance(tenant, str) and tenant else self._tenant,
            principal=principal if isinstance(principal, str) and principal else access.ANONYMOUS,
            peer=_peer(scope),
            status=status,
            outcome=access.outcome_of_http(status),
            duration_ms=(time.perf_counter() - clock) * 1000.0,
            bytes_in=counts["in"],
            bytes_out=counts["out"],
            method=method,
            path=scope.get("path"),
            query=access.redact_query(scope.get("query_string", b"").decode("latin-1")) or None,
            user_agent=_header(scope, b"user-agent"),
            study_uids=bounded(studies),
            series_uids=bounded(series),
            sop_instance_uids=bounded(sops),
            instances=notes.instances or len(bounded(sops)),
        )
