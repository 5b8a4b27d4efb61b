"""Helpers shared by the integration, interop and regression tiers.

They are written from the standards, independently of the archive's own code, so that
they can serve as test oracles: building PS3.10 files and ``multipart/related`` bodies
by hand, splitting a multipart response, finding where the dataset of a file starts.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import struct
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config

STOW_CONTENT_TYPE = 'multipart/related; type="application/dicom"; boundary={boundary}'
#: Accept of a WADO-RS request for the instances as stored (PS3.18 8.7.3.5.2: "*");
#: without a transfer-syntax the archive sends Explicit VR Little Endian (8.7.3.4).
AS_STORED = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}

#: PS3.18 F.2 tags of the Store Instances Response Module (PS3.18 10.5.3).
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
RETRIEVE_URL = "00081190"

#: PS3.4 B.2.3 status codes.
STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_DATASET_DOES_NOT_MATCH = 0xA900  # 43264
STATUS_ELEMENTS_DISCARDED = 0xB006  # 45062

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
             b"UR", b"UT", b"UV"}  # fmt: skip


def pydicom_file(name: str) -> Path:
    """A file shipped in the pydicom wheel (no download)."""
    found = get_testdata_file(name)
    assert found is not None, name
    return Path(str(found))


def dataset_offset(data: bytes) -> int:
    """Where the dataset of a PS3.10 file (or a bare dataset) starts: after the
    preamble and the group 0002 elements (always Explicit VR Little Endian, PS3.10 7.1).
    """
    pos = 132 if data[128:132] == b"DICM" else 0
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return pos


def dataset_bytes(data: bytes) -> bytes:
    """The bytes of a PS3.10 file after its File Meta Information."""
    return data[dataset_offset(data) :]


def file_meta(data: bytes) -> FileMetaDataset:
    """The File Meta Information of PS3.10 bytes, as pydicom reads it."""
    return dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta


@dataclass(frozen=True)
class Instance:
    """A generated instance: its identifying UIDs and its PS3.10 bytes."""

    study: str
    series: str
    sop: str
    sop_class: str
    data: bytes

    @property
    def path(self) -> str:
        """The WADO-RS instance path below the DICOMweb prefix."""
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"


def new_dataset(
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    sop_class: str = SECONDARY_CAPTURE_STORAGE,
    patient_id: str = "PAT-1",
    pixels: int = 16,
) -> Dataset:
    """A small, valid image dataset with fresh UIDs unless given."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop or generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientName = "Test^Patient"
    ds.PatientID = patient_id
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    columns = pixels if pixels <= 1024 else 1024
    rows = -(-pixels // columns)
    pixels = rows * columns
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(i % 256 for i in range(pixels))
    return ds


@contextlib.contextmanager
def lenient_pydicom() -> Iterator[None]:
    """Let pydicom set and write invalid values (to build bad input on purpose)."""
    settings = pydicom_config.settings
    saved = (settings.reading_validation_mode, settings.writing_validation_mode)
    settings.reading_validation_mode = pydicom_config.IGNORE
    settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = saved


def set_raw(ds: Dataset, keyword: str, text: str) -> None:
    """Put ``text`` in ``ds`` exactly as given, even if pydicom would call it invalid."""
    if keyword in ds:  # an existing element keeps the validation mode it was made with
        delattr(ds, keyword)
    with lenient_pydicom():
        setattr(ds, keyword, text)


def part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """``ds`` as a PS3.10 file (preamble, File Meta, dataset) in ``transfer_syntax``."""
    ds = ds.copy()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(ds.get("SOPClassUID", "1.2.3")))
    meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID", "1.2.3.4")))
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.9.9999.1")
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def raw_part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """Like :func:`part10`, but the dataset is written as is (invalid values kept)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SECONDARY_CAPTURE_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(generate_uid())
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.9.9999.1")
    out = DicomBytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian = True
    body.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian
    with lenient_pydicom():
        write_dataset(body, ds)
    return out.getvalue() + body.getvalue()


def new_instance(transfer_syntax: str = ExplicitVRLittleEndian, **kwargs: Any) -> Instance:
    ds = new_dataset(**kwargs)
    return Instance(
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        str(ds.SOPClassUID),
        part10(ds, transfer_syntax),
    )


def multipart_related(
    parts: Iterable[bytes | tuple[bytes, str | None]], boundary: str | None = None
) -> tuple[bytes, str]:
    """A ``multipart/related; type="application/dicom"`` body (RFC 2387) built by hand.

    A part is its bytes (sent as ``application/dicom``) or ``(bytes, content_type)``
    (``None``: no Content-Type header).  Returns the body and its Content-Type.
    """
    boundary = boundary or f"test-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for part in parts:
        data, content_type = part if isinstance(part, tuple) else (part, "application/dicom")
        header = f"--{boundary}\r\n"
        if content_type is not None:
            header += f"Content-Type: {content_type}\r\n"
        chunks.append(header.encode("ascii") + b"\r\n" + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(chunks), STOW_CONTENT_TYPE.format(boundary=boundary)


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


@dataclass(frozen=True)
class BodyPart:
    headers: dict[str, str]
    data: bytes


def split_multipart(body: bytes, content_type: str) -> list[BodyPart]:
    """The parts of a ``multipart/related`` response body (RFC 2046 5.1)."""
    found = _BOUNDARY.search(content_type)
    assert found, f"no boundary in {content_type!r}"
    delimiter = b"--" + found.group(1).encode("ascii")
    assert body.startswith(delimiter), body[:80]
    close = body.rfind(b"\r\n" + delimiter + b"--")
    assert close != -1, "no closing delimiter"
    sections = body[len(delimiter) : close].split(b"\r\n" + delimiter)
    parts = []
    for section in sections:
        assert section.startswith(b"\r\n"), section[:40]
        head, _, data = section[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append(BodyPart(headers, data))
    return parts


def failed_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(payload.get(FAILED_SOP_SEQUENCE, {}).get("Value", []))


def referenced_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(payload.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", []))


def value(item: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON item (None if absent)."""
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def failure_reasons(payload: dict[str, Any]) -> list[int]:
    return [value(item, FAILURE_REASON) for item in failed_items(payload)]


