"""Build raw DICOM data sets byte by byte, so that tests can feed the extractor values
that pydicom itself would refuse to write (DS "abc", over-long LO, wrong VRs...)."""

from __future__ import annotations

import struct
from io import BytesIO

from pydicom import Dataset
from pydicom.filereader import read_dataset

STUDY_UID = "1.2.826.0.1.3680043.2.1125.1"
SERIES_UID = "1.2.826.0.1.3680043.2.1125.1.2"
SOP_UID = "1.2.826.0.1.3680043.2.1125.1.2.3"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"

_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}

Element = tuple[int, str, bytes]


def element(tag: int, vr: str, value: bytes | str) -> Element:
    """One element; ``str`` values are encoded as ASCII."""
    return (tag, vr, value.encode("ascii") if isinstance(value, str) else value)


def encode(elements: list[Element], *, little_endian: bool = True, pad: bool = True) -> bytes:
    """Explicit VR encoding of ``elements`` (sorted by tag, padded to even length unless
    ``pad`` is false)."""
    order = "<" if little_endian else ">"
    out = bytearray()
    for tag, vr, value in sorted(elements):
        if pad and len(value) % 2:
            value += b"\x00" if vr in {"UI", "OB", "UN"} else b" "
        out += struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
        if vr in _LONG_VRS:
            out += b"\x00\x00" + struct.pack(f"{order}I", len(value))
        else:
            out += struct.pack(f"{order}H", len(value))
        out += value
    return bytes(out)


def uids(
    study: str = STUDY_UID, series: str = SERIES_UID, sop: str = SOP_UID, sop_class: str = CT_IMAGE
) -> list[Element]:
    return [
        element(0x0020000D, "UI", study),
        element(0x0020000E, "UI", series),
        element(0x00080018, "UI", sop),
        element(0x00080016, "UI", sop_class),
    ]


def read(elements: list[Element], *, little_endian: bool = True, pad: bool = True) -> Dataset:
    """A Dataset read from bytes with pydicom's default settings (no file meta)."""
    data = encode(elements, little_endian=little_endian, pad=pad)
    return read_dataset(BytesIO(data), is_implicit_VR=False, is_little_endian=little_endian)


def read_with_uids(*extra: Element) -> Dataset:
    return read([*uids(), *extra])
