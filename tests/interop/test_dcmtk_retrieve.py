"""dcmtk's getscu and movescu against ``dicomcloud serve``, with a dcmtk storescp as the
Move Destination (PS3.4 C.4.2, C.4.3): files arrive byte for byte when the receiver
accepts the stored transfer syntax, decompressed with the same pixels when it does not."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from conftest import RealServer, free_port, require_tool, running_server
from integration.support import (
    dataset_bytes,
    multipart_related,
    new_dataset,
    part10,
    pydicom_file,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

DESTINATION = "STORESCP"
STORESCP_PORT = free_port()


def dcmtk_env() -> dict[str, str]:
    # dcmtk honours TCP_NODELAY from the environment: no 40 ms Nagle stalls per PDU.
    return {**os.environ, "TCP_NODELAY": "1"}


def _read(path: Path | bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(path, bytes):
            return dcmread(io.BytesIO(path))
        return dcmread(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """``dicomcloud serve`` with the storescp of these tests as its Move Destination."""
    env = {"DICOMCLOUD_DIMSE__DESTINATIONS": f'{{"{DESTINATION}": "127.0.0.1:{STORESCP_PORT}"}}'}
    with running_server(tmp_path_factory.mktemp("retrieve") / "data", env) as running:
        yield running


@pytest.fixture(scope="module")
def stored(server: RealServer) -> dict[str, bytes]:
    """One study: two generated instances (Explicit and Implicit VR Little Endian) and
    pydicom's JPEG 2000 file moved into it, stored over STOW-RS; by SOP Instance UID."""
    study = generate_uid()
    files = [
        part10(new_dataset(study=study), ExplicitVRLittleEndian),
        part10(new_dataset(study=study), ImplicitVRLittleEndian),
    ]
    j2k = _read(pydicom_file("JPEG2000.dcm"))
    j2k.StudyInstanceUID = study
    j2k.SOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    j2k.save_as(buffer, enforce_file_format=True)
    files.append(buffer.getvalue())
    body, content_type = multipart_related(files, None)
    response = httpx.post(
        f"{server.dicomweb_url}/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return {str(_read(data).SOPInstanceUID): data for data in files}


def _syntax(data: bytes) -> str:
    return str(_read(data).file_meta.TransferSyntaxUID)


def study_uid(stored: dict[str, bytes]) -> str:
    return str(_read(next(iter(stored.values()))).StudyInstanceUID)


def received_files(folder: Path) -> dict[str, Path]:
    return {str(_read(path).SOPInstanceUID): path for path in folder.iterdir() if path.is_file()}


def assert_same_objects(stored: dict[str, bytes], received: dict[str, Path]) -> None:
    """Stored bytes where the syntax was kept, else the same pixels in the receiver's
    syntax."""
    assert set(received) == set(stored)
    for uid, data in stored.items():
        original = _read(data)
        got = _read(received[uid])
        if got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID:
            assert dataset_bytes(received[uid].read_bytes()) == dataset_bytes(data)
        else:
            assert not got.file_meta.TransferSyntaxUID.is_compressed
            assert np.array_equal(got.pixel_array, original.pixel_array)


@contextlib.contextmanager
def storescp(folder: Path, *options: str) -> Iterator[None]:
    """dcmtk's storescp as the Move Destination, writing received data bit-preserving."""
    tool = require_tool("storescp")
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [tool, "-aet", DESTINATION, "+B", "-od", str(folder), *options, str(STORESCP_PORT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dcmtk_env(),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", STORESCP_PORT), timeout=1),
            ):
                break
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "storescp did not start"
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=20)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command), capture_output=True, text=True, timeout=120, env=dcmtk_env(), check=False
    )


