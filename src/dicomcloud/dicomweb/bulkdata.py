"""Bulk data resources (PS3.18 10.4.1.1.5): the value of one element, by BulkDataURI.

``GET .../instances/{i}/bulkdata/{path}``, ``path`` the element's tag path as the
metadata names it (``7FE00010``, ``00540016.0.00281201``).  The bytes are read from the
stored file at the offset recorded when the metadata was built: the file is not parsed.
Answered as ``multipart/related; type="application/octet-stream"`` (the default of
PS3.18 8.7.3.5.1) or as a bare ``application/octet-stream`` when that is asked for
first; one byte range (RFC 9110 14.2) gives 206, an unsatisfiable one 416.
"""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request
from starlette.responses import Response

from dicomcloud.dicomweb.media import MULTIPART_RELATED, parse_accept
from dicomcloud.dicomweb.request_context import accept_of, archive_of, path_uid, tenant_of
from dicomcloud.errors import BadRequest, DicomCloudError, NotAcceptable
from dicomcloud.services.metadata_json import BULK_PATH

OCTET_STREAM = "application/octet-stream"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(DicomCloudError):
    """RFC 9110 15.5.17: no part of the requested range lies within the value."""

    http_status = 416


def _multipart_wanted(request: Request) -> bool:
    for media in parse_accept(accept_of(request)):
        if media.type in ("*/*", "multipart/*"):
            return True
        if media.type == MULTIPART_RELATED:
            part = media.params.get("type", OCTET_STREAM).lower()
            if part in (OCTET_STREAM, "application/*", "*/*"):
                return True
        if media.type in (OCTET_STREAM, "application/*"):
            return False
    raise NotAcceptable(
        f'bulk data is available as multipart/related; type="{OCTET_STREAM}" or as '
        f"{OCTET_STREAM}; Accept was {accept_of(request)!r}"
    )


def byte_range(header: str | None, length: int) -> tuple[int, int] | None:
    """The (first, last) byte positions of a single-range ``Range`` header, or None to
    send the whole value (no header, several ranges, or a syntax error: RFC 9110 14.2
    lets a server ignore those)."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:  # suffix: the last N bytes
        suffix = int(last_text)
        if suffix == 0 or length == 0:
            raise RangeNotSatisfiable(f"range {header} is empty; the value has {length} bytes")
        return max(0, length - suffix), length - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # invalid: ignored
    if first >= length:
        raise RangeNotSatisfiable(f"range {header} starts beyond the {length} bytes of the value")
    last = int(last_text) if last_text else length - 1
    return first, min(last, length - 1)


async def retrieve_bulkdata(request: Request) -> Response:
    """PS3.18 10.4.1.1.5: one bulk data value of an instance."""
    archive = archive_of(request)
    study, series = path_uid(request, "study"), path_uid(request, "series")
    sop = path_uid(request, "sop")
    path = request.path_params["path"]
    if not BULK_PATH.fullmatch(path):
        raise BadRequest(
            f"{path!r} is not a bulk data path (tags as 8 upper-case hex digits, items "
            "as numbers, joined by '.')"
        )
    multipart = _multipart_wanted(request)
    record = await archive.metadata.instance_record(tenant_of(request), study, series, sop)
    ref, value = await archive.metadata.bulk_data(record, path)
    try:
        wanted = byte_range(request.headers.get("range"), ref.length)
    except RangeNotSatisfiable as exc:
        return Response(
            exc.reason, 416, {"Content-Range": f"bytes */{ref.length}"}, media_type="text/plain"
        )
    first, last = wanted if wanted is not None else (0, ref.length - 1)
    count = max(0, last - first + 1)
    if value is not None:
        data = value[first : first + count]
    elif count:
        assert ref.offset is not None
        data = await archive.blobs.read_range(record.blob_key, ref.offset + first, count)
    else:
        data = b""
    status = 206 if wanted is not None else 200
    headers = {"Accept-Ranges": "bytes"}
    content_range = f"bytes {first}-{last}/{ref.length}" if wanted is not None else None
    if content_range and not multipart:
        headers["Content-Range"] = content_range
    if not multipart:
        return Response(data, status, headers, media_type=OCTET_STREAM)
    boundary = uuid.uuid4().hex
    part_headers = f"Content-Type: {OCTET_STREAM}\r\n"
    if content_range:
        part_headers += f"Content-Range: {content_range}\r\n"
    body = b"".join(
        (
            f"--{boundary}\r\n{part_headers}\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        )
    )
    media_type = f'{MULTIPART_RELATED}; type="{OCTET_STREAM}"; boundary={boundary}'
    return Response(body, status, headers, media_type=media_type)
