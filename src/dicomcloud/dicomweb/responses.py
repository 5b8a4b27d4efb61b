"""DICOM JSON (PS3.18 F.2) and Native DICOM Model XML (PS3.19 A.1) responses."""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape

from pydicom.dataset import Dataset
from starlette.responses import Response

from dicomcloud.dicomweb.media import DICOM_JSON, DICOM_XML
from dicomcloud.errors import DicomCloudError


def dicom_json(ds: Dataset) -> dict[str, Any]:
    return ds.to_json_dict()


def dicom_xml(ds: Dataset) -> str:
    """The Native DICOM Model of a dataset (PS3.19 A.1), for the VRs used here."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<NativeDicomModel xml:space="preserve">']
    _xml_elements(ds, out)
    out.append("</NativeDicomModel>")
    return "\n".join(out)


def _xml_elements(ds: Dataset, out: list[str]) -> None:
    for elem in ds:
        tag = f"{elem.tag.group:04X}{elem.tag.element:04X}"
        keyword = f' keyword="{elem.keyword}"' if elem.keyword else ""
        out.append(f'<DicomAttribute tag="{tag}" vr="{elem.VR}"{keyword}>')
        if elem.VR == "SQ":
            for number, item in enumerate(elem.value, start=1):
                out.append(f'<Item number="{number}">')
                _xml_elements(item, out)
                out.append("</Item>")
        elif elem.value is not None and elem.value != "":
            values = elem.value if elem.VM > 1 else [elem.value]
            for number, value in enumerate(values, start=1):
                out.append(f'<Value number="{number}">{escape(str(value))}</Value>')
        out.append("</DicomAttribute>")


def dataset_response(
    ds: Dataset, *, status: int, xml: bool, headers: dict[str, str] | None = None
) -> Response:
    if xml:
        return Response(dicom_xml(ds), status, headers, media_type=DICOM_XML)
    body = json.dumps(dicom_json(ds), ensure_ascii=False, separators=(",", ":"))
    return Response(body, status, headers, media_type=DICOM_JSON)


def error_response(error: DicomCloudError) -> Response:
    """A request-level failure: status from the error tree, reason in the body."""
    body = json.dumps({"status": error.http_status, "error": error.reason}, ensure_ascii=False)
    return Response(body, error.http_status, media_type="application/json")


def warning_header(text: str) -> str:
    """An RFC 7234 5.5 Warning value (code 299, as PS3.18 8.3.1 uses it)."""
    clean = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    return f'299 dicomcloud "{clean[:500]}"'
