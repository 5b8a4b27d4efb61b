"""The DIMSE SCP: C-ECHO (PS3.4 A.4), C-STORE (PS3.4 B.2), C-FIND (PS3.4 C.4.1), C-MOVE
(PS3.4 C.4.2) and C-GET (PS3.4 C.4.3) over pynetdicom.

Handlers run in pynetdicom's association threads and hand each dataset to the shared
ingest service on the archive's event loop.  The C-STORE response reports what really
happened (PS3.4 B.2.3): 0x0000 only after the instance is durable and indexed, a
warning (0xB000, 0xB006) when it was stored with a remark, or a failure status
(0xA700, 0xA900, 0xC000, 0x0110) with an ErrorComment saying why.  C-FIND runs the
query service that QIDO-RS uses and streams one pending response per match, checking for
C-CANCEL between them.  C-GET and C-MOVE (given the blob store) are in
:mod:`dicomcloud.dimse.get` and :mod:`dicomcloud.dimse.move`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicomcloud.config import Settings
from dicomcloud.dimse.access import DimseAccessLog
from dicomcloud.dimse.contexts import (
    FIND_SOP_CLASSES,
    FIND_TRANSFER_SYNTAXES,
    GET_SOP_CLASSES,
    MOVE_SOP_CLASSES,
    STORAGE_TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
    prefer_little_endian_for_retrieve,
    storage_sop_classes,
)
from dicomcloud.dimse.find import parse_identifier, response_identifier
from dicomcloud.dimse.find_negotiation import accept_find_options, fuzzy_negotiated
from dicomcloud.dimse.get import handle_get
from dicomcloud.dimse.move import handle_move
from dicomcloud.dimse.reactors import make_prompt
from dicomcloud.dimse.retrieve import InstanceSource
from dicomcloud.dimse.store_scu import prepare_association
from dicomcloud.dimse.tenancy import association_tenant, bind_tenant
from dicomcloud.domain.access import C_FIND, C_GET, C_MOVE
from dicomcloud.domain.query import QueryError
from dicomcloud.ports import BlobStore
from dicomcloud.services.access_log import AccessLogSink
from dicomcloud.services.ingest import IngestContext, IngestResult, IngestService
from dicomcloud.services.query import QueryService
from dicomcloud.services.retrieve import RetrieveService
from dicomcloud.tls import client_context, server_context

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_PENDING = 0xFF00
STATUS_CANCEL = 0xFE00
STATUS_UNABLE_TO_PROCESS = 0xC000


class DimseServer:
    """Listens for associations and serves C-ECHO, C-STORE and (given a query service)
    C-FIND, C-GET and C-MOVE, each on the data of the association's tenant
    (:mod:`dicomcloud.dimse.tenancy`: ``[[dimse.tenants]]``, else the default tenant)."""

    def __init__(
        self,
        settings: Settings,
        ingest: IngestService,
        loop: asyncio.AbstractEventLoop,
        *,
        query: QueryService | None = None,
        blobs: BlobStore | None = None,
        reuse_port: bool = False,
        access: AccessLogSink | None = None,
        retrieve: RetrieveService | None = None,
    ) -> None:
        """``access``: the sink receiving an access record per association and per
        C-ECHO / C-FIND / C-GET / C-MOVE (``dicomcloud.dimse.access``); None records
        nothing.  ``retrieve``: where C-GET / C-MOVE find viewer-ready copies."""
        self._settings = settings
        self._ingest = ingest
        self._query = query
        self._loop = loop
        self._reuse_port = reuse_port
        self._server: ThreadedAssociationServer | None = None
        self._source: InstanceSource | None = None
        if query is not None and blobs is not None:
            self._source = InstanceSource(
                query, blobs, loop, timeout=settings.dimse.dimse_timeout, retrieve=retrieve
            )
        self._access = (
            DimseAccessLog(access, loop, default_tenant=settings.default_tenant)
            if access is not None
            else None
        )
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        dimse = self._settings.dimse
        ae = AE(ae_title=self._settings.server.ae_title)
        ae.maximum_pdu_size = dimse.max_pdu_length
        ae.network_timeout = dimse.network_timeout
        ae.acse_timeout = dimse.acse_timeout
        ae.dimse_timeout = dimse.dimse_timeout
        ae.maximum_associations = dimse.max_associations
        ae.add_supported_context(VERIFICATION_SOP_CLASS, STORAGE_TRANSFER_SYNTAXES)
        for sop_class in storage_sop_classes():
            # Either role: C-STORE from modalities, and C-STORE sub-operations of C-GET
            # when the SCU proposes the SCP role (PS3.7 D.3.3.4, PS3.4 C.4.3).
            ae.add_supported_context(
                sop_class, STORAGE_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )
        if self._query is not None:
            for sop_class in FIND_SOP_CLASSES:
                ae.add_supported_context(sop_class, FIND_TRANSFER_SYNTAXES)
        if self._source is not None:
            for sop_class in (*GET_SOP_CLASSES, *MOVE_SOP_CLASSES):
                ae.add_supported_context(sop_class, FIND_TRANSFER_SYNTAXES)
        return ae

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, prepare_association),
            # First: a rejected association is not negotiated further.
            (evt.EVT_REQUESTED, partial(bind_tenant, settings=self._settings)),
            (evt.EVT_REQUESTED, prefer_little_endian_for_retrieve),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_SOP_EXTENDED, accept_find_options),
        ]
        if self._source is not None:
            handlers.append((evt.EVT_C_GET, self._on_get))
            handlers.append((evt.EVT_C_MOVE, self._on_move))
        if self._access is not None:
            handlers.append((evt.EVT_CONN_OPEN, self._access.on_open))
            handlers.append((evt.EVT_ACCEPTED, self._access.on_accepted))
            handlers.append((evt.EVT_RELEASED, self._access.on_released))
            handlers.append((evt.EVT_ABORTED, self._access.on_aborted))
            handlers.append((evt.EVT_CONN_CLOSE, self._access.on_close))
            handlers.append((evt.EVT_DIMSE_SENT, self._access.on_dimse_sent))
        address = (self._settings.server.host, self._settings.server.dicom_port)
        server_class = _ReusePortServer if self._reuse_port else _AssociationServer
        tls = self._settings.dimse.tls
        if self._settings.dimse.tls_destinations:
            client_context(tls, "dimse.tls")  # a bad setting fails now, not at C-MOVE
        self._server = self.ae.make_server(
            address,
            evt_handlers=handlers,
            server_class=server_class,
            ssl_context=server_context(tls, "dimse.tls") if tls.enabled else None,
        )
        _quiet_standard_handlers(self._server)
        # Registered as AE.start_server does: the server's shutdown() unregisters it.
        self.ae._servers.append(self._server)
        threading.Thread(
            target=self._server.serve_forever, name="dimse-acceptor", daemon=True
        ).start()
        log.info(
            "DIMSE SCP %s listening on %s:%d%s",
            self._settings.server.ae_title,
            address[0],
            self.port,
            " (DICOM TLS)" if tls.enabled else "",
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # -- handlers (pynetdicom threads) --------------------------------------------------

    def _on_echo(self, event: Any) -> int:
        if self._access is not None:
            self._access.echoed(event, STATUS_SUCCESS)
        return STATUS_SUCCESS

    def _on_store(self, event: Any) -> Dataset:
        status, result = self._store(event)
        if self._access is not None:
            uids: tuple[str | None, str | None, str | None] = (None, None, None)
            if result is not None:
                uids = (
                    result.study_instance_uid,
                    result.series_instance_uid,
                    result.sop_instance_uid,
                )
            self._access.stored(event, int(status.Status), uids, _dataset_size(event))
        return status

    def _on_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        responses = self._find(event)
        if self._access is None:
            return responses
        return self._access.operation(event, C_FIND, responses)

    def _on_get(self, event: Any) -> Iterator[Any]:
        assert self._source is not None
        responses = handle_get(event, source=self._source)
        if self._access is None:
            return responses
        return self._access.operation(event, C_GET, responses, counts_first=True)

    def _on_move(self, event: Any) -> Iterator[Any]:
        assert self._source is not None
        responses = handle_move(event, source=self._source, settings=self._settings)
        if self._access is None:
            return responses
        return self._access.operation(event, C_MOVE, responses, counts_first=True)

    def _store(self, event: Any) -> tuple[Dataset, IngestResult | None]:
        requestor = event.assoc.requestor
        context = IngestContext(
            tenant_id=association_tenant(event.assoc).tenant_id,
            source="DIMSE",
            source_ip=str(requestor.address),
            source_ae=_ae_title(requestor.ae_title),
        )
        data: bytes = event.request.DataSet.getvalue()
        syntax = str(event.context.transfer_syntax)
        status = Dataset()
        limit = self._settings.ingest.max_instance_bytes
        if len(data) > limit:  # PS3.4 B.2.3: 0xA700 Refused: Out of Resources
            log.warning("C-STORE from %s refused: %d bytes", context.source_ae, len(data))
            status.Status = STATUS_OUT_OF_RESOURCES
            status.ErrorComment = _comment(f"instance over max_instance_bytes ({limit})")
            return status, None
        # Parse, validate and write the blob here, in the association's thread; only
        # the index commit (shared with concurrent stores) runs on the event loop.
        try:
            prepared = self._ingest.prepare_dataset_blocking(data, syntax, context)
            if isinstance(prepared, IngestResult):
                result = prepared
            else:
                future = asyncio.run_coroutine_threadsafe(
                    self._ingest.commit_prepared(prepared), self._loop
                )
                try:
                    result = future.result(timeout=self._settings.dimse.dimse_timeout)
                except FutureTimeout:
                    future.cancel()
                    status.Status = STATUS_OUT_OF_RESOURCES
                    status.ErrorComment = "timed out storing the instance"
                    return status, None
        except Exception as exc:  # must answer with a failure, never crash the association
            log.exception("C-STORE failed")
            status.Status = STATUS_PROCESSING_FAILURE
            status.ErrorComment = _comment(f"processing failure: {exc}")
            return status, None
        status.Status = result.status
        if result.status != STATUS_SUCCESS:
            status.ErrorComment = _comment(result.comment)
            level = logging.WARNING if result.failure is not None else logging.INFO
            log.log(
                level,
                "C-STORE from %s: %s status 0x%04X: %s",
                context.source_ae,
                result.sop_instance_uid,
                result.status,
                result.comment,
            )
        return status, result

    def _find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        sop_class = str(event.request.AffectedSOPClassUID)
        tenant = association_tenant(event.assoc)
        try:
            request = parse_identifier(
                event.identifier,
                sop_class,
                self._settings.search.extended_tags_of(tenant.tenant_id),
            )
        except QueryError as exc:
            yield _failure(STATUS_UNABLE_TO_PROCESS, str(exc)), None
            return
        except Exception as exc:  # an identifier pydicom cannot decode
            yield _failure(STATUS_UNABLE_TO_PROCESS, f"cannot read the identifier: {exc}"), None
            return
        if self._query is None:  # pragma: no cover - the context is not offered then
            yield _failure(STATUS_UNABLE_TO_PROCESS, "C-FIND is not served"), None
            return
        query = request.query
        if fuzzy_negotiated(event.assoc, sop_class):  # PS3.4 C.5.1.1.1
            query = dataclasses.replace(query, fuzzy=True)
        future = asyncio.run_coroutine_threadsafe(
            self._query.search(tenant.tenant_id, query), self._loop
        )
        try:
            results = future.result(timeout=self._settings.dimse.dimse_timeout)
        except FutureTimeout:
            future.cancel()
            yield _failure(STATUS_OUT_OF_RESOURCES, "timed out searching the index"), None
            return
        except Exception as exc:  # must answer with a failure, never crash the association
            log.exception("C-FIND failed")
            yield _failure(STATUS_UNABLE_TO_PROCESS, f"processing failure: {exc}"), None
            return
        # Retrieve AE Title (PS3.4 C.4.1.2.3.1): where this tenant's data is retrieved.
        ae_title = tenant.called_ae_title if self._settings.dimse.tenants else None
        ae_title = ae_title or self._settings.server.ae_title
        for result in results:
            if event.is_cancelled:
                yield STATUS_CANCEL, None
                return
            yield STATUS_PENDING, response_identifier(result, request, ae_title)
        yield STATUS_SUCCESS, None


def _failure(status: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = _comment(comment)
    return ds


class _SharedContexts(list[Any]):
    """The supported presentation contexts, shared by every association.

    pynetdicom deep-copies the server's contexts for each new association (7,650
    transfer syntax UIDs here: ~60 ms of CPU per association), yet negotiation only
    reads them (PS3.8 9.3.3.2), so every association can use the same objects.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return list(self)


