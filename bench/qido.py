"""QIDO-RS latency: the queries of a study list and a viewer, timed over one keep-alive
HTTP connection (PS3.18 10.6).

Each query is sent a few times to warm up, then ``repeat`` times back to back; every
response must be ``200`` (or ``204`` with no match) with a DICOM JSON array, whose length
is the result count.  Latency is client-side wall time from sending the request to
having read the whole body.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from bench.peers import HOST

ACCEPT = "application/dicom+json"


@dataclass(frozen=True)
class QidoQuery:
    """One search: a key, a human title, the path below the DICOMweb root, the query
    string parameters, and whether it lists studies (the at-scale targets apply)."""

    key: str
    title: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    study_list: bool = True

    def target(self, root: str = "/dicom-web") -> str:
        query = urlencode(self.params, safe="*,-^", quote_via=quote)
        return f"{root}{self.path}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class SearchValues:
    """Values for the queries, drawn from the loaded data."""

    patient_id: str
    name_pattern: str
    date_low: str
    date_high: str
    modality: str
    accession_number: str
    study_uid: str
    series_uid: str
    page_offset: int
    page_size: int = 25
    list_limit: int | None = None  # a limit on every study list (the at-scale run)


def build_queries(v: SearchValues) -> list[QidoQuery]:
    """The queries of issue 3 point 9, in report order."""
    limit: tuple[tuple[str, str], ...] = (
        (("limit", str(v.list_limit)),) if v.list_limit is not None else ()
    )
    return [
        QidoQuery("patient-id", "Studies by PatientID", "/studies", (("PatientID", v.patient_id),)),
        QidoQuery(
            "patient-name",
            f"Studies by PatientName {v.name_pattern}",
            "/studies",
            (("PatientName", v.name_pattern), *limit),
        ),
        QidoQuery(
            "study-date",
            f"Studies by StudyDate {v.date_low}-{v.date_high}",
            "/studies",
            (("StudyDate", f"{v.date_low}-{v.date_high}"), *limit),
        ),
        QidoQuery(
            "modalities",
            f"Studies by ModalitiesInStudy={v.modality}",
            "/studies",
            (("ModalitiesInStudy", v.modality), *limit),
        ),
        QidoQuery(
            "accession",
            "Studies by AccessionNumber",
            "/studies",
            (("AccessionNumber", v.accession_number),),
        ),
        QidoQuery(
            "ohif-list",
            f"OHIF study list (limit {v.page_size}, offset {v.page_offset})",
            "/studies",
            (
                ("limit", str(v.page_size)),
                ("offset", str(v.page_offset)),
                ("fuzzymatching", "false"),
                ("includefield", "00081030,00080060"),
            ),
        ),
        QidoQuery(
            "all-studies",
            "All studies" + (f" (limit {v.list_limit})" if v.list_limit else ""),
            "/studies",
            limit,
        ),
        QidoQuery(
            "study-series",
            "Series of a study",
            f"/studies/{v.study_uid}/series",
            study_list=False,
        ),
        QidoQuery(
            "series-instances",
            "Instances of a series",
            f"/studies/{v.study_uid}/series/{v.series_uid}/instances",
            study_list=False,
        ),
    ]


@dataclass
class QueryTiming:
    """The latencies of one query against one peer."""

    key: str
    count: int = -1
    status: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: runs whose result count differed from the most frequent one (C-FIND: see cfind.py)
    odd_counts: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.latencies)

    def p50_ms(self) -> float:
        return 1000 * percentile(self.latencies, 0.5)

    def p95_ms(self) -> float:
        return 1000 * percentile(self.latencies, 0.95)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..1) of ``values`` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _get(conn: http.client.HTTPConnection, target: str) -> tuple[int, bytes]:
    conn.request("GET", target, headers={"Accept": ACCEPT})
    resp = conn.getresponse()
    return resp.status, resp.read()


def result_count(status: int, body: bytes) -> int:
    """How many results a QIDO response holds (ValueError if it is no DICOM JSON array)."""
    if status == 204 or (status == 200 and not body.strip()):
        return 0
    if status != 200:
        raise ValueError(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
    doc = json.loads(body)
    if not isinstance(doc, list):
        raise ValueError(f"not a JSON array: {body[:120]!r}")
    return len(doc)


def time_query(
    port: int, query: QidoQuery, repeat: int, warmup: int = 3, timeout: float = 120.0
) -> QueryTiming:
    """``warmup`` then ``repeat`` runs of ``query`` on one keep-alive connection."""
    timing = QueryTiming(query.key)
    target = query.target()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        for i in range(warmup + repeat):
            t0 = time.perf_counter()
            try:
                status, body = _get(conn, target)
            except (OSError, http.client.HTTPException) as exc:
                timing.errors.append(f"{target}: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
                continue
            elapsed = time.perf_counter() - t0
            try:
                count = result_count(status, body)
            except ValueError as exc:
                timing.errors.append(f"{target}: {exc}")
                break
            timing.status = status
            if timing.count not in (-1, count):
                timing.errors.append(f"{target}: result count changed {timing.count} -> {count}")
            timing.count = count
            if i >= warmup:
                timing.latencies.append(elapsed)
    finally:
        with contextlib.suppress(OSError):
            conn.close()
    return timing
