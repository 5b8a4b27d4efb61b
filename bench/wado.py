"""WADO-RS retrieve benchmark: dicomcloud vs Orthanc in the same run.

Both peers get the same study over STOW-RS: ``--instances`` native 512x512 16-bit
images and one 100-frame JPEG 2000 lossless instance.  Then, per peer:

- whole-study WADO-RS as stored (``transfer-syntax=*``), fetched with curl: MB/s, best
  of ``--repeat``;
- single native frame (``application/octet-stream``): p50 latency;
- frame 50 of the 100-frame JPEG 2000 instance, as stored (``image/jp2``): p50.

Run: ``.venv/bin/python -m bench.wado [--instances 200] [--repeat 3] [--frames 200]``.
Prints a markdown table and writes ``bench/out/wado.json``.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from bench import OUT_DIR
from bench.peers import HOST, DicomcloudPeer, OrthancPeer, Peer

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
OCTET = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
JP2 = 'multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.90'


def _native(study: str, series: str, index: int) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName, ds.Modality = "BENCH", "Bench^Wado", "OT"
    ds.InstanceNumber = index + 1
    ds.Rows = ds.Columns = 512
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(index)
    ds.PixelData = rng.integers(0, 4096, (512, 512), dtype="<u2").tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _multiframe(study: str) -> tuple[bytes, Dataset]:
    path = get_testdata_file("emri_small_jpeg_2k_lossless.dcm")
    ds = dcmread(str(path))
    frames = list(generate_frames(ds.PixelData, number_of_frames=10))
    ds.NumberOfFrames = 100
    ds.PixelData = encapsulate([frames[i % 10] for i in range(100)], has_bot=True)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.PatientID, ds.PatientName = "BENCH", "Bench^Wado"  # Orthanc keys studies by patient
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), ds


def _request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _stow(port: int, instances: Sequence[bytes]) -> None:
    for start in range(0, len(instances), 20):
        boundary = "benchboundary"
        body = (
            b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
                for part in instances[start : start + 20]
            )
            + f"--{boundary}--\r\n".encode()
        )
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        status, text = _request(port, "POST", "/dicom-web/studies", {
            "Content-Type": content_type, "Accept": "application/dicom+json"}, body)  # fmt: skip
        if status not in (200, 202):
            raise RuntimeError(f"STOW-RS failed with {status}: {text[:200]!r}")


def _p50(port: int, path: str, accept: str, count: int) -> tuple[float, int]:
    times = []
    size = 0
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        for _ in range(count):
            started = time.perf_counter()
            conn.request("GET", path, headers={"Accept": accept})
            response = conn.getresponse()
            body = response.read()
            times.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"GET {path} -> {response.status}: {body[:200]!r}")
            size = len(body)
    finally:
        conn.close()
    return statistics.median(times) * 1000, size


def measure(peer: Peer, args: argparse.Namespace) -> dict[str, Any]:
    study, series = generate_uid(), generate_uid()
    natives = [_native(study, series, i) for i in range(args.instances)]
    multi, multi_ds = _multiframe(study)
    _stow(peer.http_port, [*natives, multi])
    time.sleep(args.settle)  # let background work after ingest finish, on both peers
    first = dcmread(io.BytesIO(natives[0]))
    base = "/dicom-web/studies/" + study
    best = float("inf")
    size = 0
    url = f"http://{HOST}:{peer.http_port}{base}"
    for _ in range(args.repeat):
        # curl, not http.client: Python's client is slower than both servers.
        out = subprocess.run(
            ["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download} %{time_total}",
             "-H", f"Accept: {AS_STORED}", url],
            capture_output=True, text=True, check=True, timeout=600,
        ).stdout.split()  # fmt: skip
        size = int(float(out[0]))
        best = min(best, float(out[1]))
    native_frame = f"{base}/series/{series}/instances/{first.SOPInstanceUID}/frames/1"
    j2k_frame = (
        f"{base}/series/{multi_ds.SeriesInstanceUID}/instances/{multi_ds.SOPInstanceUID}/frames/50"
    )
    _p50(peer.http_port, native_frame, OCTET, 20)  # warm-up
    _p50(peer.http_port, j2k_frame, JP2, 20)
    native_p50, _ = _p50(peer.http_port, native_frame, OCTET, args.frames)
    j2k_p50, _ = _p50(peer.http_port, j2k_frame, JP2, args.frames)
    return {
        "study_mb": size / 1e6,
        "study_mb_s": size / 1e6 / best,
        "native_frame_p50_ms": native_p50,
        "j2k_frame50_p50_ms": j2k_p50,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after ingest")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    for peer_class in (OrthancPeer, DicomcloudPeer):
        ok, why = peer_class.available()
        if not ok:
            print(f"{peer_class.name}: not run ({why})")
            continue
        with peer_class() as peer:
            results[peer_class.name] = measure(peer, args)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "wado.json").write_text(json.dumps(results, indent=2))
    print("| metric | " + " | ".join(results) + " | ratio |")
    print("|---|" + "---|" * (len(results) + 1))
    for metric in ("study_mb_s", "native_frame_p50_ms", "j2k_frame50_p50_ms"):
        values = [results[name][metric] for name in results]
        ratio = ""
        if "orthanc" in results and "dicomcloud" in results:
            ratio = f"{results['dicomcloud'][metric] / results['orthanc'][metric]:.2f}"
        print(f"| {metric} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {ratio} |")


if __name__ == "__main__":
    main()
