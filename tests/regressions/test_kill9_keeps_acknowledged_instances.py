"""Nothing acknowledged is ever lost, even on ``kill -9`` (DESIGN.md, data flow).

Instances acknowledged over STOW-RS (200) and C-STORE (0x0000) must all be back, dataset
bytes identical, after the server is killed without any chance to clean up and started again
on the same data directory; the temp files an interrupted write may leave are swept.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from conftest import start_server
from integration.support import (
    AS_STORED,
    SECONDARY_CAPTURE_STORAGE,
    StoreSCU,
    dataset_bytes,
    multipart_related,
    new_instance,
    split_multipart,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]


def test_acknowledged_instances_survive_kill_9(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir)
    acknowledged: dict[str, tuple[str, bytes, bool]] = {}
    try:
        stowed = [new_instance() for _ in range(30)]
        for start in range(0, len(stowed), 10):
            batch = stowed[start : start + 10]
            body, content_type = multipart_related([item.data for item in batch])
            response = httpx.post(
                f"{server.dicomweb_url}/studies",
                content=body,
                headers={"Content-Type": content_type},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            acknowledged.update((item.sop, (item.path, item.data, True)) for item in batch)

        scu = StoreSCU(server.dicom_port, [(SECONDARY_CAPTURE_STORAGE, ExplicitVRLittleEndian)])
        try:
            for _ in range(10):
                item = new_instance()
                source = tmp_path / f"{item.sop}.dcm"
                source.write_bytes(item.data)
                assert scu.store(source).status == 0x0000
                acknowledged[item.sop] = (item.path, item.data, False)
        finally:
            scu.release()
    finally:
        # No SIGTERM, no clean-up: the whole process group dies at once.
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
    (data_dir / "blobs" / ".tmp" / "interrupted.part").write_bytes(b"half a file")

    restarted = start_server(data_dir)
    try:
        for sop, (path, data, whole_file) in acknowledged.items():
            response = httpx.get(f"{restarted.dicomweb_url}{path}", headers=AS_STORED, timeout=30)
            assert response.status_code == 200, sop
            (part,) = split_multipart(response.content, response.headers["content-type"])
            if whole_file:  # STOW-RS: the file as sent
                assert part.data == data, sop
            else:  # C-STORE sends no File Meta: the dataset as sent
                assert dataset_bytes(part.data) == dataset_bytes(data), sop
        assert restarted.instance_rows() == len(acknowledged) == 40
        assert list((data_dir / "blobs" / ".tmp").iterdir()) == []
    finally:
        restarted.stop()
