"""The DIMSE SCP: C-ECHO (PS3.4 A.4), C-STORE (PS3.4 B.2) and C-FIND (PS3.4 C.4.1) over
pynetdicom.

Handlers run in pynetdicom's association threads and hand each dataset to the shared
ingest service on the archive's event loop.  The C-STORE response reports what really
happened (PS3.4 B.2.3): 0x0000 only after the instance is durable and indexed, a
warning (0xB000, 0xB006) when it was stored with a remark, or a failure status
(0xA700, 0xA900, 0xC000, 0x0110) with an ErrorComment saying why.  C-FIND runs the
query service that QIDO-RS uses and streams one pending response per match, checking for
C-CANCEL between them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from dicomcloud.config import Settings
from dicomcloud.dimse.contexts import (
    FIND_SOP_CLASSES,
    FIND_TRANSFER_SYNTAXES,
    STORAGE_TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
    storage_sop_classes,
)
from dicomcloud.dimse.find import parse_identifier, response_identifier
from dicomcloud.domain.query import QueryError
from dicomcloud.services.ingest import IngestContext, IngestService
from dicomcloud.services.query import QueryService

log = logging.getLogger(__name__)

#: How long pynetdicom's DUL reactor sleeps when there is nothing to do.
DUL_POLL_SECONDS = 0.0002

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_PENDING = 0xFF00
STATUS_CANCEL = 0xFE00
STATUS_UNABLE_TO_PROCESS = 0xC000


def set_nodelay(event: Any) -> None:
    """Turn Nagle off: pynetdicom leaves it on, which stalls each PDU by ~40 ms."""
    try:
        sock = event.assoc.dul.socket.socket
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # pynetdicom's DUL reactor polls; its 1 ms idle sleep adds up to a millisecond
        # to every PDU exchanged.  A shorter one costs a little CPU per open association.
        event.assoc.dul._run_loop_delay = DUL_POLL_SECONDS
    except (AttributeError, OSError):  # not TCP (tests with socketpair), or closed
        pass


class DimseServer:
    """Listens for associations and serves C-ECHO, C-STORE and (given a query service)
    C-FIND."""

    def __init__(
        self,
        settings: Settings,
        ingest: IngestService,
        loop: asyncio.AbstractEventLoop,
        *,
        tenant_id: str,
        query: QueryService | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._settings = settings
        self._ingest = ingest
        self._query = query
        self._loop = loop
        self._tenant_id = tenant_id
        self._reuse_port = reuse_port
        self._server: ThreadedAssociationServer | None = None
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
            ae.add_supported_context(sop_class, STORAGE_TRANSFER_SYNTAXES)
        if self._query is not None:
            for sop_class in FIND_SOP_CLASSES:
                ae.add_supported_context(sop_class, FIND_TRANSFER_SYNTAXES)
        return ae

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        handlers: list[Any] = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
        ]
        address = (self._settings.server.host, self._settings.server.dicom_port)
        server_class = _ReusePortServer if self._reuse_port else ThreadedAssociationServer
        self._server = self.ae.make_server(
            address, evt_handlers=handlers, server_class=server_class
        )
        # Registered as AE.start_server does: the server's shutdown() unregisters it.
        self.ae._servers.append(self._server)
        threading.Thread(
            target=self._server.serve_forever, name="dimse-acceptor", daemon=True
        ).start()
        log.info(
            "DIMSE SCP %s listening on %s:%d",
            self._settings.server.ae_title,
            address[0],
            self.port,
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # -- handlers (pynetdicom threads) --------------------------------------------------

    def _on_echo(self, event: Any) -> int:
        return STATUS_SUCCESS

    def _on_store(self, event: Any) -> Dataset:
        requestor = event.assoc.requestor
        context = IngestContext(
            tenant_id=self._tenant_id,
            source="DIMSE",
            source_ip=str(requestor.address),
            source_ae=_ae_title(requestor.ae_title),
        )
        data: bytes = event.request.DataSet.getvalue()
        syntax = str(event.context.transfer_syntax)
        status = Dataset()
        future = asyncio.run_coroutine_threadsafe(
            self._ingest.store_dataset(data, syntax, context), self._loop
        )
        try:
            result = future.result(timeout=self._settings.dimse.dimse_timeout)
        except FutureTimeout:
            future.cancel()
            status.Status = STATUS_OUT_OF_RESOURCES
            status.ErrorComment = "timed out storing the instance"
            return status
        except Exception as exc:  # must answer with a failure, never crash the association
            log.exception("C-STORE failed")
            status.Status = STATUS_PROCESSING_FAILURE
            status.ErrorComment = _comment(f"processing failure: {exc}")
            return status
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
        return status

    def _on_find(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        sop_class = str(event.request.AffectedSOPClassUID)
        try:
            request = parse_identifier(event.identifier, sop_class)
        except QueryError as exc:
            yield _failure(STATUS_UNABLE_TO_PROCESS, str(exc)), None
            return
        except Exception as exc:  # an identifier pydicom cannot decode
            yield _failure(STATUS_UNABLE_TO_PROCESS, f"cannot read the identifier: {exc}"), None
            return
        if self._query is None:  # pragma: no cover - the context is not offered then
            yield _failure(STATUS_UNABLE_TO_PROCESS, "C-FIND is not served"), None
            return
        future = asyncio.run_coroutine_threadsafe(
            self._query.search(self._tenant_id, request.query), self._loop
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
        ae_title = self._settings.server.ae_title
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


class _ReusePortServer(ThreadedAssociationServer):  # type: ignore[misc]
    """Several worker processes accept associations on one port (SO_REUSEPORT)."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _ae_title(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip()
    return str(value).strip()


def _comment(text: str) -> str:
    """ErrorComment is LO: 64 characters of the default repertoire (PS3.7 C.4)."""
    ascii_text = text.encode("ascii", "replace").decode("ascii").replace("\\", "/")
    return ascii_text[:64]
