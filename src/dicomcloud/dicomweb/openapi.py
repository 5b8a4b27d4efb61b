"""A minimal OpenAPI 3.0 description of the DICOMweb routes, served at ``/openapi.json``.

It names every route, its path and query parameters and its request body, so that
generic HTTP tooling (and schemathesis, in the tests) can drive the API.  The
authoritative definition of the resources is PS3.18 (DICOMweb): DICOM JSON bodies are
described as free-form objects here.
"""

from __future__ import annotations

from typing import Any

from dicomcloud import __version__

_UID = {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)*$", "maxLength": 64}


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": _UID,
        "description": description,
    }


_STUDY = _path("study", "StudyInstanceUID")
_SERIES = _path("series", "SeriesInstanceUID")
_SOP = _path("sop", "SOPInstanceUID")
_FRAMES = {
    "name": "frames",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"},
    "description": "Frame numbers, from 1 (PS3.18 10.4.1.1.4)",
}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_TEXT = {"type": "string", "maxLength": 64}
#: QIDO-RS parameters (PS3.18 8.3.4, 10.6.1.2): matching keys and result controls.
_QIDO = [
    _query("PatientName", _TEXT, "PN, wildcards * and ?"),
    _query("PatientID", _TEXT),
    _query("StudyDate", _TEXT, "DA or a range DA-DA"),
    _query("StudyTime", _TEXT),
    _query("AccessionNumber", _TEXT),
    _query("ModalitiesInStudy", _TEXT),
    _query("Modality", _TEXT),
    _query("StudyInstanceUID", {"type": "string", "maxLength": 200}, "UID or UID list"),
    _query("SeriesInstanceUID", {"type": "string", "maxLength": 200}),
    _query("SOPInstanceUID", {"type": "string", "maxLength": 200}),
    _query("includefield", _TEXT, "attribute keyword or tag, or 'all'"),
    _query("fuzzymatching", {"type": "string", "enum": ["true", "false"]}),
    _query("limit", {"type": "integer", "minimum": 0}),
    _query("offset", {"type": "integer", "minimum": 0}),
]
_DICOM_JSON_ARRAY = {
    "application/dicom+json": {"schema": {"type": "array", "items": {"type": "object"}}}
}
_ERROR = {
    "description": "The request cannot be served; the reason is in the body",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"status": {"type": "integer"}, "error": {"type": "string"}},
            }
        }
    },
}
_BINARY = {"description": "Multipart or single-part DICOM, frames, bulk data or images"}


def _get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {"200": ok, "400": _ERROR, "404": _ERROR, "406": _ERROR},
        }
    }


def _search(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return _get(
        summary,
        params + _QIDO,
        {"description": "Matches (PS3.18 10.6.3)", "content": _DICOM_JSON_ARRAY},
    )


def _stow(params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "summary": "STOW-RS: store instances (PS3.18 10.5)",
        "parameters": params,
        "requestBody": {
            "required": True,
            "content": {
                "application/dicom": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        "responses": {
            "200": {
                "description": "Every instance stored",
                "content": {"application/dicom+json": {"schema": {"type": "object"}}},
            },
            "202": {"description": "Some instances stored, with failures or warnings"},
            "409": {"description": "No instance stored; FailedSOPSequence says why"},
            "400": _ERROR,
            "413": _ERROR,
            "415": _ERROR,
        },
    }


def _delete(what: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "delete": {
            "summary": f"Delete {what} (non-standard, hard delete; needs 'delete')",
            "parameters": params,
            "responses": {
                "204": {"description": "Deleted"},
                "400": _ERROR,
                "404": _ERROR,
                "405": _ERROR,
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of the archive's HTTP routes."""
    web = "/dicom-web"
    study = f"{web}/studies/{{study}}"
    series = f"{study}/series/{{series}}"
    instance = f"{series}/instances/{{sop}}"
    frames = f"{instance}/frames/{{frames}}"
    paths: dict[str, Any] = {
        "/healthz": _get("Liveness", [], {"description": "The process answers"}),
        "/readyz": _get("Readiness: index and storage reachable", [], {"description": "Ready"}),
        f"{web}/studies": {
            **_search("QIDO-RS: search for studies", []),
            "post": _stow([]),
        },
        f"{web}/series": _search("QIDO-RS: search for series", []),
        f"{web}/instances": _search("QIDO-RS: search for instances", []),
        f"{study}/series": _search("QIDO-RS: series of a study", [_STUDY]),
        f"{study}/instances": _search("QIDO-RS: instances of a study", [_STUDY]),
        f"{series}/instances": _search("QIDO-RS: instances of a series", [_STUDY, _SERIES]),
        study: {
            **_get("WADO-RS: retrieve a study", [_STUDY], _BINARY),
            "post": _stow([_STUDY]),
            **_delete("a study", [_STUDY]),
        },
        series: {
            **_get("WADO-RS: retrieve a series", [_STUDY, _SERIES], _BINARY),
            **_delete("a series", [_STUDY, _SERIES]),
        },
        instance: {
            **_get("WADO-RS: retrieve an instance", [_STUDY, _SERIES, _SOP], _BINARY),
            **_delete("an instance", [_STUDY, _SERIES, _SOP]),
        },
        f"{study}/metadata": _get("WADO-RS: study metadata", [_STUDY], _BINARY),
        f"{series}/metadata": _get("WADO-RS: series metadata", [_STUDY, _SERIES], _BINARY),
        f"{instance}/metadata": _get(
            "WADO-RS: instance metadata", [_STUDY, _SERIES, _SOP], _BINARY
        ),
        frames: _get("WADO-RS: frames", [_STUDY, _SERIES, _SOP, _FRAMES], _BINARY),
        f"{instance}/rendered": _get("Rendered instance", [_STUDY, _SERIES, _SOP], _BINARY),
        f"{frames}/rendered": _get("Rendered frames", [_STUDY, _SERIES, _SOP, _FRAMES], _BINARY),
        f"{instance}/thumbnail": _get("Instance thumbnail", [_STUDY, _SERIES, _SOP], _BINARY),
        f"{series}/thumbnail": _get("Series thumbnail", [_STUDY, _SERIES], _BINARY),
        f"{study}/thumbnail": _get("Study thumbnail", [_STUDY], _BINARY),
        "/wado": _get(
            "WADO-URI (PS3.18 9)",
            [
                _query("requestType", {"type": "string", "enum": ["WADO"]}),
                _query("studyUID", _UID),
                _query("seriesUID", _UID),
                _query("objectUID", _UID),
                _query("contentType", _TEXT),
                _query("frameNumber", {"type": "integer", "minimum": 1}),
            ],
            _BINARY,
        ),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "dicomcloud DICOMweb",
            "version": __version__,
            "description": "DICOMweb (PS3.18): QIDO-RS, WADO-RS, STOW-RS, WADO-URI; DELETE.",
        },
        "paths": paths,
    }
