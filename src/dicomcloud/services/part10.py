"""Reading what a sender gave us as a PS3.10 file, without re-encoding it.

The stored file is the received bytes.  Only the File Meta Information header is
rebuilt when it is missing or wrong (PS3.10 7.1: the header must name the dataset's SOP
Class, SOP Instance and Transfer Syntax); the dataset bytes that follow it are kept
byte for byte.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicomcloud import __version__
from dicomcloud.domain.values import InvalidValue, parse_uid
from dicomcloud.errors import CannotUnderstand, NotDicom

PREAMBLE = b"\x00" * 128 + b"DICM"
_LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                    b"UR", b"UT", b"UV"}  # fmt: skip
IMPLEMENTATION_VERSION_NAME = f"DICOMCLOUD_{__version__}"[:16]
_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
DEFER_SIZE = 64 * 1024  # values above this stay on disk / in the buffer while parsing

#: What pydicom raises for bytes it cannot read, while parsing or later, when a value
#: is first converted (found by fuzzing: tests/property/test_fuzz_parsers.py).
UNREADABLE_ERRORS: tuple[type[Exception], ...] = (
    InvalidDicomError,
    BytesLengthException,
    EOFError,
    ValueError,
    KeyError,
    OverflowError,
    NotImplementedError,
    struct.error,
    TypeError,
    zlib.error,
)


@dataclass(frozen=True, slots=True)
class ParsedObject:
    """A received object: its dataset (large values deferred) and how to store it."""

    dataset: Dataset
    transfer_syntax_uid: str
    #: Bytes of a corrected File Meta header (preamble included), or None to keep the
    #: received bytes unchanged.
    new_header: bytes | None
    #: Offset in the received bytes where the dataset starts (after the old header).
    dataset_offset: int
    notes: tuple[str, ...] = ()


def _meta_end(head: bytes, start: int) -> int:
    """Offset just past the group 0002 elements that begin at ``start``.

    File Meta elements are always Explicit VR Little Endian (PS3.10 7.1).
    """
    pos = start
    while pos + 8 <= len(head):
        group = struct.unpack_from("<H", head, pos)[0]
        if group != 0x0002:
            break
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_LENGTH_VRS:
            if pos + 12 > len(head):
                break
            length = struct.unpack_from("<I", head, pos + 8)[0]
            pos += 12 + length
        else:
            length = struct.unpack_from("<H", head, pos + 6)[0]
            pos += 8 + length
    return pos


def element_text(ds: Dataset, keyword: str) -> str:
    """A text element's value as sent, padding removed, ``""`` when absent.

    Read without pydicom's value conversion, which validates the value and warns or
    raises (depending on global configuration) on exactly the bad input we must
    report as a per-instance failure.
    """
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return ""
    value = ds.get_item(tag).value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    elif isinstance(value, list | tuple | MultiValue):
        value = "\\".join(str(v) for v in value)
    return "" if value is None else str(value).strip("\x00 ")


def _original_syntax(ds: Dataset) -> str:
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit:
        return str(ImplicitVRLittleEndian)
    if little is False:
        return str(ExplicitVRBigEndian)
    return str(ExplicitVRLittleEndian)


#: Tag, VR, reserved bytes and 32-bit length of an explicit VR element (PS3.5 7.1.2).
_LONGEST_ELEMENT_HEADER = 12


def _check_complete(ds: Dataset, total: int | None, caught: list[warnings.WarningMessage]) -> None:
    """Refuse truncated objects: pydicom reads them silently (PS3.5 7.1 lengths).

    ``total`` is the size of the stream the offsets refer to; ``None`` when unknown
    (a deflated file, whose offsets are in the inflated stream): deferred values are
    then read to check their length.
    """
    for message in caught:
        text = str(message.message)
        if "End of file reached" in text or "truncat" in text.lower():
            raise CannotUnderstand(f"the DICOM object is truncated ({text})")
    # Tags, not ``for elem in ds``: iterating a Dataset converts (and reads) each value.
    tags = list(ds.keys())
    for tag in tags:
        # keep_deferred: reading a deferred value here would load it whole into memory.
        raw = ds.get_item(tag, keep_deferred=total is not None)
        length = getattr(raw, "length", None)
        if length is None or length == 0xFFFFFFFF:
            continue
        value = getattr(raw, "value", None)
        if value is None:
            tell = getattr(raw, "value_tell", None)
            if tell is not None and total is not None and tell + length > total:
                raise CannotUnderstand(
                    f"the DICOM object is truncated: element {raw.tag} declares "
                    f"{length} bytes, only {max(total - tell, 0)} present"
                )
        elif isinstance(value, bytes) and len(value) != length:
            raise CannotUnderstand(
                f"the DICOM object is truncated: element {raw.tag} declares {length} bytes, "
                f"only {len(value)} present"
            )
    # pydicom stops without a word when fewer bytes than an element header remain
    # after the last element it could read: bytes that start an element and end early.
    if tags and total is not None:
        last = ds.get_item(tags[-1], keep_deferred=True)
        length, tell = getattr(last, "length", None), getattr(last, "value_tell", None)
        if length is not None and length != 0xFFFFFFFF and tell is not None:
            left = total - (tell + length)
            if 0 < left < _LONGEST_ELEMENT_HEADER:
                raise CannotUnderstand(
                    f"the DICOM object is truncated: {left} byte(s) after element "
                    f"{last.tag} do not form a complete element"
                )


def _looks_like_dataset(head: bytes) -> bool:
    """Whether bytes without a PS3.10 preamble start like a DICOM dataset.

    Elements come in ascending tag order and every dataset stored here has a SOP Class
    UID (0008,0016), so the first group is 0002 (File Meta), 0004 (DICOMDIR) or 0008,
    in little or big endian.
    """
    if len(head) < 8:
        return False
    return struct.unpack_from("<H", head)[0] in (2, 4, 8) or struct.unpack_from(">H", head)[0] in (
        4,
        8,
    )


def parse_part10(source: bytes | Path) -> ParsedObject:
    """Parse a received PS3.10 file (or a bare dataset), checking it is complete.

    Raises ``CannotUnderstand`` for anything that is not a complete DICOM object.
    """
    try:
        return _parse_part10(source)
    except UNREADABLE_ERRORS as exc:
        raise CannotUnderstand(f"not a readable DICOM object: {exc}") from exc


def _parse_part10(source: bytes | Path) -> ParsedObject:
    if isinstance(source, bytes):
        total = len(source)
        head = source[:65536]
        stream: BinaryIO = BytesIO(source)
    else:
        total = source.stat().st_size
        with source.open("rb") as fh:
            head = fh.read(65536)
        stream = source.open("rb")
    if total == 0:
        raise NotDicom("the part is empty")
    has_preamble = head[128:132] == b"DICM"
    if not has_preamble and not _looks_like_dataset(head):
        raise NotDicom("not a DICOM object: no 'DICM' prefix and no DICOM data elements")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(stream, force=not has_preamble, defer_size=DEFER_SIZE)
    except (InvalidDicomError, EOFError, ValueError, KeyError, OverflowError,
            NotImplementedError, struct.error, TypeError) as exc:  # fmt: skip
        kind = CannotUnderstand if has_preamble else NotDicom
        raise kind(f"not a readable DICOM object: {exc}") from exc
    finally:
        if not isinstance(source, bytes):
            stream.close()
    if len(ds) == 0:
        kind = CannotUnderstand if has_preamble else NotDicom
        raise kind("not a DICOM object: no data elements could be read")
    deflated = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")) == _DEFLATED
    _check_complete(ds, None if deflated else total, caught)

    meta: FileMetaDataset = ds.file_meta if hasattr(ds, "file_meta") else FileMetaDataset()
    start = 132 if has_preamble else 0
    offset = _meta_end(head, start) if head[start : start + 2] == b"\x02\x00" else start
    notes: list[str] = []

    ts = str(meta.get("TransferSyntaxUID", "") or "")
    if not ts:
        ts = _original_syntax(ds)
        notes.append(f"no Transfer Syntax UID in the File Meta header; read as {ts}")
    sop_class = element_text(ds, "SOPClassUID")
    sop_instance = element_text(ds, "SOPInstanceUID")
    needs_header = not has_preamble or not ts
    for keyword, expected in (
        ("MediaStorageSOPClassUID", sop_class),
        ("MediaStorageSOPInstanceUID", sop_instance),
    ):
        actual = element_text(meta, keyword)
        if actual != expected:
            needs_header = True
            if actual:
                notes.append(f"File Meta {keyword} {actual!r} corrected to {expected!r}")
    if "TransferSyntaxUID" not in meta:
        needs_header = True

    new_header = None
    if needs_header:
        new_header = build_header(sop_class, sop_instance, ts, meta)
    return ParsedObject(ds, ts, new_header, offset, tuple(notes))


def build_header(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    original: FileMetaDataset | None = None,
    source_ae: str | None = None,
) -> bytes:
    """Preamble, ``DICM`` and a File Meta Information group (PS3.10 7.1).

    Raises ``CannotUnderstand`` when the UIDs the header must name are missing or invalid.
    """
    for keyword, value in (("SOPClassUID", sop_class_uid), ("SOPInstanceUID", sop_instance_uid)):
        if not value:
            raise CannotUnderstand(f"{keyword} is missing")
        try:
            parse_uid(value, name=keyword)
        except InvalidValue as exc:
            raise CannotUnderstand(str(exc)) from None
    source = source_ae
    sending = None
    if original is not None:
        source = source or element_text(original, "SourceApplicationEntityTitle") or None
        sending = element_text(original, "SendingApplicationEntityTitle") or None
    try:
        body = [
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", _uid_bytes(sop_class_uid)),
            _meta_element(0x0003, b"UI", _uid_bytes(sop_instance_uid)),
            _meta_element(0x0010, b"UI", _uid_bytes(transfer_syntax_uid)),
            _meta_element(0x0012, b"UI", _uid_bytes(PYDICOM_IMPLEMENTATION_UID)),
            _meta_element(0x0013, b"SH", _text_bytes(IMPLEMENTATION_VERSION_NAME)),
        ]
    except UnicodeEncodeError as exc:
        raise CannotUnderstand(f"a UID of the File Meta header is not ASCII: {exc}") from None
    for element, title in ((0x0016, source), (0x0017, sending)):
        if title and title.isascii() and len(title) <= 16 and "\\" not in title:
            body.append(_meta_element(element, b"AE", _text_bytes(title)))
    content = b"".join(body)
    group_length = _meta_element(0x0000, b"UL", struct.pack("<I", len(content)))
    return PREAMBLE + group_length + content


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    """One group 0002 element, Explicit VR Little Endian (PS3.10 7.1, PS3.5 7.1.2)."""
    if vr in _LONG_LENGTH_VRS:
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _uid_bytes(uid: str) -> bytes:
    """A UI value padded with one NUL to even length (PS3.5 6.2)."""
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text_bytes(text: str) -> bytes:
    """An SH/AE value padded with one space to even length (PS3.5 6.2)."""
    raw = text.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def parse_dataset(data: bytes, transfer_syntax_uid: str) -> Dataset:
    """Parse a bare dataset received over DIMSE in a negotiated transfer syntax;
    ``CannotUnderstand`` if it cannot be read."""
    try:
        return _parse_dataset(data, transfer_syntax_uid)
    except UNREADABLE_ERRORS as exc:
        raise CannotUnderstand(f"not a readable DICOM dataset: {exc}") from exc


def _parse_dataset(data: bytes, transfer_syntax_uid: str) -> Dataset:
    from pydicom.filereader import read_dataset

    uid = UID(transfer_syntax_uid)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stream: BinaryIO = BytesIO(data)
            if uid == "1.2.840.10008.1.2.1.99":  # Deflated Explicit VR Little Endian
                import zlib

                stream = BytesIO(zlib.decompress(data, -zlib.MAX_WBITS))
                inflated = stream.getvalue()
                ds = read_dataset(stream, False, True, defer_size=DEFER_SIZE)
                _check_complete(ds, len(inflated), caught)
                return ds
            ds = read_dataset(
                stream,
                uid.is_implicit_VR,
                uid.is_little_endian,
                defer_size=DEFER_SIZE,
            )
    except (EOFError, ValueError, KeyError, OverflowError, NotImplementedError,
            struct.error, TypeError, ImportError) as exc:  # fmt: skip
        raise CannotUnderstand(f"not a readable DICOM dataset: {exc}") from exc
    if len(ds) == 0:
        raise CannotUnderstand("the dataset is empty")
    _check_complete(ds, len(data), caught)
    return ds
