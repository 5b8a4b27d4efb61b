"""WADO-RS metadata resources (PS3.18 10.4.1.1.6; DICOM JSON, Annex F; XML, PS3.19 A.1).

``GET .../studies/{s}/metadata``, ``.../series/{se}/metadata`` and
``.../instances/{i}/metadata``: ``application/dicom+json`` (default) or
``application/json``, or ``multipart/related; type="application/dicom+xml"`` with one
part per instance.  Every response carries a weak ETag derived from the instances'
stored versions; ``If-None-Match`` answers 304 without building anything.  Series
metadata is served as the stored gzip'd aggregate when the client accepts gzip.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response

from dicomcloud.dicomweb.media import DICOM_JSON, DICOM_XML, JSON, MULTIPART_RELATED, parse_accept
from dicomcloud.dicomweb.request_context import (
    accept_of,
    archive_of,
    base_url,
    on_cpu,
    path_uid,
    tenant_of,
)
from dicomcloud.dicomweb.responses import json_to_xml, multipart_body
from dicomcloud.errors import NotAcceptable

# --- shared by the retrieve routes of this package ----------------------------------------


def not_modified(request: Request, etag: str) -> bool:
    """RFC 9110 13.1.2: If-None-Match with ``*`` or a tag equal (weakly) to ``etag``."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/").strip('"')
        if tag == etag:
            return True
    return False


def accepts_gzip(request: Request) -> bool:
    """Whether Accept-Encoding allows gzip (RFC 9110 12.5.3)."""
    for item in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = params.strip().lower().removeprefix("q=")
        try:
            if not q or float(q) > 0:
                return True
        except ValueError:
            continue
    return False


# --- negotiation ----------------------------------------------------------------------------


def _metadata_media_type(request: Request) -> str:
    """PS3.18 10.4.1.1.6 / 8.7.3.4: DICOM JSON by default, XML as multipart."""
    for media in parse_accept(accept_of(request)):
        if media.type in ("*/*", "application/*", DICOM_JSON):
            return DICOM_JSON
        if media.type == JSON:
            return JSON
        if media.type == DICOM_XML:
            return DICOM_XML
        multipart = media.type in (MULTIPART_RELATED, "multipart/*")
        if multipart and media.params.get("type", "").lower() == DICOM_XML:
            return DICOM_XML
    raise NotAcceptable(
        "metadata is available as application/dicom+json, application/json or "
        f'multipart/related; type="{DICOM_XML}"; Accept was {accept_of(request)!r}'
    )


def _headers(etag: str) -> dict[str, str]:
    return {"ETag": f'W/"{etag}"', "Vary": "Accept, Accept-Encoding"}


def _json_response(
    request: Request, body: bytes, *, gzipped: bool, media: str, etag: str
) -> Response:
    headers = _headers(etag)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(body, 200, headers, media_type=media)


async def _respond(
    request: Request, media: str, etag: str, gz: bytes | None, text: bytes | None
) -> Response:
    """The metadata as JSON (gzip'd when allowed) or as multipart XML."""
    if media == DICOM_XML:
        raw = text if text is not None else gzip.decompress(gz or b"[]")
        body, content_type = await on_cpu(request, _xml_multipart, raw)
        return Response(body, 200, _headers(etag + "x"), media_type=content_type)
    if accepts_gzip(request):
        if gz is None:
            gz = await on_cpu(request, gzip.compress, text or b"[]", 1)
        return _json_response(request, gz, gzipped=True, media=media, etag=etag)
    if text is None:
        text = await on_cpu(request, gzip.decompress, gz or b"")
    return _json_response(request, text, gzipped=False, media=media, etag=etag)


def _etag_for(media: str, etag: str) -> str:
    return etag + "x" if media == DICOM_XML else etag


# --- routes ---------------------------------------------------------------------------------


async def series_metadata(request: Request) -> Response:
    """PS3.18 10.4.1.1.6: the metadata of every instance of a series."""
    archive = archive_of(request)
    study, series = path_uid(request, "study"), path_uid(request, "series")
    media = _metadata_media_type(request)
    base = base_url(request)
    tenant = tenant_of(request)
    archive.metadata.note_base(tenant, base)
    state = await archive.metadata.series_state(tenant, study, series, base)
    if not_modified(request, _etag_for(media, state.etag)):
        return Response(status_code=304, headers=_headers(_etag_for(media, state.etag)))
    gz = await archive.metadata.series_gzip(state, base)
    return await _respond(request, media, state.etag, gz, None)


async def study_metadata(request: Request) -> Response:
    """PS3.18 10.4.1.1.6: the metadata of every instance of a study."""
    archive = archive_of(request)
    study = path_uid(request, "study")
    media = _metadata_media_type(request)
    base = base_url(request)
    tenant = tenant_of(request)
    archive.metadata.note_base(tenant, base)
    states = await archive.metadata.study_states(tenant, study, base)
    etag = _combined([s.etag for s in states])
    if not_modified(request, _etag_for(media, etag)):
        return Response(status_code=304, headers=_headers(_etag_for(media, etag)))
    text = await archive.metadata.study_json(states, base)
    return await _respond(request, media, etag, None, text)


async def instance_metadata(request: Request) -> Response:
    """PS3.18 10.4.1.1.6: the metadata of one instance (a one-item array)."""
    archive = archive_of(request)
    study, series = path_uid(request, "study"), path_uid(request, "series")
    sop = path_uid(request, "sop")
    media = _metadata_media_type(request)
    base = base_url(request)
    record = await archive.metadata.instance_record(tenant_of(request), study, series, sop)
    etag = archive.metadata.instance_etag(record, base)
    if not_modified(request, _etag_for(media, etag)):
        return Response(status_code=304, headers=_headers(_etag_for(media, etag)))
    dataset = await archive.metadata.instance_metadata(record, base)
    text = json.dumps([dataset], ensure_ascii=False, separators=(",", ":")).encode()
    return await _respond(request, media, etag, None, text)


def _combined(etags: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(etags).encode()).hexdigest()[:32]


# --- Native DICOM Model (PS3.19 A.1) ----------------------------------------------------------


def _xml_multipart(text: bytes) -> tuple[bytes, str]:
    """Each data set of a DICOM JSON array as one Native DICOM Model part (PS3.19 A.1)."""
    return multipart_body([json_to_xml(ds).encode() for ds in json.loads(text)], DICOM_XML)
