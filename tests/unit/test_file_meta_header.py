"""The File Meta header written by hand equals pydicom's encoding (PS3.10 7.1)."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from dicomcloud.errors import CannotUnderstand
from dicomcloud.services.part10 import IMPLEMENTATION_VERSION_NAME, PREAMBLE, build_header


def pydicom_header(sop_class: str, sop: str, syntax: str, source_ae: str | None) -> bytes:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    out = DicomBytesIO()
    out.write(PREAMBLE)
    write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue()


@pytest.mark.parametrize(
    ("sop_class", "sop", "syntax", "source_ae"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", None),  # even UIDs
        ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.45", "1.2.840.10008.1.2", "STORESCU"),  # odd
        ("1.2.840.10008.5.1.4.1.1.4", "2.25." + "9" * 59, "1.2.840.10008.1.2.4.50", "MOD"),
    ],
)
def test_header_equals_pydicoms(
    sop_class: str, sop: str, syntax: str, source_ae: str | None
) -> None:
    ours = build_header(sop_class, sop, syntax, source_ae=source_ae)

    assert ours == pydicom_header(sop_class, sop, syntax, source_ae)
    implicit = syntax == "1.2.840.10008.1.2"
    first = b"\x08\x00\x16\x00" + (b"\x02\x00\x00\x00" if implicit else b"UI\x02\x00") + b"1\x00"
    meta = pydicom.dcmread(io.BytesIO(ours + first))
    assert meta.file_meta.MediaStorageSOPInstanceUID == sop
    assert meta.file_meta.TransferSyntaxUID == syntax


def test_original_titles_are_kept_and_bad_ones_dropped() -> None:
    original = FileMetaDataset()
    original.SourceApplicationEntityTitle = "MODALITY1"
    original.SendingApplicationEntityTitle = "GATEWAY"
    header = build_header("1.2.840.10008.5.1.4.1.1.7", "1.2.3", "1.2.840.10008.1.2.1", original)
    meta = pydicom.dcmread(io.BytesIO(header + b"\x08\x00\x16\x00UI\x02\x001\x00"))
    assert meta.file_meta.SourceApplicationEntityTitle == "MODALITY1"
    assert meta.file_meta.SendingApplicationEntityTitle == "GATEWAY"

    too_long = build_header("1.2.3", "1.2.3", "1.2.840.10008.1.2.1", source_ae="X" * 17)
    assert b"\x02\x00\x16\x00AE" not in too_long


def test_missing_or_invalid_uid_is_refused() -> None:
    with pytest.raises(CannotUnderstand, match="SOPInstanceUID is missing"):
        build_header("1.2.3", "", "1.2.840.10008.1.2.1")
    with pytest.raises(CannotUnderstand, match="leading zero"):
        build_header("1.2.3", "1.02", "1.2.840.10008.1.2.1")
