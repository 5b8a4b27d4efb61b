"""What the access log costs ingest and search: the same requests with ``[audit]``
enabled and disabled, in process (ASGI, no network), rounds alternating so that the
machine's load hits both alike; prints the median per-request wall time and process CPU
time (all threads: the index writer too) of each.  On a shared machine the CPU time is
the steadier measure.

    .venv/bin/python -m bench.audit_overhead [--requests 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicomcloud.app import Archive
from dicomcloud.config import load_settings
from dicomcloud.dicomweb.app import create_app

BOUNDARY = "audit-overhead-boundary"


def instance() -> bytes:
    """A 64x64 16-bit Secondary Capture instance (~8 KiB), new UIDs."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "BENCH", "Bench^Audit", "OT"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.arange(64 * 64, dtype=np.uint16).tobytes()
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def body(part: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return head + part + f"\r\n--{BOUNDARY}--\r\n".encode()


Timing = tuple[float, float, float, float]


async def one_round(root: Path, enabled: bool, requests: int) -> Timing:
    """Wall and CPU seconds per STOW-RS request, then per QIDO-RS request (the records
    written before the clock stops)."""
    settings = load_settings(data_dir=root, audit__enabled=enabled)
    archive = await Archive.open(settings)
    await archive.start()
    bodies = [body(instance()) for _ in range(requests)]
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
    transport = httpx.ASGITransport(app=create_app(archive))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            start, cpu = time.perf_counter(), time.process_time()
            for content in bodies:
                response = await client.post("/dicom-web/studies", content=content, headers=headers)
                assert response.status_code == 200, response.text
            await flush(archive)
            stow = (time.perf_counter() - start) / requests, (time.process_time() - cpu) / requests
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(requests):
                response = await client.get("/dicom-web/studies?PatientID=BENCH&limit=10")
                assert response.status_code == 200, response.text
            await flush(archive)
            qido = (time.perf_counter() - start) / requests, (time.process_time() - cpu) / requests
    finally:
        await archive.stop()
    return (*stow, *qido)


async def flush(archive: Archive) -> None:
    if archive.access is not None:
        await archive.access.flush()


async def main(requests: int, rounds: int) -> None:
    results: dict[bool, list[Timing]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        for number in range(rounds):
            for enabled in (False, True) if number % 2 == 0 else (True, False):
                root = Path(tmp) / f"r{number}-{enabled}"
                results[enabled].append(await one_round(root, enabled, requests))
    for label, index in (
        ("STOW-RS wall", 0),
        ("STOW-RS CPU ", 1),
        ("QIDO-RS wall", 2),
        ("QIDO-RS CPU ", 3),
    ):
        off = statistics.median(r[index] for r in results[False]) * 1000
        on = statistics.median(r[index] for r in results[True]) * 1000
        print(
            f"{label}: audit off {off:.2f} ms/request, on {on:.2f} ms/request "
            f"({(on - off) / off * 100:+.1f} %), median of {rounds} rounds x {requests}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