def stored_files(root: Path) -> set[Path]:
    """Every file under a storage root (temporary files included)."""
    if not root.exists():
        return set()
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


def sop_uids(items: Sequence[dict[str, Any]]) -> list[str]:
    return [value(item, REFERENCED_SOP_INSTANCE_UID) for item in items]


# --- DIMSE (pynetdicom as the SCU) -------------------------------------------------------


def _nodelay(event: Any) -> None:
    """TCP_NODELAY on the requestor's socket: no 40 ms Nagle stall per PDU."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True)
class StoreResponse:
    status: int
    error_comment: str


class StoreSCU:
    """One association of a pynetdicom Storage SCU (blocking: run it in a thread)."""

    def __init__(
        self,
        port: int,
        contexts: Iterable[tuple[str, str]],
        *,
        called_ae: str = "DICOMCLOUD",
        calling_ae: str = "TESTSCU",
    ) -> None:
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        by_class: dict[str, list[str]] = {}
        for sop_class, syntax in contexts:
            by_class.setdefault(sop_class, []).append(syntax)
        ae.add_requested_context(VERIFICATION_SOP_CLASS)
        for sop_class, syntaxes in by_class.items():
            for syntax in syntaxes:  # one context per syntax: the SCP cannot pick another
                ae.add_requested_context(sop_class, [syntax])
        self.assoc = ae.associate(
            "127.0.0.1", port, ae_title=called_ae, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)]
        )
        assert self.assoc.is_established, "association rejected or aborted"

    def store(self, source: Dataset | Path) -> StoreResponse:
        """C-STORE a dataset (encoded by pynetdicom) or a file (its dataset sent as is)."""
        if isinstance(source, Path):
            # Only read for files: send the dataset bytes after the File Meta verbatim
            # (set, never reset: threads may send files concurrently).
            pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
        response = self.assoc.send_c_store(source)
        assert "Status" in response, "no C-STORE response (association aborted?)"
        return StoreResponse(int(response.Status), str(response.get("ErrorComment", "")))

    def echo(self) -> int:
        response = self.assoc.send_c_echo()
        return int(response.Status)

    def release(self) -> None:
        self.assoc.release()

    def __enter__(self) -> StoreSCU:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.assoc.is_established:
            self.release()


def two_studies() -> tuple[list[bytes], str, str, str]:
    """The search fixture of QIDO-RS and C-FIND tests (so that both are asked the same
    questions of the same data): study ``first`` with two instances (InstanceNumber 1
    and 2) in ``series`` and one in another series; study ``second`` of patient PAT-2,
    ``Yamada^Tarou=山田^太郎`` in UTF-8, MR, 20250101.  Returns the Part-10 files and
    the UIDs ``first``, ``second``, ``series``."""
    first, second, series = generate_uid(), generate_uid(), generate_uid()
    parts = []
    for number in (1, 2):
        ds = new_dataset(study=first, series=series)
        ds.InstanceNumber = number
        parts.append(part10(ds))
    parts.append(part10(new_dataset(study=first)))
    ds = new_dataset(study=second, patient_id="PAT-2")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    ds.StudyDate = "20250101"
    ds.Modality = "MR"
    parts.append(part10(ds))
    return parts, first, second, series
