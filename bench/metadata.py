"""Series metadata latency (WADO-RS, PS3.18 10.4.1.1.6): dicomcloud against Orthanc.

Run from the repository root: ``.venv/bin/python -m bench.metadata`` (``--sizes 40,1000``,
``--requests 30``).  For each size, one series of that many CT instances (pydicom's
CT_small.dcm with new UIDs and positions) is stored in both servers over STOW-RS;
after two warm-up requests each, ``--requests`` GETs of
``/studies/{s}/series/{se}/metadata`` are timed one after the other, on one keep-alive
connection, with the same headers for both (``Accept: application/dicom+json``,
``Accept-Encoding: gzip``), body read completely.  Prints p50 / p90 and the ratio
dicomcloud / Orthanc measured in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import io
import statistics
import time
from collections.abc import Sequence

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from bench.peers import HOST, DicomcloudPeer, OrthancPeer, Peer
from bench.stow import CONTENT_TYPE, build_body

BATCH = 100
HEADERS = {"Accept": "application/dicom+json", "Accept-Encoding": "gzip"}


def make_series(count: int) -> tuple[str, str, list[bytes]]:
    """``count`` instances of one new series, as Part-10 bytes."""
    template = get_testdata_file("CT_small.dcm")
    assert template is not None
    study, series = generate_uid(), generate_uid()
    files = []
    for number in range(1, count + 1):
        ds = dcmread(template)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [0.0, 0.0, float(number)]
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files.append(out.getvalue())
    return study, series, files


def store(peer: Peer, files: Sequence[bytes]) -> None:
    conn = http.client.HTTPConnection(HOST, peer.http_port, timeout=600)
    try:
        for start in range(0, len(files), BATCH):
            body = build_body(files[start : start + BATCH])
            conn.request(
                "POST",
                peer.stow_path,
                body,
                {"Content-Type": CONTENT_TYPE, "Accept": "application/dicom+json"},
            )
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{peer.name}: STOW-RS answered {response.status}")
    finally:
        conn.close()


def timed_gets(peer: Peer, path: str, count: int) -> list[float]:
    conn = http.client.HTTPConnection(HOST, peer.http_port, timeout=600)
    times = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            conn.request("GET", path, headers=HEADERS)
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - t0)
            if response.status != 200:
                raise RuntimeError(f"{peer.name}: metadata answered {response.status}")
    finally:
        conn.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="40,1000")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    series = {size: make_series(size) for size in sizes}
    rows = []
    peers: list[Peer] = [OrthancPeer(), DicomcloudPeer()]
    p50: dict[tuple[str, int], float] = {}
    for peer in peers:
        with peer:
            for size, (study, series_uid, files) in series.items():
                store(peer, files)
                path = f"/dicom-web/studies/{study}/series/{series_uid}/metadata"
                first = timed_gets(peer, path, 1)[0]
                timed_gets(peer, path, 1)
                times = timed_gets(peer, path, args.requests)
                p50[(peer.name, size)] = statistics.median(times)
                p90 = statistics.quantiles(times, n=10)[-1]
                rows.append(
                    f"| {peer.name} | {size} | {first * 1000:.1f} | "
                    f"{p50[(peer.name, size)] * 1000:.1f} | {p90 * 1000:.1f} |"
                )
    print("| server | instances | first request ms | p50 ms | p90 ms |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    for size in sizes:
        ratio = p50[("dicomcloud", size)] / p50[("orthanc", size)]
        print(f"series of {size}: p50 dicomcloud / Orthanc = {ratio:.3f}")


if __name__ == "__main__":
    main()
