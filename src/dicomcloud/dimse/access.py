"""Access records of DIMSE associations (PS3.8) and operations (PS3.7).

One record per association, written when its connection closes: calling and called AE
titles, peer, the number of operations with their statuses (``detail``), the worst
status, the UIDs of the instances stored (at most ``MAX_UIDS`` per level; ``instances``
counts all), bytes received in C-STORE datasets and the duration.  C-STORE
operations are only counted there (a modality sends thousands per association); C-ECHO,
C-FIND, C-GET and C-MOVE also get a record each, with the UIDs their identifier names,
the number of matches or sub-operations, and (C-GET, C-MOVE) the bytes of the stored
objects handed over for the sub-operations.

Handlers run in pynetdicom's threads; records reach the sink on the archive's event
loop through ``run_coroutine_threadsafe`` (never waited for).  The principal is the
calling AE title: DIMSE has no other identity here (PS3.7 D.3.3.7 user identity
negotiation is not used).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from dicomcloud.domain import access
from dicomcloud.domain.access import AccessRecord, bounded, outcome_of_dimse
from dicomcloud.domain.events import node_id, uuid7
from dicomcloud.services.access_log import AccessLogSink

log = logging.getLogger(__name__)

T = TypeVar("T")

_ATTRIBUTE: Final = "_dicomcloud_access"
#: Identifier keys naming the resource of a C-FIND / C-GET / C-MOVE (PS3.4 C.4).
_LEVEL_KEYS: Final = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
#: Seconds after the connection closed before an established association without a
#: release or abort is recorded as ``closed``.
_CLOSE_GRACE: Final = 2.0
_RANK: Final = {"success": 0, "cancel": 1, "warning": 2, "failure": 3}


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip()
    return str(value).strip() if value is not None else ""


def _status(value: object) -> int | None:
    """The status of a handler's yield: an int, or a Dataset with Status."""
    if isinstance(value, int):
        return value
    status = getattr(value, "Status", None)
    return int(status) if status is not None else None


@dataclass
class _Association:
    """What one association did so far (its handlers run one at a time)."""

    started: datetime
    clock: float
    operations: Counter[tuple[str, int]] = field(default_factory=Counter)
    studies: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    sops: list[str] = field(default_factory=list)
    instances: int = 0
    bytes_in: int = 0
    worst: int = 0x0000
    established: bool = False
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: A C-GET / C-MOVE whose handler is done but whose final response pynetdicom has
    #: not sent yet: called with that response's status.
    awaiting_final: Callable[[int], None] | None = None
    #: Bytes of the C-FIND response identifiers sent so far (``on_dimse_sent``).
    find_bytes_sent: int = 0


def _buffer_size(buffer: object) -> int:
    """The bytes of an encoded dataset pynetdicom holds in a BytesIO (0 if none)."""
    getbuffer = getattr(buffer, "getbuffer", None)
    if getbuffer is None:
        return 0
    with getbuffer() as view:
        size: int = view.nbytes
    return size


def identifier_uids(identifier: Any) -> tuple[tuple[str, ...], ...]:
    """StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID values of a query or
    retrieve identifier (UID lists too, PS3.4 C.2.2.2.2); empty when unreadable."""
    found: list[tuple[str, ...]] = []
    for keyword in _LEVEL_KEYS:
        try:
            value = identifier.get(keyword) if identifier is not None else None
        except Exception:  # a malformed identifier: its operation fails on its own
            value = None
        if value is None or value == "":
            found.append(())
        elif isinstance(value, str):
            found.append(bounded(value.split("\\")))
        else:
            found.append(bounded(str(v) for v in value))
    return tuple(found)


