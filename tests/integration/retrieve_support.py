"""pynetdicom peers for C-GET and C-MOVE tests: a C-GET SCU that receives the
sub-operations on its own association, a C-MOVE SCU, and a Storage SCP (the Move
Destination) on a free port.  All blocking: run them in a thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt

STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"

PENDING, SUCCESS, WARNING, CANCEL = 0xFF00, 0x0000, 0xB000, 0xFE00
MOVE_DESTINATION_UNKNOWN = 0xA801
UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702


@dataclass(frozen=True)
class Received:
    """One C-STORE sub-operation as the receiver saw it."""

    sop_instance_uid: str
    transfer_syntax: str
    data: bytes  # the data set bytes, as received
    move_originator: str | None = None


@dataclass(frozen=True)
class Response:
    """One C-GET / C-MOVE response: status, counts, and its identifier if any."""

    status: int
    remaining: int | None
    completed: int | None
    failed: int | None
    warning: int | None
    error_comment: str
    failed_uids: tuple[str, ...]

    @classmethod
    def of(cls, status: Dataset, identifier: Dataset | None) -> Response:
        def count(keyword: str) -> int | None:
            value = status.get(keyword)
            return None if value is None else int(value)

        failed: tuple[str, ...] = ()
        if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
            value = identifier.FailedSOPInstanceUIDList
            items = list(value) if isinstance(value, MultiValue | list) else [value]
            failed = tuple(str(v) for v in items if v)
        return cls(
            int(status.Status),
            count("NumberOfRemainingSuboperations"),
            count("NumberOfCompletedSuboperations"),
            count("NumberOfFailedSuboperations"),
            count("NumberOfWarningSuboperations"),
            str(status.get("ErrorComment", "")),
            failed,
        )


def identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _nodelay(event: Any) -> None:
    import socket

    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _received(event: Any) -> Received:
    originator = event.request.MoveOriginatorApplicationEntityTitle
    return Received(
        str(event.request.AffectedSOPInstanceUID),
        str(event.context.transfer_syntax),
        event.request.DataSet.getvalue(),
        originator.strip() if isinstance(originator, str) else None,
    )


def c_get(
    port: int,
    query: Dataset,
    storage: Mapping[str, Sequence[str]],
    *,
    model: str = STUDY_ROOT_GET,
    cancel_after: int | None = None,
    single_context: bool = False,
    called: str = "DICOMCLOUD",
) -> tuple[list[Response], list[Received]]:
    """One C-GET on its own association.  ``storage`` maps each Storage SOP Class to
    the transfer syntaxes proposed for it (one presentation context each, SCP role).
    ``cancel_after``: send C-CANCEL once that many instances were received;
    ``single_context``: one context per SOP Class with all its syntaxes, as dcmtk's
    getscu proposes; ``called``: the Called AE Title."""
    ae = AE(ae_title="GETSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model, ExplicitVRLittleEndian)
    roles = []
    for sop_class, syntaxes in storage.items():
        if single_context:
            ae.add_requested_context(sop_class, list(syntaxes))
        else:
            for syntax in syntaxes:
                ae.add_requested_context(sop_class, [syntax])
        roles.append(build_role(sop_class, scp_role=True))
    received: list[Received] = []

    def on_store(event: Any) -> int:
        received.append(_received(event))
        if cancel_after is not None and len(received) == cancel_after:
            event.assoc.send_c_cancel(1, query_model=model)
        return SUCCESS

    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title=called,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, _nodelay)],
    )
    assert assoc.is_established
    try:
        responses = [Response.of(s, i) for s, i in assoc.send_c_get(query, model, msg_id=1)]
    finally:
        assoc.release()
    return responses, received


def c_move(
    port: int,
    query: Dataset,
    destination: str,
    *,
    model: str = STUDY_ROOT_MOVE,
    after_request: Callable[[Any], None] | None = None,
    called: str = "DICOMCLOUD",
) -> list[Response]:
    """One C-MOVE on its own association (calling AE title MOVESCU, Called AE Title
    ``called``); ``after_request(assoc)`` runs once the request is sent, before any
    response is read."""
    ae = AE(ae_title="MOVESCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model, ExplicitVRLittleEndian)
    assoc = ae.associate(
        "127.0.0.1", port, ae_title=called, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)]
    )
    assert assoc.is_established
    try:
        pending = assoc.send_c_move(query, destination, model, msg_id=1)
        if after_request is not None:
            after_request(assoc)
        return [Response.of(status, found) for status, found in pending]
    finally:
        assoc.release()


@dataclass
class StoreSCP:
    """A pynetdicom Storage SCP accepting ``contexts`` (SOP Class -> transfer syntaxes,
    in order of preference), recording what it receives."""

    contexts: Mapping[str, Sequence[str]]
    ae_title: str = "MOVESCP"
    received: list[Received] = field(default_factory=list)
    #: Set by the test to hold the first C-STORE until it says so.
    release_first: threading.Event | None = None
    first_arrived: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def _on_store(self, event: Any) -> int:
        self.received.append(_received(event))
        if len(self.received) == 1:
            self.first_arrived.set()
            if self.release_first is not None:
                self.release_first.wait(timeout=20)
        return SUCCESS

    @contextlib.contextmanager
    def running(self, port: int) -> Iterator[StoreSCP]:
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        for sop_class, syntaxes in self.contexts.items():
            ae.add_supported_context(sop_class, list(syntaxes))
        server = ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store), (evt.EVT_CONN_OPEN, _nodelay)],
        )
        self.port = port
        try:
            yield self
        finally:
            server.shutdown()
