"""The viewer-ready transcoder in a separate ``dicomcloud worker`` process on a
redis:// bus, as an operator deploys it: ``dicomcloud serve`` stores and relays, the
worker keeps the copy, the server sends it (docs/events.md "Viewer-ready transcoder")."""

from __future__ import annotations

import io
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from pydicom import dcmread

from buses import REDIS_URL, drop_redis_prefix, require_redis, unique_prefix
from conftest import DICOMCLOUD, clean_environment, running_server
from dicomcloud.domain.events import INSTANCE_STORED
from dicomcloud.services import syntaxes as ts
from integration.support import multipart_related, pydicom_file, split_multipart

pytestmark = pytest.mark.backend


def _wait_for(condition: Callable[[], bool], what: str, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout}s; worker log:\n{log.read_text(errors='replace')[-3000:]}")


def _instance(url: str, syntax: str) -> tuple[str, bytes]:
    accept = f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'
    response = httpx.get(url, headers={"Accept": accept}, timeout=60)
    assert response.status_code == 200, response.text
    (part,) = split_multipart(response.content, response.headers["content-type"])
    return part.headers["content-type"], part.data


def test_a_worker_process_keeps_the_copy_the_server_sends(tmp_path: Path) -> None:
    require_redis()
    prefix = unique_prefix()
    env = {
        "DICOMCLOUD_EVENTS__URL": f"{REDIS_URL}?stream_prefix={prefix}:&claim_idle_seconds=5",
        "DICOMCLOUD_WORKERS__IN_PROCESS": "false",
        "DICOMCLOUD_WORKERS__TRANSCODER__ENABLED": "true",
        "DICOMCLOUD_WORKERS__TRANSCODER__TARGET": ts.HTJ2K_LOSSLESS,
    }
    data_dir = tmp_path / "data"
    original = pydicom_file("MR_small_jpeg_ls_lossless.dcm").read_bytes()
    ds = dcmread(io.BytesIO(original))
    blobs = data_dir / "blobs"
    worker_log = tmp_path / "worker.log"
    try:
        with running_server(data_dir, env) as server:
            body, content_type = multipart_related([original])
            stored = httpx.post(
                f"{server.dicomweb_url}/studies",
                content=body,
                headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                timeout=60,
            )
            assert stored.status_code == 200, stored.text
            stream = f"{prefix}:{INSTANCE_STORED}"
            client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
            _wait_for(lambda: client.xlen(stream) == 1, "the event on the stream", worker_log)
            assert not list(blobs.rglob("*.derived"))  # the server converts nothing ahead

            with worker_log.open("wb") as log:
                worker = subprocess.Popen(
                    [str(DICOMCLOUD), "worker", "--data-dir", str(data_dir), "--no-metadata"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**clean_environment(), **env},
                    cwd=tmp_path,
                )
            try:
                _wait_for(
                    lambda: len(list(blobs.rglob("*.derived/*.dcm"))) == 1,
                    "the worker kept the copy",
                    worker_log,
                )
                _wait_for(
                    lambda: client.xpending(stream, "transcoder")["pending"] == 0,
                    "the worker acknowledged the event",
                    worker_log,
                )
                url = (
                    f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/"
                    f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
                )
                copy_type, copy = _instance(url, ts.HTJ2K_LOSSLESS)
                stored_type, as_stored = _instance(url, "*")
            finally:
                worker.send_signal(signal.SIGTERM)
                exit_code = worker.wait(timeout=60)
            client.close()
    finally:
        drop_redis_prefix(prefix)

    assert exit_code == 0, worker_log.read_text(errors="replace")[-3000:]
    (kept,) = blobs.rglob("*.derived/*.dcm")
    assert kept.name.startswith(f"{ts.HTJ2K_LOSSLESS}.")
    assert copy_type == f"application/dicom; transfer-syntax={ts.HTJ2K_LOSSLESS}"
    assert copy == kept.read_bytes()
    received = dcmread(io.BytesIO(copy))
    source = dcmread(io.BytesIO(original))
    source.pixel_array_options(decoding_plugin="pyjpegls")
    assert np.array_equal(received.pixel_array, source.pixel_array)
    assert stored_type == f"application/dicom; transfer-syntax={ts.JPEG_LS_LOSSLESS}"
    assert as_stored == original
    assert "Traceback" not in worker_log.read_text(errors="replace")
