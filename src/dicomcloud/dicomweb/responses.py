"""DICOM JSON (PS3.18 F.2) and Native DICOM Model XML (PS3.19 A.1) responses."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pydicom.datadict import keyword_for_tag
from starlette.responses import Response

from dicomcloud.dicomweb.guards import public_reason
from dicomcloud.dicomweb.media import DICOM_JSON, DICOM_XML
from dicomcloud.errors import DicomCloudError

#: A dataset in the DICOM JSON model (PS3.18 F.2): tag key -> {"vr": ..., "Value": [...]}.
DicomJson = dict[str, Any]


def element(vr: str, *values: Any) -> dict[str, Any]:
    """One DICOM JSON attribute (PS3.18 F.2.2); no values gives an empty attribute."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def json_to_xml(dataset: DicomJson) -> str:
    """The Native DICOM Model (PS3.19 A.1) of a DICOM JSON dataset of simple VRs."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<NativeDicomModel xml:space="preserve">']
    _json_xml_elements(dataset, out)
    out.append("</NativeDicomModel>")
    return "\n".join(out)


#: Components of a PN component group in the Native DICOM Model (PS3.19 A.1.1).
_PN_PARTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")


def _person_name_xml(number: int, value: dict[str, str], out: list[str]) -> None:
    out.append(f'<PersonName number="{number}">')
    for group in ("Alphabetic", "Ideographic", "Phonetic"):
        text = value.get(group)
        if not text:
            continue
        out.append(f"<{group}>")
        for part, component in zip(_PN_PARTS, text.split("^"), strict=False):
            if component:
                out.append(f"<{part}>{escape(component)}</{part}>")
        out.append(f"</{group}>")
    out.append("</PersonName>")


def _json_xml_elements(dataset: DicomJson, out: list[str]) -> None:
    for tag in sorted(dataset):
        attribute = dataset[tag]
        vr = attribute.get("vr", "UN")
        keyword = keyword_for_tag(int(tag, 16))
        name = f" keyword={quoteattr(keyword)}" if keyword else ""
        out.append(f'<DicomAttribute tag="{tag.upper()}" vr="{vr}"{name}>')
        if "BulkDataURI" in attribute:  # PS3.19 A.1.6: BulkData with a "uri" attribute
            out.append(f"<BulkData uri={quoteattr(attribute['BulkDataURI'])}/>")
        elif "InlineBinary" in attribute:
            out.append(f"<InlineBinary>{attribute['InlineBinary']}</InlineBinary>")
        for number, value in enumerate(attribute.get("Value", []), start=1):
            if vr == "SQ":
                out.append(f'<Item number="{number}">')
                _json_xml_elements(value, out)
                out.append("</Item>")
            elif vr == "PN" and isinstance(value, dict):
                _person_name_xml(number, value, out)
            elif value is None:
                out.append(f'<Value number="{number}"/>')
            else:
                out.append(f'<Value number="{number}">{escape(str(value))}</Value>')
        out.append("</DicomAttribute>")


def dicom_json_response(
    dataset: DicomJson, *, status: int, xml: bool, headers: dict[str, str] | None = None
) -> Response:
    """The dataset as application/dicom+json, or as application/dicom+xml."""
    if xml:
        return Response(json_to_xml(dataset), status, headers, media_type=DICOM_XML)
    body = json.dumps(dataset, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status, headers, media_type=DICOM_JSON)


def error_response(error: DicomCloudError, *, reason: str | None = None) -> Response:
    """A request-level failure: status from the error tree, reason (``error.reason``
    unless given) in the body."""
    text = error.reason if reason is None else reason
    body = json.dumps({"status": error.http_status, "error": text}, ensure_ascii=False)
    return Response(body, error.http_status, media_type="application/json")


def multipart_body(parts: Sequence[bytes], media_type: str) -> tuple[bytes, str]:
    """``multipart/related`` (RFC 2387, PS3.18 8.7.3.3) of ``parts`` of ``media_type``:
    the body and its Content-Type.  The boundary is random, so it cannot occur in a
    part by chance."""
    boundary = secrets.token_hex(16)
    body = bytearray()
    for part in parts:
        body += f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode("ascii")
        body += part
        body += b"\r\n"
    body += f"--{boundary}--\r\n".encode("ascii")
    content_type = f'multipart/related; type="{media_type}"; boundary={boundary}'
    return bytes(body), content_type


def warning_header(text: str) -> str:
    """An RFC 7234 5.5 Warning value (code 299, as PS3.18 8.3.1 uses it)."""
    clean = (
        public_reason(text)
        .replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\r", " ")
        .replace("\n", " ")
    )
    return f'299 dicomcloud "{clean[:500]}"'