class _PromptRequestHandler(RequestHandler):  # type: ignore[misc]
    """Runs each accepted association on the event-driven reactors (dimse.reactors);
    with DICOM TLS, completes the handshake first, in the association's own thread."""

    def handle(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.settimeout(self.server.ae.acse_timeout)
                self.request.do_handshake()
                self.request.settimeout(None)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                log.warning("DICOM TLS handshake with %s failed: %s", self.client_address[0], exc)
                with contextlib.suppress(OSError):
                    self.request.close()
                return
        super().handle()

    def _create_association(self) -> Association:
        assoc: Association = super()._create_association()
        make_prompt(assoc)
        return assoc


class _AssociationServer(ThreadedAssociationServer):  # type: ignore[misc]
    """pynetdicom's threaded server, without the per-association copy of the contexts
    and with event-driven association reactors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("request_handler", _PromptRequestHandler)
        super().__init__(*args, **kwargs)
        self.contexts = _SharedContexts(self.contexts)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection; with TLS, wrap it without handshaking here.

        pynetdicom handshakes in the acceptor thread, where one client that never
        completes it would block every other connection; the handshake runs in the
        connection's thread instead (``_PromptRequestHandler.handle``)."""
        assert self.socket is not None
        client, address = self.socket.accept()
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address


class _ReusePortServer(_AssociationServer):
    """Several worker processes accept associations on one port (SO_REUSEPORT)."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _quiet_standard_handlers(server: ThreadedAssociationServer) -> None:
    """Unbind pynetdicom's logging handlers of every PDU and DIMSE message when its
    logger would drop what they write: they format each message anyway (~0.1 ms per
    C-STORE)."""
    if logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        return
    for event, handler in (
        (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
        (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
        (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
        (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
    ):
        server.unbind(event, handler)


def _dataset_size(event: Any) -> int:
    """Bytes of a C-STORE request's dataset (without copying it)."""
    with event.request.DataSet.getbuffer() as view:
        size: int = view.nbytes
    return size


def _ae_title(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip()
    return str(value).strip()


def _comment(text: str) -> str:
    """ErrorComment is LO: 64 characters of the default repertoire (PS3.7 C.4)."""
    ascii_text = text.encode("ascii", "replace").decode("ascii").replace("\\", "/")
    return ascii_text[:64]
