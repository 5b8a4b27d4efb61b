"""The DICOM JSON metadata of one stored instance (PS3.18 F.2), built once from its file.

Binary values (OB, OD, OF, OL, OV, OW, UN) longer than a threshold are not inlined:
they become a ``BulkDataURI`` (PS3.18 F.2.6) naming the element by its tag path, and
the element's byte offset and length in the stored file are recorded, so that serving
the bulk data later reads just those bytes (no parsing).  Everything else is encoded by
pydicom (``DataElement.to_json_dict``).  Group length elements are left out (PS3.18
F.2: they are not part of the JSON model).

The BulkDataURIs are kept relative (``/studies/.../bulkdata/{path}``); the base URL of
the request is put in front when the metadata is served (:func:`with_base`).
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomcloud.errors import NotFound

#: The VRs whose values may become bulk data (PS3.18 F.2.6, F.2.7).
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

#: A bulk data path: tags and item numbers, ``7FE00010`` or ``00540016.0.00281201``.
BULK_PATH = re.compile(r"[0-9A-F]{8}(\.[0-9]{1,6}\.[0-9A-F]{8}){0,16}")

#: Version of the stored format; part of every fingerprint, so that a new format
#: never serves objects of an old one.
FORMAT = 1


class UnreadableInstance(NotFound):
    """The stored object cannot be parsed as DICOM (it was accepted as received)."""


@dataclass(frozen=True, slots=True)
class BulkRef:
    """Where a bulk data value lies in the stored file; ``offset`` is None when the
    value is not stored as is (a deflated data set): then the file must be parsed."""

    offset: int | None
    length: int


def build_instance_metadata(part10: bytes, *, threshold: int, uri_prefix: str) -> dict[str, Any]:
    """The stored form of one instance's metadata: ``{"dataset": <DICOM JSON>, "bulk":
    {path: [offset | None, length]}}``.  ``uri_prefix`` starts each BulkDataURI (the
    instance's ``.../bulkdata/``, relative to the DICOMweb base URL)."""
    ds = _read(part10)
    bulk: dict[str, list[int | None]] = {}
    dataset = _dataset_json(ds, "", _Context(part10, threshold, uri_prefix, bulk))
    return {"format": FORMAT, "dataset": dataset, "bulk": bulk}


def build_instance_metadata_from(
    source: BinaryIO, *, threshold: int, uri_prefix: str
) -> dict[str, Any]:
    """``build_instance_metadata`` of a large stored file read through ``source`` (a
    seekable reader over the blob), without holding the file in memory: bulk values
    with a defined length are not read at all (pydicom's ``defer_size``); their offset
    and length come from the element header.  Not for a deflated data set (its
    positions are those of the inflated stream): use ``build_instance_metadata``."""
    try:
        ds = dcmread(source, force=True, defer_size=max(threshold, 1))
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError) as exc:
        raise UnreadableInstance(f"the stored object cannot be parsed: {exc}") from exc
    bulk: dict[str, list[int | None]] = {}
    dataset = _dataset_json(ds, "", _Context(None, threshold, uri_prefix, bulk, source))
    return {"format": FORMAT, "dataset": dataset, "bulk": bulk}


class RangeReader(io.RawIOBase):
    """A read-only, seekable file over ``read_range(offset, length)`` calls (a blob in
    object storage, read in pieces of at least ``block`` bytes, the last one kept).

    Deliberately not an ``io.BufferedReader``: pydicom takes one for a file on disk and
    would reopen it by name."""

    def __init__(
        self, read_range: Callable[[int, int], bytes], size: int, *, block: int = 1 << 20
    ) -> None:
        super().__init__()
        self._read_range = read_range
        self._size = size
        self._block = block
        self._position = 0
        self._cached_at = 0
        self._cached = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._size - self._position)
        if wanted <= 0:
            return 0
        start = self._position - self._cached_at
        if not (start >= 0 and start + wanted <= len(self._cached)):
            self._cached_at = self._position
            self._cached = self._read_range(self._position, max(wanted, self._block))
            start = 0
        data = self._cached[start : start + wanted]
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


def bulk_value(part10: bytes, path: str) -> bytes:
    """The value of the element at ``path`` in the data set, parsing the file (used only
    when its bytes are not stored as is); ``NotFound`` if there is no such element."""
    ds = _read(part10)
    parts = path.split(".")
    for tag_text, item_text in zip(parts[0:-1:2], parts[1::2], strict=True):
        tag = int(tag_text, 16)
        if tag not in ds or ds[tag].VR != "SQ" or int(item_text) >= len(ds[tag].value):
            raise NotFound(f"no bulk data element {path}")
        ds = ds[tag].value[int(item_text)]
    tag = int(parts[-1], 16)
    if tag not in ds:
        raise NotFound(f"no bulk data element {path}")
    value = ds[tag].value
    if not isinstance(value, bytes):
        raise NotFound(f"element {path} is not bulk data")
    return value


