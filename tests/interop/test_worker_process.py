"""``dicomcloud serve`` and a separate ``dicomcloud worker`` on a redis:// bus, as an
operator deploys them: the server stores and relays, the worker builds the series
metadata, the server serves it (DESIGN.md 5; docs/events.md)."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from pydicom.uid import generate_uid

from buses import REDIS_URL, drop_redis_prefix, require_redis, unique_prefix
from conftest import DICOMCLOUD, clean_environment, running_server
from dicomcloud.domain.events import INSTANCE_STORED
from integration.support import multipart_related, new_dataset, part10

pytestmark = pytest.mark.backend


def _wait_for(condition: Callable[[], bool], what: str, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout}s; worker log:\n{log.read_text(errors='replace')[-3000:]}")


def test_a_worker_process_builds_the_series_metadata_the_server_serves(tmp_path: Path) -> None:
    require_redis()
    prefix = unique_prefix()
    bus = f"{REDIS_URL}?stream_prefix={prefix}:&claim_idle_seconds=5"
    env = {"DICOMCLOUD_EVENTS__URL": bus, "DICOMCLOUD_WORKERS__IN_PROCESS": "false"}
    data_dir = tmp_path / "data"
    study, series = generate_uid(), generate_uid()
    files, sops = [], []
    for number in (1, 2, 3):
        ds = new_dataset(study=study, series=series, pixels=2048)
        ds.InstanceNumber = number
        files.append(part10(ds))
        sops.append(str(ds.SOPInstanceUID))
    metadata_root = data_dir / "metadata"
    worker_log = tmp_path / "worker.log"
    try:
        with running_server(data_dir, env) as server:
            body, content_type = multipart_related(files)
            stored = httpx.post(
                f"{server.dicomweb_url}/studies",
                content=body,
                headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                timeout=60,
            )
            assert stored.status_code == 200, stored.text
            stream = f"{prefix}:{INSTANCE_STORED}"
            client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
            _wait_for(lambda: client.xlen(stream) == 3, "3 events on the stream", worker_log)
            assert not list(metadata_root.rglob("*.json*"))  # the server builds nothing

            with worker_log.open("wb") as log:
                worker = subprocess.Popen(
                    [str(DICOMCLOUD), "worker", "--data-dir", str(data_dir)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={
                        **clean_environment(),
                        **env,
                        "DICOMCLOUD_SERVER__BASE_URL": server.base_url,
                        "DICOMCLOUD_METADATA__QUIET_SECONDS": "0.2",
                    },
                    cwd=tmp_path,
                )
            try:
                _wait_for(
                    lambda: len(list(metadata_root.rglob("series.*.json.gz"))) == 1,
                    "the worker built the series metadata",
                    worker_log,
                )
                _wait_for(
                    lambda: client.xpending(stream, "metadata")["pending"] == 0,
                    "the worker acknowledged every event",
                    worker_log,
                )
                response = httpx.get(
                    f"{server.dicomweb_url}/studies/{study}/series/{series}/metadata", timeout=60
                )
            finally:
                worker.send_signal(signal.SIGTERM)
                exit_code = worker.wait(timeout=60)
            client.close()
    finally:
        drop_redis_prefix(prefix)

    assert exit_code == 0, worker_log.read_text(errors="replace")[-3000:]
    assert response.status_code == 200, response.text
    (aggregate,) = metadata_root.rglob("series.*.json.gz")
    assert response.json() == json.loads(gzip.decompress(aggregate.read_bytes()))
    served = [item["00080018"]["Value"][0] for item in response.json()]
    assert served == sops  # InstanceNumber order
    assert "Traceback" not in worker_log.read_text(errors="replace")
