"""WADO-RS retrieve of one instance (PS3.18 10.4): the stored Part-10 bytes.

Only the instance resource is served here; study/series retrieve, metadata, frames,
rendered and transcoding come with the retrieve issue.  The instance is returned in
the transfer syntax it was stored in, which the part's Content-Type names.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse

from dicomcloud.dicomweb.media import DICOM, MULTIPART_RELATED, parse_accept
from dicomcloud.errors import NotAcceptable
from dicomcloud.services.retrieve import StoredInstance


def check_accept(request: Request, transfer_syntax: str) -> None:
    """Accept must allow ``multipart/related; type="application/dicom"`` (PS3.18 8.7.3)."""
    for media in parse_accept(request.headers.get("accept")):
        if media.type in ("*/*", "multipart/*"):
            return
        if media.type == MULTIPART_RELATED:
            part_type = media.params.get("type", DICOM).lower()
            syntax = media.params.get("transfer-syntax", "*")
            if part_type in (DICOM, "*/*", "application/*") and syntax in ("*", transfer_syntax):
                return
    raise NotAcceptable(
        'this resource is available as multipart/related; type="application/dicom"; '
        f"transfer-syntax={transfer_syntax}; Accept was {request.headers.get('accept')!r}"
    )


def instance_response(stored: StoredInstance) -> StreamingResponse:
    boundary = uuid.uuid4().hex
    syntax = stored.record.transfer_syntax_uid

    async def body() -> AsyncIterator[bytes]:
        yield (
            f"--{boundary}\r\nContent-Type: {DICOM}; transfer-syntax={syntax}\r\n"
            f"Content-Length: {stored.record.size}\r\n\r\n"
        ).encode("ascii")
        async for chunk in stored.chunks:
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode("ascii")

    media_type = f'{MULTIPART_RELATED}; type="{DICOM}"; boundary={boundary}'
    return StreamingResponse(body(), media_type=media_type)