def with_base(dataset: dict[str, Any], base: str) -> dict[str, Any]:
    """Put ``base`` in front of every BulkDataURI of ``dataset`` (in place)."""
    for attribute in dataset.values():
        if "BulkDataURI" in attribute:
            attribute["BulkDataURI"] = base + attribute["BulkDataURI"]
        elif attribute.get("vr") == "SQ":
            for item in attribute.get("Value", ()):
                with_base(item, base)
    return dataset


# --- building ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    part10: bytes | None
    threshold: int
    uri_prefix: str
    bulk: dict[str, list[int | None]]
    source: BinaryIO | None = None


def _read(part10: bytes) -> Dataset:
    try:
        return dcmread(io.BytesIO(part10), force=True)
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError) as exc:
        raise UnreadableInstance(f"the stored object cannot be parsed: {exc}") from exc


def _elements(ds: Dataset) -> Iterator[tuple[int, RawDataElement | DataElement]]:
    for tag in sorted(ds.keys()):  # iterating ``ds`` itself would convert every value
        if tag.element != 0:  # group lengths are not part of the JSON model
            # keep_deferred: a value left in the file (defer_size) stays there
            yield int(tag), ds.get_item(tag, keep_deferred=True)


def _vr(tag: int, raw: RawDataElement | DataElement, ds: Dataset) -> str:
    vr = raw.VR
    if not vr:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    if " or " in vr:  # ambiguous in the dictionary and read as implicit VR
        if "OW" in vr and "OB" in vr:
            vr = "OW" if int(ds.get("BitsAllocated", 8) or 8) > 8 else "OB"
        elif "OW" in vr:
            vr = "OW"
        else:
            vr = vr.split(" or ")[0]
    return str(vr)


def _dataset_json(ds: Dataset, path: str, ctx: _Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag, raw in _elements(ds):
        key = f"{tag:08X}"
        vr = _vr(tag, raw, ds)
        if vr == "SQ":
            out[key] = _sequence_json(ds, tag, f"{path}{key}", ctx)
            continue
        value = raw.value
        if isinstance(raw, RawDataElement) and value is None and raw.length == 0xFFFFFFFF:
            value = ds[tag].value  # deferred but of undefined length: read it now
        if _deferred(raw) and vr in BINARY_VRS:  # a large value left in the file
            element_path = f"{path}{key}"
            assert isinstance(raw, RawDataElement)
            ctx.bulk[element_path] = [raw.value_tell, raw.length]
            out[key] = {"vr": vr, "BulkDataURI": ctx.uri_prefix + element_path}
            continue
        if vr in BINARY_VRS and isinstance(value, bytes) and len(value) > ctx.threshold:
            element_path = f"{path}{key}"
            ctx.bulk[element_path] = [_offset_of(raw, value, ctx), len(value)]
            out[key] = {"vr": vr, "BulkDataURI": ctx.uri_prefix + element_path}
            continue
        out[key] = _element_json(ds, tag, vr, value)
    return out


def _sequence_json(ds: Dataset, tag: int, path: str, ctx: _Context) -> dict[str, Any]:
    try:
        items = ds[tag].value
    except Exception:  # an unparsable sequence: report it empty rather than fail
        return {"vr": "SQ"}
    values = [_dataset_json(item, f"{path}.{number}.", ctx) for number, item in enumerate(items)]
    return {"vr": "SQ", "Value": values} if values else {"vr": "SQ"}


def _element_json(ds: Dataset, tag: int, vr: str, raw_value: object) -> dict[str, Any]:
    try:
        result: dict[str, Any] = ds[tag].to_json_dict(None, 0)
        return result
    except Exception:
        # A value pydicom cannot decode (malformed number, bad charset): keep its
        # bytes rather than drop the attribute (PS3.18 F.2.7 InlineBinary).
        if isinstance(raw_value, bytes) and raw_value:
            return {"vr": "UN", "InlineBinary": base64.b64encode(raw_value).decode("ascii")}
        return {"vr": vr}


def _deferred(raw: RawDataElement | DataElement) -> bool:
    """A value pydicom did not read (``defer_size``): defined length, left in the file."""
    return (
        isinstance(raw, RawDataElement)
        and raw.value is None
        and raw.length not in (0, 0xFFFFFFFF)
        and raw.value_tell is not None
    )


#: Bytes compared at each end of a value read through a reader (not held in memory).
_PROBE = 64


def _offset_of(raw: RawDataElement | DataElement, value: bytes, ctx: _Context) -> int | None:
    """The value's offset in the stored file, checked against the bytes there (a
    deflated data set, or a sequence pydicom re-parsed, has positions of its own).
    Through a reader, the first and last bytes of the value are compared."""
    offset = raw.value_tell if isinstance(raw, RawDataElement) else raw.file_tell
    if offset is None or offset < 0:
        return None
    if ctx.part10 is not None:
        return int(offset) if ctx.part10[offset : offset + len(value)] == value else None
    if ctx.source is None:
        return None
    head, tail = value[:_PROBE], value[-_PROBE:]
    ctx.source.seek(offset)
    if ctx.source.read(len(head)) != head:
        return None
    ctx.source.seek(offset + len(value) - len(tail))
    return int(offset) if ctx.source.read(len(tail)) == tail else None
