"""Hardening limits, each answered clearly: parts per request, query length,
concurrent associations; and no response carries a traceback or a filesystem path."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage, Verification

from conftest import ArchiveFactory, LocalArchive, dimse_for
from dicomcloud.dicomweb.app import create_app
from dicomcloud.errors import IndexUnavailable
from integration.support import new_instance, referenced_items, sop_uids

pytestmark = pytest.mark.timeout(120)


async def test_more_parts_than_max_parts_stops_reading_and_reports(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(ingest__max_parts=2)
    instances = [new_instance() for _ in range(3)]

    response = await local.stow([i.data for i in instances])

    assert response.status_code == 202, response.text
    assert sop_uids(referenced_items(response.json())) == [i.sop for i in instances[:2]]
    assert "more than 2 parts" in response.headers["warning"]
    assert "max_parts" in response.headers["warning"]
    assert not await local.indexed(instances[2].sop)
    assert len(local.files()) == 2


async def test_single_dicom_body_over_the_request_limit_is_413(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(ingest__max_request_bytes=4096)
    big = new_instance(pixels=8192)

    async def chunks():  # type: ignore[no-untyped-def]  # chunked: no Content-Length
        for start in range(0, len(big.data), 1000):
            yield big.data[start : start + 1000]

    response = await local.client.post(
        "/dicom-web/studies",
        content=chunks(),
        headers={"Content-Type": "application/dicom", "Accept": "application/dicom+json"},
    )

    assert response.status_code == 413
    assert "max_request_bytes" in response.json()["error"]
    assert local.files() == set()


async def test_query_string_over_the_limit_is_414(make_archive: ArchiveFactory) -> None:
    local = await make_archive(search__max_query_length=512)
    instance = new_instance()
    assert (await local.stow([instance.data])).status_code == 200

    long_query = "PatientName=" + "A" * 600
    response = await local.client.get(f"/dicom-web/studies?{long_query}")
    assert response.status_code == 414
    assert "512" in response.json()["error"]
    assert "max_query_length" in response.json()["error"]

    ok = await local.client.get(f"/dicom-web/studies?StudyInstanceUID={instance.study}")
    assert ok.status_code == 200
    assert len(ok.json()) == 1


def _public(response: Any, data_dir: Path) -> None:
    """What no response may carry."""
    text = response.text
    assert "Traceback" not in text
    assert 'File "' not in text
    assert str(data_dir) not in text
    assert "/tmp" not in text and ".py" not in text


async def test_unexpected_error_is_a_plain_500(
    local: LocalArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"boom in {local.data_dir}/index.sqlite3 at query.py line 3")

    monkeypatch.setattr(local.archive.query, "search", broken)
    # As a server does: the response is sent, the exception goes to the log.
    transport = httpx.ASGITransport(app=create_app(local.archive), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/dicom-web/studies")

    assert response.status_code == 500
    assert response.json() == {"status": 500, "error": "internal error; see the server log"}
    _public(response, local.data_dir)


async def test_server_side_failure_reason_hides_paths(
    local: LocalArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise IndexUnavailable(f"unable to open database file {local.data_dir}/index.sqlite3")

    monkeypatch.setattr(local.archive.query, "search", unavailable)

    response = await local.client.get("/dicom-web/studies")

    assert response.status_code == 503
    assert response.json()["error"] == "unable to open database file <path>"
    _public(response, local.data_dir)


async def test_readiness_failure_hides_paths(make_archive: ArchiveFactory, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"x")
    local = await make_archive(storage__url=f"file://{blocker}/blobs")

    response = await local.client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["storage"].startswith("storage root <path> is not writable")
    _public(response, tmp_path)


async def test_associations_over_the_limit_are_rejected_transient_local_limit(
    make_archive: ArchiveFactory,
) -> None:
    """PS3.8 7.1.1.9: A-ASSOCIATE-RJ, result 2 (rejected-transient), source 3 (service
    provider, presentation related), reason 2 (local-limit-exceeded)."""
    local = await make_archive(
        server__host="127.0.0.1", server__dicom_port=0, dimse__max_associations=1
    )
    async with dimse_for(local) as server:

        def scenario() -> tuple[bool, tuple[int, int, int] | None, bool]:
            ae = AE(ae_title="LIMITS")
            ae.add_requested_context(Verification)
            ae.acse_timeout = 30
            first = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
            assert first.is_established
            try:
                second = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
                rejected = second.is_rejected
                detail = None
                if second.acceptor.primitive is not None:
                    p = second.acceptor.primitive
                    detail = (int(p.result), int(p.result_source), int(p.diagnostic))
                if second.is_established:
                    second.release()
            finally:
                first.release()
            # The slot frees once the server's association thread has ended, a moment
            # after the release: a modality told "rejected-transient" retries.
            after = False
            deadline = time.monotonic() + 20
            while not after and time.monotonic() < deadline:
                third = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
                after = third.is_established
                if after:
                    assert third.send_c_echo().Status == 0x0000
                    third.release()
                else:
                    time.sleep(0.2)
            return rejected, detail, after

        rejected, detail, after = await asyncio.to_thread(scenario)

    assert rejected, (detail, after)
    assert detail == (0x02, 0x03, 0x02)
    assert after  # a slot frees when an association ends


async def test_c_store_over_the_instance_limit_is_refused_a700(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(
        server__host="127.0.0.1", server__dicom_port=0, ingest__max_instance_bytes=4096
    )
    small, big = new_instance(), new_instance(pixels=8192)
    async with dimse_for(local) as server:

        def store() -> list[tuple[int, str]]:
            ae = AE(ae_title="LIMITS")
            ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
            assoc = ae.associate("127.0.0.1", server.port, ae_title=server.ae_title)
            assert assoc.is_established
            out = []
            for instance in (big, small):
                status = assoc.send_c_store(dcmread(io.BytesIO(instance.data)))
                out.append((int(status.Status), str(status.get("ErrorComment", ""))))
            assoc.release()
            return out

        (big_status, big_comment), (small_status, _) = await asyncio.to_thread(store)

    assert big_status == 0xA700
    assert "max_instance_bytes" in big_comment
    assert small_status == 0x0000
    assert not await local.indexed(big.sop)
    assert await local.indexed(small.sop)
