"""DICOM JSON (PS3.18 F.2) and Native DICOM Model XML (PS3.19 A.1) responses."""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape

from pydicom.datadict import keyword_for_tag
from starlette.responses import Response

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


def _json_xml_elements(dataset: DicomJson, out: list[str]) -> None:
    for tag in sorted(dataset):
        attribute = dataset[tag]
        vr = attribute["vr"]
        keyword = keyword_for_tag(int(tag, 16))
        name = f' keyword="{keyword}"' if keyword else ""
        out.append(f'<DicomAttribute tag="{tag.upper()}" vr="{vr}"{name}>')
        for number, value in enumerate(attribute.get("Value", []), start=1):
            if vr == "SQ":
                out.append(f'<Item number="{number}">')
                _json_xml_elements(value, out)
                out.append("</Item>")
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


def error_response(error: DicomCloudError) -> Response:
    """A request-level failure: status from the error tree, reason in the body."""
    body = json.dumps({"status": error.http_status, "error": error.reason}, ensure_ascii=False)
    return Response(body, error.http_status, media_type="application/json")


def warning_header(text: str) -> str:
    """An RFC 7234 5.5 Warning value (code 299, as PS3.18 8.3.1 uses it)."""
    clean = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    return f'299 dicomcloud "{clean[:500]}"'
