"""Every DICOM file shipped in the pydicom wheel, STOWed as received and read back.

Each file is sent as its exact bytes in a ``multipart/related`` body built by hand, to
``dicomcloud serve``, then retrieved with WADO-RS.  What must happen is decided here,
from the file itself, independently of the archive:

* ``EXACT``: a preamble and a File Meta header naming the dataset's SOP Class, SOP
  Instance and a Transfer Syntax: the bytes back EQUAL the bytes sent;
* ``REBUILT``: a usable dataset whose header is missing or disagrees with it: stored
  with a warning, the header rebuilt to match the dataset, the dataset bytes identical;
* ``REJECTED``: truncated, unreadable, or without the identifying UIDs (DICOMDIRs,
  fragments): a FailedSOPSequence item with a FailureReason, a Warning header, and
  nothing added to storage or index.

Files sharing a SOP Instance UID (the same image in several encodings) are sent in
turn to a server with the ``replace`` duplicate policy, so each is read back as sent.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from conftest import RealServer, running_server
from integration.support import (
    AS_STORED,
    RETRIEVE_URL,
    STATUS_CANNOT_UNDERSTAND,
    WARNING_REASON,
    dataset_bytes,
    failed_items,
    failure_reasons,
    file_meta,
    multipart_related,
    pydicom_file,
    referenced_items,
    split_multipart,
    value,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

TEST_FILES = pydicom_file("CT_small.dcm").parent
IDENTIFYING = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

#: Files pydicom ships broken on purpose; their bytes cannot be a complete object.
BROKEN = {
    "MR_truncated.dcm": "truncated",  # pixel data cut short
    "rtplan_truncated.dcm": "truncated",  # a sequence cut short
    # starts one byte into an element: not recognisable as a dataset
    "no_meta.dcm": "not a DICOM object",
}


class Expect(Enum):
    EXACT = "bytes back equal bytes sent"
    REBUILT = "header rebuilt, dataset bytes identical"
    REJECTED = "rejected with a reason, nothing stored"


@dataclass(frozen=True)
class Case:
    path: Path
    expect: Expect
    why: str
    sop_uid: str = ""
    transfer_syntax: str = ""

    @property
    def name(self) -> str:
        return str(self.path.relative_to(self.path.parents[1]))


def corpus() -> list[Path]:
    """Every DICOM file of the wheel: test_files (recursively) and charset_files."""
    found = {
        p
        for p in TEST_FILES.rglob("*")
        if p.is_file() and p.suffix in ("", ".dcm") and p.name != "README"
    }
    found.update(Path(p) for p in get_charset_files("*.dcm"))
    return sorted(found)


def _read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data), force=True)


def _text(ds: Dataset, keyword: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(ds.get(keyword, "") or "").strip("\x00 ")


def _encoding_syntax(ds: Dataset) -> str:
    implicit, little = ds.original_encoding
    if implicit:
        return str(ImplicitVRLittleEndian)
    return str(ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def classify(path: Path) -> Case:
    """What the archive must do with this file, decided from the file alone."""
    if path.name in BROKEN:
        return Case(path, Expect.REJECTED, BROKEN[path.name])
    data = path.read_bytes()
    ds = _read(data)
    bad = [k for k in IDENTIFYING if not UID.match(_text(ds, k)) or len(_text(ds, k)) > 64]
    if bad:
        return Case(path, Expect.REJECTED, "|".join(bad))
    sop = _text(ds, "SOPInstanceUID")
    meta = getattr(ds, "file_meta", Dataset())
    syntax = _text(meta, "TransferSyntaxUID") or _encoding_syntax(ds)
    consistent = (
        data[128:132] == b"DICM"
        and "TransferSyntaxUID" in meta
        and _text(meta, "MediaStorageSOPClassUID") == _text(ds, "SOPClassUID")
        and _text(meta, "MediaStorageSOPInstanceUID") == sop
    )
    if consistent:
        return Case(path, Expect.EXACT, "consistent header", sop, syntax)
    return Case(path, Expect.REBUILT, "File Meta", sop, syntax)


CASES = [classify(p) for p in corpus()]


def test_the_corpus_has_every_category() -> None:
    """Guard the oracle: the wheel's files cover each category in numbers."""
    counts = {e: sum(c.expect is e for c in CASES) for e in Expect}
    assert len(CASES) > 150
    assert counts[Expect.EXACT] > 100
    assert counts[Expect.REBUILT] >= 5
    assert counts[Expect.REJECTED] >= 10


@pytest.fixture(scope="module")
def replace_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    env = {"DICOMCLOUD_INGEST__DUPLICATE_POLICY": "replace"}
    with running_server(tmp_path_factory.mktemp("corpus") / "data", env) as running:
        yield running


@pytest.fixture(scope="module")
def http(replace_server: RealServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=replace_server.dicomweb_url, timeout=60) as client:
        yield client


def stow(http: httpx.Client, data: bytes) -> httpx.Response:
    body, content_type = multipart_related([data])
    return http.post(
        "/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
    )


def retrieve(http: httpx.Client, url: str) -> tuple[str, bytes]:
    """The part Content-Type and bytes of a WADO-RS instance response."""
    response = http.get(url, headers=AS_STORED)
    assert response.status_code == 200, response.text
    parts = split_multipart(response.content, response.headers["content-type"])
    assert len(parts) == 1
    return parts[0].headers["content-type"], parts[0].data


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.expect.name}:{c.name}")
def test_stow_then_wado(case: Case, http: httpx.Client, replace_server: RealServer) -> None:
    data = case.path.read_bytes()
    files_before = replace_server.files()
    rows_before = replace_server.instance_rows()

    response = stow(http, data)

    assert response.status_code < 500, response.text
    payload = response.json()
    warning = response.headers.get("warning", "")

    if case.expect is Expect.REJECTED:
        assert response.status_code == 409, response.text
        assert failure_reasons(payload) == [STATUS_CANNOT_UNDERSTAND]
        assert referenced_items(payload) == []
        assert any(word.lower() in warning.lower() for word in case.why.split("|")), warning
        assert replace_server.files() == files_before
        assert replace_server.instance_rows() == rows_before
        return

    assert failed_items(payload) == []
    (item,) = referenced_items(payload)
    url = value(item, RETRIEVE_URL)
    assert url.endswith(f"/instances/{case.sop_uid}")
    content_type, stored = retrieve(http, url)
    assert f"transfer-syntax={case.transfer_syntax}" in content_type

    if case.expect is Expect.EXACT:
        assert stored == data
        if response.status_code == 202:  # stored, with a remark on a descriptive value
            assert value(item, WARNING_REASON) is not None and warning
        else:
            assert response.status_code == 200
        return

    # REBUILT: a warning says the header was replaced; the dataset is untouched.
    assert response.status_code == 202, response.text
    assert value(item, WARNING_REASON) is not None
    assert "File Meta" in warning or "Transfer Syntax" in warning, warning
    assert stored[128:132] == b"DICM"
    assert dataset_bytes(stored) == dataset_bytes(data)
    meta = file_meta(stored)
    assert meta.MediaStorageSOPInstanceUID == case.sop_uid
    assert meta.TransferSyntaxUID == case.transfer_syntax
