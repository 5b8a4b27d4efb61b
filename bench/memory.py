"""Peak server memory while ONE large STOW-RS request (~1 GB) is ingested.

The body is generated on the fly and streamed with a fixed Content-Length, so the client
needs only a few MB. Two shapes are available:

* ``instances``: many 512x512 16-bit CT-like slices (2000 x 513 KB ~ 1.05 GB)
* ``multiframe``: a few 256 MB multi-frame instances (4 x 512 frames of 512x512 16-bit)

While the request runs, a thread samples VmRSS of the server's process tree every 20 ms;
afterwards VmHWM (the kernel's peak resident set) of every process in the tree is summed.
"""

from __future__ import annotations

import http.client
import io
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)

from bench.dataset import derive_uid
from bench.peers import HOST, process_tree, status_kb
from bench.stow import closing_delimiter, parse_response, part_header, post

SIZE = 512
FRAME_BYTES = SIZE * SIZE * 2
CHUNK = 1 << 20


@dataclass(frozen=True)
class MemoryShape:
    name: str
    instances: int
    frames: int  # per instance

    @property
    def pixel_bytes(self) -> int:
        return self.frames * FRAME_BYTES


def shapes(quick: bool) -> dict[str, MemoryShape]:
    if quick:
        return {
            "instances": MemoryShape("instances", 400, 1),  # ~210 MB
            "multiframe": MemoryShape("multiframe", 2, 128),  # 2 x 64 MB
        }
    return {
        "instances": MemoryShape("instances", 2000, 1),  # ~1.05 GB
        "multiframe": MemoryShape("multiframe", 4, 512),  # 4 x 256 MB
    }


def _header(seed: int, shape: MemoryShape, index: int) -> bytes:
    """Part-10 bytes of one instance up to (excluding) the Pixel Data element."""
    multi = shape.frames > 1
    sop_class = MultiFrameGrayscaleWordSecondaryCaptureImageStorage if multi else CTImageStorage
    sop_uid = derive_uid(seed, "memory", shape.name, "instance", index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "BENCHMEM"
    ds.Modality = "OT" if multi else "CT"
    ds.ReferringPhysicianName = ""
    ds.PatientName = "Bench^Memory"
    ds.PatientID = "BENCH-MEMORY"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = derive_uid(seed, "memory", shape.name, "study")
    ds.SeriesInstanceUID = derive_uid(seed, "memory", shape.name, "series", index // 500)
    ds.StudyID = "1"
    ds.SeriesNumber = 1 + index // 500
    ds.InstanceNumber = index + 1
    if multi:
        ds.ConversionType = "WSD"
        ds.NumberOfFrames = shape.frames
    else:
        ds.ImagePositionPatient = ["-250.0", "-250.0", f"{0.0 - index:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = derive_uid(seed, "memory", shape.name, "for")
        ds.PixelSpacing = ["0.976562", "0.976562"]
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = SIZE
    ds.Columns = SIZE
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    pixel_len = shape.pixel_bytes
    # (7FE0,0010) OW, 2 reserved bytes, 32-bit length (explicit VR little endian)
    return buf.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_len)


class StreamedBody:
    """A multipart/related body generated chunk by chunk with a precomputed length."""

    def __init__(self, seed: int, shape: MemoryShape) -> None:
        self.shape = shape
        self.headers = [_header(seed, shape, i) for i in range(shape.instances)]
        rng = np.random.default_rng([seed, 7])
        self.frames = [
            rng.integers(0, 4096, SIZE * SIZE, dtype=np.uint16).astype("<u2").tobytes()
            for _ in range(4)
        ]
        self.dicom_bytes = sum(len(h) for h in self.headers) + shape.instances * shape.pixel_bytes
        head = part_header()
        self.length = (
            self.dicom_bytes + shape.instances * (len(head) + 2) + len(closing_delimiter())
        )

    def __iter__(self) -> Iterator[bytes]:
        head = part_header()
        for i, header in enumerate(self.headers):
            yield head + header
            for f in range(self.shape.frames):
                frame = self.frames[(i + f) % len(self.frames)]
                for off in range(0, FRAME_BYTES, CHUNK):
                    yield frame[off : off + CHUNK]
            yield b"\r\n"
        yield closing_delimiter()


@dataclass
class MemoryRun:
    shape: str
    instances: int
    body_bytes: int
    seconds: float
    status: int
    stored: int
    failed: int
    baseline_rss_kb: int
    peak_sampled_rss_kb: int
    peak_hwm_kb: int
    max_process_hwm_kb: int
    processes: int
    errors: list[str] = field(default_factory=list)


class _Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.pids: set[int] = set()
        self._stop_event = threading.Event()

    def run(self) -> None:
        tree_refresh = 0.0
        tree = [self.pid]
        while not self._stop_event.is_set():
            now = time.monotonic()
            if now >= tree_refresh:
                tree = process_tree(self.pid)
                self.pids.update(tree)
                tree_refresh = now + 0.5
            self.peak_kb = max(self.peak_kb, sum(status_kb(p, "VmRSS") for p in tree))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def run_memory(
    server_pid: int, port: int, path: str, seed: int, shape: MemoryShape, timeout: float = 900.0
) -> MemoryRun:
    body = StreamedBody(seed, shape)
    tree = process_tree(server_pid)
    baseline = sum(status_kb(p, "VmRSS") for p in tree)
    sampler = _Sampler(server_pid)
    sampler.start()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    errors: list[str] = []
    t0 = time.monotonic()
    try:
        status, data = post(conn, path, iter(body), body.length, timeout)
    except (OSError, http.client.HTTPException) as exc:
        status, data = -1, repr(exc).encode()
    seconds = time.monotonic() - t0
    conn.close()
    time.sleep(0.2)  # let the sampler see any post-response peak
    sampler.stop()
    pids = sampler.pids | set(process_tree(server_pid))
    hwms = [status_kb(p, "VmHWM") for p in pids]
    outcome = parse_response(status, data, shape.instances)
    if outcome.detail:
        errors.append(f"HTTP {status}: {outcome.detail}")
    return MemoryRun(
        shape=shape.name,
        instances=shape.instances,
        body_bytes=body.dicom_bytes,
        seconds=seconds,
        status=status,
        stored=outcome.stored,
        failed=outcome.failed,
        baseline_rss_kb=baseline,
        peak_sampled_rss_kb=sampler.peak_kb,
        peak_hwm_kb=sum(hwms),
        max_process_hwm_kb=max(hwms, default=0),
        processes=len(pids),
        errors=errors,
    )