class DimseAccessLog:
    """Collects a DIMSE server's access records and queues them on the sink."""

    def __init__(
        self, sink: AccessLogSink, loop: asyncio.AbstractEventLoop, *, default_tenant: str
    ) -> None:
        """``default_tenant``: the tenant of associations no tenancy rule decided (one
        rejected before it was bound, ``dicomcloud.dimse.tenancy``)."""
        self._sink = sink
        self._loop = loop
        self._default_tenant = default_tenant
        self._node = node_id()

    def _tenant_of(self, assoc: Any) -> str:
        from dicomcloud.dimse.tenancy import association_tenant

        try:
            return association_tenant(assoc).tenant_id
        except LookupError:
            return self._default_tenant

    # -- pynetdicom event handlers ------------------------------------------------------

    def on_open(self, event: Any) -> None:
        """EVT_CONN_OPEN: start an association's account."""
        setattr(event.assoc, _ATTRIBUTE, _Association(datetime.now(UTC), time.perf_counter()))

    def on_accepted(self, event: Any) -> None:
        """EVT_ACCEPTED: its record is queued when it is released or aborted."""
        state: _Association | None = getattr(event.assoc, _ATTRIBUTE, None)
        if state is not None:
            state.established = True

    def on_released(self, event: Any) -> None:
        """EVT_RELEASED (PS3.8 7.2): queue the association's record."""
        self._finish(event.assoc, "released")

    def on_aborted(self, event: Any) -> None:
        """EVT_ABORTED (PS3.8 7.3, 7.4): queue the association's record."""
        self._finish(event.assoc, "aborted")

    def on_close(self, event: Any) -> None:
        """EVT_CONN_CLOSE: queue the record of an association that never was
        established (rejected, or the connection ended first).  An established one
        gets its record on release or abort, which the association's own thread
        reports after the connection may already have closed; if neither comes (the
        peer vanished, a timeout), it is queued as ``closed`` a moment later."""
        assoc = event.assoc
        state: _Association | None = getattr(assoc, _ATTRIBUTE, None)
        if state is None:
            return
        if not state.established:
            self._finish(assoc, "rejected" if getattr(assoc, "is_rejected", False) else "closed")
            return
        try:
            self._loop.call_soon_threadsafe(
                self._loop.call_later, _CLOSE_GRACE, self._finish, assoc, "closed"
            )
        except RuntimeError:  # the loop is closed: the archive has stopped
            self._finish(assoc, "closed")

    def on_dimse_sent(self, event: Any) -> None:
        """EVT_DIMSE_SENT: the final C-GET-RSP / C-MOVE-RSP pynetdicom sent completes
        the operation's record with its status."""
        state: _Association | None = getattr(event.assoc, _ATTRIBUTE, None)
        if state is None:
            return
        message = event.message
        kind = type(message).__name__
        if kind == "C_FIND_RSP":
            state.find_bytes_sent += _buffer_size(getattr(message, "data_set", None))
            return
        if state.awaiting_final is None or kind not in ("C_GET_RSP", "C_MOVE_RSP"):
            return
        status = getattr(message.command_set, "Status", None)
        if status is None or int(status) in (0xFF00, 0xFF01):
            return
        record, state.awaiting_final = state.awaiting_final, None
        record(int(status))

    def _finish(self, assoc: Any, ended: str) -> None:
        state: _Association | None = getattr(assoc, _ATTRIBUTE, None)
        if state is None:
            return
        pending, state.awaiting_final = state.awaiting_final, None
        if pending is not None:  # the final response never went out
            pending(0xA700)
        with state.lock:
            if state.finished:
                return
            state.finished = True
        kinds = Counter[str]()
        for (action, _status), count in state.operations.items():
            kinds[action] += count
        parts = []
        for action in sorted(kinds):
            statuses = ", ".join(
                f"0x{status:04X} x{count}"
                for (name, status), count in sorted(state.operations.items())
                if name == action
            )
            parts.append(f"{action} x{kinds[action]} ({statuses})")
        outcome = outcome_of_dimse(state.worst)
        if ended != "released":
            outcome = "failure"
        self._submit(
            self._record(
                assoc,
                access.ASSOCIATION,
                state.started,
                state.clock,
                state.worst,
                outcome=outcome,
                uids=(state.studies, state.series, state.sops),
                instances=state.instances,
                bytes_in=state.bytes_in,
                operations=sum(kinds.values()),
                detail=f"{ended}; " + ("; ".join(parts) if parts else "no operations"),
            )
        )

    # -- operations (called by the handlers) ---------------------------------------------

    def stored(
        self,
        event: Any,
        status: int,
        uids: tuple[str | None, str | None, str | None],
        size: int,
    ) -> None:
        """One C-STORE operation: counted in the association's record only."""
        state: _Association | None = getattr(event.assoc, _ATTRIBUTE, None)
        if state is None:
            return
        self._count(state, access.C_STORE, status)
        state.bytes_in += size
        if outcome_of_dimse(status) in ("success", "warning"):
            state.instances += 1
            if len(state.sops) < access.MAX_UIDS:
                study, series, sop = uids
                for uid, kept in ((study, state.studies), (series, state.series)):
                    if uid and uid not in kept:
                        kept.append(uid)
                if sop:
                    state.sops.append(sop)

    def echoed(self, event: Any, status: int) -> None:
        """One C-ECHO operation (PS3.7 9.1.5): its own record."""
        started, clock = datetime.now(UTC), time.perf_counter()
        state: _Association | None = getattr(event.assoc, _ATTRIBUTE, None)
        if state is not None:
            self._count(state, access.C_ECHO, status)
        self._submit(self._record(event.assoc, access.C_ECHO, started, clock, status))

    def operation(
        self, event: Any, action: str, responses: Iterator[T], *, counts_first: bool = False
    ) -> Iterator[T]:
        """Pass a C-FIND / C-GET / C-MOVE handler's responses through, then queue the
        operation's record: its final status, the UIDs its identifier names, and the
        number of matches (C-FIND pending responses) or sub-operations (the first value
        a C-GET / C-MOVE handler yields, with ``counts_first``)."""
        started, clock = datetime.now(UTC), time.perf_counter()
        uids = identifier_uids(getattr(event, "identifier", None))
        received = _buffer_size(getattr(event.request, "Identifier", None))
        state_at_start: _Association | None = getattr(event.assoc, _ATTRIBUTE, None)
        sent_before = state_at_start.find_bytes_sent if state_at_start is not None else 0
        final: int | None = None
        matched = 0
        offered = 0  # bytes of the stored objects handed over for sub-operations
        exhausted = False
        try:
            for response in responses:
                if counts_first and response == (None, None):
                    final = 0xA801  # C-MOVE: pynetdicom refuses the unknown destination
                elif isinstance(response, tuple):  # (status, dataset); C-MOVE: (host, port)
                    status = _status(response[0]) if response else None
                    part10 = getattr(response[1], "part10", None) if len(response) > 1 else None
                    if isinstance(part10, bytes):
                        offered += len(part10)
                    if status is not None:
                        final = status
                        if status in (0xFF00, 0xFF01) and not counts_first:
                            matched += 1
                elif counts_first and isinstance(response, int):
                    matched = response  # the number of sub-operations (PS3.4 C.4.2.3)
                yield response
            exhausted = True
        finally:
            status = 0xA700 if final is None else final  # ended without a final status
            state: _Association | None = getattr(event.assoc, _ATTRIBUTE, None)

            def record(status: int) -> None:
                sent = offered
                if state is not None:
                    self._count(state, action, status)
                    if not counts_first:  # C-FIND: the identifiers it answered
                        sent = state.find_bytes_sent - sent_before
                self._submit(
                    self._record(
                        event.assoc,
                        action,
                        started,
                        clock,
                        status,
                        uids=uids,
                        instances=matched,
                        bytes_in=received,
                        bytes_out=sent,
                    )
                )

            if final in (0xFF00, 0xFF01):
                # C-GET / C-MOVE handlers end with their last sub-operation; pynetdicom
                # then answers the final status itself (0x0000, or 0xB000 / 0xA702 when
                # sub-operations failed, PS3.4 C.4.2.1.5): recorded when that response
                # is sent (``on_dimse_sent``).  Closed early: cancelled.
                if exhausted and counts_first and state is not None:
                    state.awaiting_final = record
                else:
                    record(0x0000 if exhausted and counts_first else 0xFE00)
            else:
                record(status)

    # -- records ------------------------------------------------------------------------

    def _count(self, state: _Association, action: str, status: int) -> None:
        state.operations[(action, status)] += 1
        if _RANK[outcome_of_dimse(status)] > _RANK[outcome_of_dimse(state.worst)]:
            state.worst = status

    def _record(
        self,
        assoc: Any,
        action: str,
        started: datetime,
        clock: float,
        status: int,
        *,
        outcome: str | None = None,
        uids: Any = ((), (), ()),
        instances: int = 0,
        bytes_in: int = 0,
        bytes_out: int = 0,
        operations: int = 1,
        detail: str | None = None,
    ) -> AccessRecord:
        requestor = assoc.requestor
        primitive = getattr(requestor, "primitive", None)
        called = _text(getattr(primitive, "called_ae_title", "")) or None
        address = getattr(requestor, "address", None)
        port = getattr(requestor, "port", None)
        peer = None
        if address:
            peer = f"[{address}]:{port}" if ":" in str(address) else f"{address}:{port}"
        studies, series, sops = uids
        return AccessRecord(
            event_id=str(uuid7()),
            time=started,
            node_id=self._node,
            protocol=access.DIMSE,
            action=action,
            tenant_id=self._tenant_of(assoc),
            principal=_text(getattr(requestor, "ae_title", "")) or access.ANONYMOUS,
            peer=peer,
            status=status,
            outcome=outcome or outcome_of_dimse(status),
            duration_ms=(time.perf_counter() - clock) * 1000.0,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            user_agent=_text(getattr(requestor, "implementation_version_name", "")) or None,
            called_ae=called,
            study_uids=bounded(studies),
            series_uids=bounded(series),
            sop_instance_uids=bounded(sops),
            instances=instances,
            operations=operations,
            detail=detail,
        )

    def _submit(self, record: AccessRecord) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._sink.put(record), self._loop)
        except RuntimeError:  # the loop is closed: the archive has stopped
            log.warning("access log: %s record of %s lost at shutdown", record.action, record.peer)
