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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
    part10: bytes
    threshold: int
    uri_prefix: str
    bulk: dict[str, list[int | None]]


def _read(part10: bytes) -> Dataset:
    try:
        return dcmread(io.BytesIO(part10), force=True)
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError) as exc:
        raise UnreadableInstance(f"the stored object cannot be parsed: {exc}") from exc


def _elements(ds: Dataset) -> Iterator[tuple[int, RawDataElement | DataElement]]:
    for tag in sorted(ds.keys()):  # iterating ``ds`` itself would convert every value
        if tag.element != 0:  # group lengths are not part of the JSON model
            yield int(tag), ds.get_item(tag)


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
        if vr in BINARY_VRS and isinstance(value, bytes) and len(value) > ctx.threshold:
            element_path = f"{path}{key}"
            ctx.bulk[element_path] = [_offset_of(raw, value, ctx.part10), len(value)]
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


def _offset_of(raw: RawDataElement | DataElement, value: bytes, part10: bytes) -> int | None:
    """The value's offset in the stored file, checked against the bytes there (a
    deflated data set, or a sequence pydicom re-parsed, has positions of its own)."""
    offset = raw.value_tell if isinstance(raw, RawDataElement) else raw.file_tell
    if offset is None or offset < 0:
        return None
    if part10[offset : offset + len(value)] != value:
        return None
    return int(offset)