def test_getscu_retrieves_a_study(
    server: RealServer, stored: dict[str, bytes], tmp_path: Path
) -> None:
    """getscu proposes one context per Storage SOP Class, Explicit VR Little Endian
    first, with JPEG 2000 before it here (+xw); the archive accepts the uncompressed
    syntax it prefers (every object can be converted to it): the explicit-stored
    instance arrives byte for byte, the others converted with the same pixels."""
    getscu = require_tool("getscu")

    result = run(
        getscu, "-v", "-S", "-aec", server.ae_title, "+xw", "+B", "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid(stored)}",
        "127.0.0.1", str(server.dicom_port),
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    received = received_files(tmp_path)
    assert_same_objects(stored, received)
    explicit = [u for u, d in stored.items() if _syntax(d) == ExplicitVRLittleEndian]
    assert len(explicit) == 1
    assert dataset_bytes(received[explicit[0]].read_bytes()) == dataset_bytes(stored[explicit[0]])
    assert {_syntax(p.read_bytes()) for p in received.values()} == {ExplicitVRLittleEndian}
    assert "Number of Completed Suboperations : 3" in output, output


def test_getscu_of_a_list_of_images(
    server: RealServer, stored: dict[str, bytes], tmp_path: Path
) -> None:
    getscu = require_tool("getscu")
    wanted = list(stored)[1:]

    result = run(
        getscu, "-S", "-aec", server.ae_title, "+B", "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=IMAGE", "-k", f"SOPInstanceUID={chr(92).join(wanted)}",
        "127.0.0.1", str(server.dicom_port),
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert_same_objects({uid: stored[uid] for uid in wanted}, received_files(tmp_path))


def test_getscu_with_a_bad_identifier_is_told_why(
    server: RealServer, stored: dict[str, bytes], tmp_path: Path
) -> None:
    """The ErrorComment of the 0xC000 response names the missing key (getscu prints it
    in debug mode; it then fails to release, as it does not read the Failed SOP
    Instance UID List that comes with a failure)."""
    getscu = require_tool("getscu")

    result = run(
        getscu, "-d", "-S", "-aec", server.ae_title, "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study_uid(stored)}",
        "127.0.0.1", str(server.dicom_port),
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert "0xc000" in output, output
    assert "SeriesInstanceUID: is required at the SERIES level" in output, output
    assert list(tmp_path.iterdir()) == []


def test_movescu_to_storescp(server: RealServer, stored: dict[str, bytes], tmp_path: Path) -> None:
    movescu = require_tool("movescu")
    inbox = tmp_path / "inbox"

    with storescp(inbox, "+xa"):
        result = run(
            movescu, "-v", "-S", "-aec", server.ae_title, "-aem", DESTINATION,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid(stored)}",
            "127.0.0.1", str(server.dicom_port),
        )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    received = received_files(inbox)
    assert_same_objects(stored, received)
    # storescp +xa accepts every syntax: nothing was converted.
    assert all(
        dataset_bytes(received[uid].read_bytes()) == dataset_bytes(data)
        for uid, data in stored.items()
    )


def test_movescu_to_an_implicit_only_storescp_converts(
    server: RealServer, stored: dict[str, bytes], tmp_path: Path
) -> None:
    movescu = require_tool("movescu")
    inbox = tmp_path / "inbox"

    with storescp(inbox, "+xi"):
        result = run(
            movescu, "-S", "-aec", server.ae_title, "-aem", DESTINATION,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid(stored)}",
            "127.0.0.1", str(server.dicom_port),
        )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    received = received_files(inbox)
    assert_same_objects(stored, received)
    assert {str(_read(p).file_meta.TransferSyntaxUID) for p in received.values()} == {
        ImplicitVRLittleEndian
    }


def test_movescu_to_an_unknown_destination(
    server: RealServer, stored: dict[str, bytes], tmp_path: Path
) -> None:
    movescu = require_tool("movescu")

    result = run(
        movescu, "-v", "-S", "-aec", server.ae_title, "-aem", "NOWHERE",
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid(stored)}",
        "127.0.0.1", str(server.dicom_port),
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in output, output
