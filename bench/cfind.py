"""C-FIND latency: STUDY-level queries of the Study Root model (PS3.4 C.6.2) with
pynetdicom as the SCU, on one association for all queries and on one association per
query (association set-up and release included).

pynetdicom leaves Nagle's algorithm on and its DUL reactor sleeps a millisecond between
polls: the SCU turns Nagle off on its socket and shortens the poll when the connection
opens (``EVT_CONN_OPEN``), so the client adds as little latency as it can to both peers.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore

from bench.peers import HOST
from bench.qido import QueryTiming, SearchValues

SCU_AET = "BENCHSCU"
DUL_POLL_SECONDS = 0.0001
STATUS_SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)

#: return keys asked for in every query (both peers keep all of them)
RETURN_KEYS = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyDescription",
    "NumberOfStudyRelatedInstances",
)


@dataclass(frozen=True)
class FindQuery:
    key: str
    title: str
    matching: tuple[tuple[str, str], ...]

    def identifier(self) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for keyword in RETURN_KEYS:
            setattr(ds, keyword, "")
        for keyword, value in self.matching:
            setattr(ds, keyword, value)
        return ds


def build_find_queries(v: SearchValues) -> list[FindQuery]:
    """The study-level queries of issue 3 point 9 as C-FIND identifiers."""
    return [
        FindQuery("patient-id", "Studies by PatientID", (("PatientID", v.patient_id),)),
        FindQuery(
            "patient-name",
            f"Studies by PatientName {v.name_pattern}",
            (("PatientName", v.name_pattern),),
        ),
        FindQuery(
            "study-date",
            f"Studies by StudyDate {v.date_low}-{v.date_high}",
            (("StudyDate", f"{v.date_low}-{v.date_high}"),),
        ),
        FindQuery(
            "modalities",
            f"Studies by ModalitiesInStudy={v.modality}",
            (("ModalitiesInStudy", v.modality),),
        ),
        FindQuery(
            "accession", "Studies by AccessionNumber", (("AccessionNumber", v.accession_number),)
        ),
        FindQuery("all-studies", "All studies", ()),
    ]


def _nodelay(event: Any) -> None:
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    event.assoc.dul._run_loop_delay = DUL_POLL_SECONDS


def _application_entity() -> AE:
    ae = AE(ae_title=SCU_AET)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = 30
    ae.dimse_timeout = 120
    ae.network_timeout = 120
    return ae


@contextmanager
def _association(ae: AE, port: int, aet: str) -> Iterator[Association]:
    assoc = ae.associate(HOST, port, ae_title=aet, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
    if not assoc.is_established:
        raise ConnectionError(f"association with {aet} at port {port} not established")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _find(assoc: Association, identifier: Dataset) -> int:
    """Run one C-FIND; the number of pending (matching) responses."""
    matches = 0
    final: int | None = None
    for status, _ in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
        if status is None or "Status" not in status:
            raise ConnectionError("C-FIND: no response (association aborted or timed out)")
        code = int(status.Status)
        if code in PENDING:
            matches += 1
        else:
            final = code
    if final != STATUS_SUCCESS:
        raise RuntimeError(f"C-FIND final status 0x{final or 0:04X}")
    return matches


def _record(
    timing: QueryTiming, counts: list[int], count: int, elapsed: float, measured: bool
) -> None:
    """Keep the latency; the result count is the most frequent one over the runs.

    pynetdicom's SCU now and then misses one pending response of a fast peer on a busy
    association (seen with Orthanc; dcmtk's findscu always sees all): such runs are
    counted in ``odd_counts`` and reported, not treated as a peer's error."""
    counts.append(count)
    timing.count = Counter(counts).most_common(1)[0][0]
    timing.odd_counts = sum(1 for c in counts if c != timing.count)
    if measured:
        timing.latencies.append(elapsed)


def time_one_association(
    port: int, aet: str, queries: list[FindQuery], repeat: int, warmup: int = 2
) -> list[QueryTiming]:
    """Every query ``warmup + repeat`` times, all on one association."""
    timings = [QueryTiming(q.key) for q in queries]
    ae = _application_entity()
    try:
        with _association(ae, port, aet) as assoc:
            for query, timing in zip(queries, timings, strict=True):
                identifier = query.identifier()
                counts: list[int] = []
                for i in range(warmup + repeat):
                    t0 = time.perf_counter()
                    count = _find(assoc, identifier)
                    _record(timing, counts, count, time.perf_counter() - t0, i >= warmup)
    except (ConnectionError, RuntimeError, OSError) as exc:
        for t in timings:
            if not t.latencies:
                t.errors.append(repr(exc))
    finally:
        ae.shutdown()
    return timings


def time_association_per_query(
    port: int, aet: str, queries: list[FindQuery], repeat: int, warmup: int = 2
) -> list[QueryTiming]:
    """Every query ``warmup + repeat`` times, each on its own association
    (associate, C-FIND, release timed together)."""
    timings = [QueryTiming(q.key) for q in queries]
    ae = _application_entity()
    try:
        for query, timing in zip(queries, timings, strict=True):
            identifier = query.identifier()
            counts: list[int] = []
            try:
                for i in range(warmup + repeat):
                    t0 = time.perf_counter()
                    with _association(ae, port, aet) as assoc:
                        count = _find(assoc, identifier)
                    _record(timing, counts, count, time.perf_counter() - t0, i >= warmup)
            except (ConnectionError, RuntimeError, OSError) as exc:
                timing.errors.append(repr(exc))
    finally:
        ae.shutdown()
    return timings
