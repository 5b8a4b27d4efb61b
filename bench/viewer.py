"""Time to first image in the OHIF viewer: dicomcloud vs Orthanc, same bundle, same run.

A synthetic 300-instance CT series (512x512, 16-bit, native) is stored over STOW-RS
into each peer.  The same viewer bundle (``dicomcloud viewer install``: OHIF 3 by
default, ``--viewer 4.12.51`` for OHIF v2; from the npm cache) is served by one small
static server, configured once with dicomcloud's and once with Orthanc's DICOMweb root;
Debian's Chromium (headless, via Playwright, WebGL 2 from SwiftShader) opens the study
(``/viewer/viewer?StudyInstanceUIDs=...`` for OHIF 3, ``/viewer/viewer/{uid}`` for v2)
in a fresh context (cold cache) and the time from navigation start until the viewport
canvas shows the image is taken in the page (``performance.now()`` at the first
animation frame whose canvas is not uniform).

The viewer is on another origin than both servers, so Chromium runs with web security
off (Orthanc has no CORS settings); both peers are treated alike.

Run: ``.venv/bin/python -m bench.viewer [--instances 300] [--repeat 5] [--viewer V]``;
prints a markdown table and writes ``bench/out/viewer.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from bench import OUT_DIR
from bench.peers import HOST, DicomcloudPeer, OrthancPeer, Peer, free_port
from bench.wado import _stow
from dicomcloud.ui.viewer_bundle import DEFAULT_VERSION, configure, install, package_of

CHROMIUM = "/usr/bin/chromium"
#: WebGL 2 without a GPU (cornerstone3D): ANGLE on SwiftShader.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-web-security",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
]
CACHE = Path.home() / ".cache" / "dicomcloud"
#: performance.now() of the first animation frame whose viewport canvas is not uniform,
#: and when the viewer sent its first DICOMweb request (its bundle loaded and started).
FIRST_IMAGE = """() => {
    const canvas = document.querySelector('.viewport-element canvas.cornerstone-canvas');
    if (!canvas || canvas.width === 0) return false;
    let context = canvas.getContext('2d');
    if (!context) {  // a WebGL canvas: read it through a 2D copy
        const copy = document.createElement('canvas');
        copy.width = canvas.width;
        copy.height = canvas.height;
        context = copy.getContext('2d');
        context.drawImage(canvas, 0, 0);
    }
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let low = 255, high = 0;
    for (let i = 0; i < pixels.length; i += 4 * 101) {
        low = Math.min(low, pixels[i]);
        high = Math.max(high, pixels[i]);
    }
    if (high - low <= 32) return false;
    const dicomweb = performance.getEntriesByType('resource')
        .filter(e => e.name.includes('/dicom-web/'));
    return { shown: performance.now(), firstRequest: dicomweb.length ? dicomweb[0].startTime : 0 };
}"""


def ct_series(count: int) -> tuple[str, list[bytes]]:
    """A CT series of ``count`` axial 512x512 slices, 1 mm apart (a smooth phantom)."""
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    y, x = np.mgrid[-256:256, -256:256]
    body = (x**2 + (y * 1.3) ** 2) < 200**2
    files = []
    for index in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName = "BENCH-VIEWER", "Bench^Viewer"
        ds.StudyDate, ds.StudyTime, ds.Modality = "20260101", "120000", "CT"
        ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
        ds.ImagePositionPatient = [-256.0, -256.0, float(-index)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.FrameOfReferenceUID = frame_of_reference
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ring = np.abs(np.hypot(x, y) - (60 + index % 40)) < 8
        pixels = np.where(body, 1064, 24) + np.where(ring, 600, 0)
        ds.PixelData = pixels.astype(np.uint16).tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append(buffer.getvalue())
    return study, files


class _ViewerFiles(SimpleHTTPRequestHandler):
    """``/viewer/...``: a file of the bundle by its path under ``/viewer/`` (OHIF 3's
    tree) or its name (OHIF v2), else ``index.html``."""

    def translate_path(self, path: str) -> str:
        relative = path.split("?", 1)[0].removeprefix("/viewer/")
        root = Path(self.directory).resolve()
        for candidate in (root / relative, root / relative.rsplit("/", 1)[-1]):
            resolved = candidate.resolve()
            if resolved.is_file() and resolved.is_relative_to(root):
                return str(resolved)
        return str(root / "index.html")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_server(directory: Path) -> Iterator[int]:
    port = free_port()
    server = ThreadingHTTPServer((HOST, port), partial(_ViewerFiles, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


def first_image_ms(browser: Any, url: str, timeout_ms: float) -> tuple[float, float]:
    """Milliseconds from navigation start, and from the first DICOMweb request, until
    the first image is shown."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    # OHIF 3's first-visit tour counts as seen (as after a person's first visit).
    context.add_init_script("localStorage.setItem('shownTours', '[\"basicViewerTour\"]')")
    try:
        page = context.new_page()
        page.goto(url)
        handle = page.wait_for_function(FIRST_IMAGE, polling="raf", timeout=timeout_ms)
        times = handle.json_value()
        return float(times["shown"]), float(times["shown"] - times["firstRequest"])
    finally:
        context.close()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    study, files = ct_series(args.instances)
    work = OUT_DIR / "viewer"
    shutil.rmtree(work, ignore_errors=True)
    pristine = work / "bundle"
    dist = install(pristine, version=args.viewer, cache_dir=CACHE)
    v2 = package_of(dist.version) == "@ohif/viewer"
    results: dict[str, Any] = {"instances": args.instances, "viewer": dist.version, "peers": {}}
    peers: list[Peer] = []
    try:
        for peer_class in (DicomcloudPeer, OrthancPeer):
            ok, why = peer_class.available()
            if not ok:
                print(f"{peer_class.name}: not run ({why})")
                continue
            peer = peer_class()
            peer.start()
            peers.append(peer)
            started = time.perf_counter()
            _stow(peer.http_port, files)
            results["peers"][peer.name] = {
                "version": peer_class.version(),
                "stow_seconds": time.perf_counter() - started,
                "first_image_ms": [],
                "from_first_request_ms": [],
            }
            bundle = work / peer.name
            shutil.copytree(pristine, bundle)
            configure(bundle, mount="/viewer", dicomweb=f"http://{HOST}:{peer.http_port}/dicom-web")
        time.sleep(args.settle)  # both peers: metadata prepared after ingest settles
        with contextlib.ExitStack() as stack, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ports = {p.name: stack.enter_context(static_server(work / p.name)) for p in peers}
            for _ in range(args.repeat):  # peers alternate, so load drifts hit both
                for peer in peers:
                    root = f"http://{HOST}:{ports[peer.name]}/viewer/viewer"
                    url = f"{root}/{study}" if v2 else f"{root}?StudyInstanceUIDs={study}"
                    ms, dicomweb_ms = first_image_ms(browser, url, args.timeout * 1000)
                    results["peers"][peer.name]["first_image_ms"].append(ms)
                    results["peers"][peer.name]["from_first_request_ms"].append(dicomweb_ms)
                    print(
                        f"{peer.name}: first image after {ms:.0f} ms "
                        f"({dicomweb_ms:.0f} ms after the first DICOMweb request)"
                    )
            browser.close()
    finally:
        for peer in peers:
            peer.stop()
    for data in results["peers"].values():
        data["median_ms"] = statistics.median(data["first_image_ms"])
        data["best_ms"] = min(data["first_image_ms"])
        data["median_from_first_request_ms"] = statistics.median(data["from_first_request_ms"])
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after ingest")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per opening")
    parser.add_argument(
        "--viewer", default=DEFAULT_VERSION, help="viewer version (4.x: OHIF v2's @ohif/viewer)"
    )
    args = parser.parse_args(argv)
    results = measure(args)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "viewer.json").write_text(json.dumps(results, indent=2))
    print(f"\nOHIF {results['viewer']}, {results['instances']}-instance CT series, cold cache")
    print("| peer | median ms | best ms | median ms after 1st DICOMweb request | runs (ms) |")
    print("|---|---|---|---|---|")
    for name, data in results["peers"].items():
        runs = ", ".join(f"{v:.0f}" for v in data["first_image_ms"])
        print(
            f"| {name} | {data['median_ms']:.0f} | {data['best_ms']:.0f} "
            f"| {data['median_from_first_request_ms']:.0f} | {runs} |"
        )


if __name__ == "__main__":
    main()
