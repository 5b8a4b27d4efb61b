"""STOW-RS clients: prebuilt multipart bodies, one process per concurrent client.

Each client process reads its files and builds all its request bodies in memory before
a shared barrier opens, then sends them back to back over one keep-alive connection
(``http.client``: the lightest HTTP client in the standard library, so the client does
not compete with the server for the two cores more than necessary). The throughput is
measured from the first request of any client to the last response of any client.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing as mp
import queue
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.peers import HOST

BOUNDARY = "dicomcloud-bench-boundary-4f1c2a9e"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
ACCEPT = "application/dicom+json"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
BUILD_TIMEOUT = 600.0


def part_header() -> bytes:
    return f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()


def closing_delimiter() -> bytes:
    return f"--{BOUNDARY}--\r\n".encode()


def build_body(parts: Iterable[bytes]) -> bytes:
    """A complete multipart/related body from the DICOM Part-10 byte strings."""
    chunks: list[bytes] = []
    head = part_header()
    for data in parts:
        chunks += [head, data, b"\r\n"]
    chunks.append(closing_delimiter())
    return b"".join(chunks)


@dataclass
class StowOutcome:
    """What one STOW response said."""

    status: int
    stored: int
    failed: int
    detail: str = ""


def parse_response(status: int, body: bytes, sent: int) -> StowOutcome:
    """Count stored/failed instances from a STOW response (DICOM JSON if present)."""
    stored = 0
    failed = 0
    detail = ""
    doc: Any = None
    if body:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            doc = json.loads(body)
    if isinstance(doc, dict):
        failed = len(doc.get(FAILED_SOP_SEQUENCE, {}).get("Value", []) or [])
        stored = len(doc.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", []) or [])
    if status != 200:
        detail = body[:300].decode("utf-8", "replace")
        if not failed:
            failed = sent - stored
    elif doc is None:
        # 200 without a DICOM JSON body: trust the status
        stored = sent
    if failed and not detail:
        detail = body[:300].decode("utf-8", "replace")
    return StowOutcome(status, stored, failed, detail)


def post(
    conn: http.client.HTTPConnection,
    path: str,
    body: bytes | Iterator[bytes],
    length: int,
    timeout: float,
) -> tuple[int, bytes]:
    """POST a multipart body (bytes, or an iterator of chunks with a known length)."""
    conn.timeout = timeout
    conn.putrequest("POST", path, skip_accept_encoding=True)
    conn.putheader("Content-Type", CONTENT_TYPE)
    conn.putheader("Accept", ACCEPT)
    conn.putheader("Content-Length", str(length))
    conn.endheaders()
    if isinstance(body, bytes):
        conn.send(body)
    else:
        for chunk in body:
            conn.send(chunk)
    resp = conn.getresponse()
    return resp.status, resp.read()


@dataclass
class ClientResult:
    """What one client process did."""

    requests: int = 0
    instances_sent: int = 0
    instances_stored: int = 0
    instances_failed: int = 0
    failed_requests: int = 0
    errors: list[str] = field(default_factory=list)
    reconnects: int = 0
    start: float = 0.0
    end: float = 0.0
    cpu_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)


def _client(
    port: int,
    path: str,
    batches: list[list[str]],
    barrier: Any,
    out: Any,
    timeout: float,
) -> None:
    result = ClientResult()
    try:
        bodies = [(build_body(Path(p).read_bytes() for p in b), len(b)) for b in batches]
    except OSError as exc:
        result.errors.append(f"reading files: {exc}")
        bodies = []
    barrier.wait(timeout=BUILD_TIMEOUT)
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    cpu0 = time.process_time()
    result.start = time.monotonic()
    for body, n in bodies:
        t0 = time.monotonic()
        status, data = -1, b""
        for attempt in range(2):  # one retry when a kept-alive connection was closed
            try:
                status, data = post(conn, path, body, len(body), timeout)
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
                if attempt == 0 and result.requests > 0:
                    result.reconnects += 1
                    continue
                status, data = -1, repr(e).encode()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
                status, data = -1, repr(e).encode()
                break
        result.latencies.append(time.monotonic() - t0)
        outcome = parse_response(status, data, n)
        result.requests += 1
        result.instances_sent += n
        result.instances_stored += outcome.stored
        result.instances_failed += outcome.failed
        if status != 200:
            result.failed_requests += 1
        if outcome.detail and len(result.errors) < 5:
            result.errors.append(f"HTTP {status}: {outcome.detail}")
    result.end = time.monotonic()
    result.cpu_seconds = time.process_time() - cpu0
    conn.close()
    out.put(result)


def split_even(items: Sequence[list[str]], n: int) -> list[list[list[str]]]:
    """Split the batches into ``n`` contiguous chunks of about equal instance counts."""
    total = sum(len(b) for b in items)
    chunks: list[list[list[str]]] = [[] for _ in range(n)]
    acc = 0
    for b in items:
        idx = min(n - 1, acc * n // max(total, 1))
        chunks[idx].append(b)
        acc += len(b)
    return chunks


@dataclass
class StowRun:
    """Aggregate of one STOW scenario run."""

    seconds: float
    requests: int
    instances_sent: int
    instances_stored: int
    instances_failed: int
    failed_requests: int
    reconnects: int
    errors: list[str]
    latencies: list[float]
    client_cpu_seconds: float


def run_stow(
    port: int,
    path: str,
    files: Sequence[Path],
    per_request: int,
    clients: int,
    timeout: float = 300.0,
    scenario_timeout: float = 1800.0,
) -> StowRun:
    """Send ``files`` with ``per_request`` instances per request from ``clients`` processes."""
    names = [str(f) for f in files]
    batches = [names[i : i + per_request] for i in range(0, len(names), per_request)]
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)
    out: Any = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(port, path, chunk, barrier, out, timeout), daemon=True)
        for chunk in split_even(batches, clients)
    ]
    for p in procs:
        p.start()
    barrier.wait(timeout=BUILD_TIMEOUT)
    results: list[ClientResult] = []
    deadline = time.monotonic() + scenario_timeout
    while len(results) < clients and time.monotonic() < deadline:
        try:
            results.append(out.get(timeout=1.0))
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and out.empty():
                break
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    errors = [e for r in results for e in r.errors]
    if len(results) < clients:
        errors.append(f"{clients - len(results)} client process(es) gave no result")
    active = [r for r in results if r.requests]
    seconds = (max(r.end for r in active) - min(r.start for r in active)) if active else 0.0
    return StowRun(
        seconds=seconds,
        requests=sum(r.requests for r in results),
        instances_sent=sum(r.instances_sent for r in results),
        instances_stored=sum(r.instances_stored for r in results),
        instances_failed=sum(r.instances_failed for r in results)
        + (len(files) - sum(r.instances_sent for r in results)),
        failed_requests=sum(r.failed_requests for r in results),
        reconnects=sum(r.reconnects for r in results),
        errors=errors[:10],
        latencies=sorted(x for r in results for x in r.latencies),
        client_cpu_seconds=sum(r.cpu_seconds for r in results),
    )
