"""WADO-RS retrieve (PS3.18 10.4): studies, series and instances as
``multipart/related; type="application/dicom"`` (or ``application/zip``), and frames.

What a client can get wrong (Accept, unknown UIDs, impossible conversions) is checked
before the first byte, and the first instance is read before the status; the body then
streams one instance at a time, reading the next while sending the current.  Each part
names its transfer syntax and length (PS3.18 8.6.1.2, 8.7.3.5).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence

from starlette.responses import Response, StreamingResponse

from dicomcloud.dicomweb.media import DICOM, MULTIPART_RELATED, ZIP, DicomChoice, FrameChoice
from dicomcloud.domain.records import InstanceRecord
from dicomcloud.services.frames import Frame
from dicomcloud.services.retrieve import PlannedInstance, RetrieveService, select_frame_syntax
from dicomcloud.services.zipstream import zip_instances


def _boundary() -> str:
    return uuid.uuid4().hex


async def instances_response(
    retrieve: RetrieveService,
    records: Sequence[InstanceRecord],
    choice: DicomChoice,
    *,
    filename: str = "dicom",
) -> Response:
    """The instances in the negotiated container (PS3.18 10.4.1.2, 8.7.3.5)."""
    if choice.container == "zip":
        return StreamingResponse(
            zip_instances(retrieve, records),
            media_type=ZIP,
            headers={"Content-Disposition": f'attachment; filename="{filename}.zip"'},
        )
    planned = retrieve.plan(records, choice.syntaxes)
    if choice.container == "single":
        (one,) = planned
        length, chunks = await retrieve.content(one)
        headers = {"Content-Length": str(length)}
        media_type = f"{DICOM}; transfer-syntax={one.transfer_syntax}"
        return StreamingResponse(chunks, media_type=media_type, headers=headers)
    # The first instance is read (or transcoded) before the status is sent, so that a
    # single-instance request reports a failed conversion as 406; later failures can
    # only end the stream (PS3.18 8.6.1.2 has no per-part status).
    first = await retrieve.content(planned[0])
    boundary = _boundary()
    media_type = f'{MULTIPART_RELATED}; type="{DICOM}"; boundary={boundary}'
    body = _multipart(retrieve, planned, first, boundary)
    return StreamingResponse(body, media_type=media_type)


#: Instances read (or transcoded) ahead of the one being sent: overlaps storage latency
#: with sending while holding at most this many more instances in memory.
READ_AHEAD = 3


async def _multipart(
    retrieve: RetrieveService,
    planned: Sequence[PlannedInstance],
    first: tuple[int, AsyncIterator[bytes]],
    boundary: str,
) -> AsyncIterator[bytes]:
    """The parts in order; the next ``READ_AHEAD`` instances are read (or transcoded)
    while the current one is being sent."""
    ahead: deque[asyncio.Task[tuple[int, AsyncIterator[bytes]]]] = deque()
    following = iter(planned[1:])
    try:
        for position, item in enumerate(planned):
            while len(ahead) < READ_AHEAD and (upcoming := next(following, None)):
                ahead.append(asyncio.ensure_future(retrieve.content(upcoming)))
            length, chunks = first if position == 0 else await ahead.popleft()
            head = (
                f"--{boundary}\r\nContent-Type: {DICOM}; transfer-syntax={item.transfer_syntax}"
                f"\r\nContent-Length: {length}\r\n\r\n"
            ).encode("ascii")
            # Small objects go out as one write with their part header (fewer sends).
            pending = [head]
            async for chunk in chunks:
                pending.append(chunk)
                yield b"".join(pending)
                pending = []
            yield b"".join([*pending, b"\r\n"])
        yield f"--{boundary}--\r\n".encode("ascii")
    finally:
        for task in ahead:
            task.cancel()


def _frame_content_type(frame: Frame) -> str:
    return f"{frame.media_type}; transfer-syntax={frame.transfer_syntax}"


async def frames_response(
    retrieve: RetrieveService,
    record: InstanceRecord,
    numbers: Sequence[int],
    choice: FrameChoice,
) -> Response:
    """Frames as multipart/related parts, one per frame in the order asked
    (PS3.18 10.4.1.1.4, 8.7.3.3.2), or one single-part body."""
    target = select_frame_syntax(record, choice.options)
    frames = await retrieve.frames(record, numbers, target)
    if not choice.multipart:
        (frame,) = frames
        return Response(frame.data, media_type=_frame_content_type(frame))
    boundary = _boundary()
    body = bytearray()
    for frame in frames:
        body += (
            f"--{boundary}\r\nContent-Type: {_frame_content_type(frame)}\r\n"
            f"Content-Length: {len(frame.data)}\r\n\r\n"
        ).encode("ascii")
        body += frame.data
        body += b"\r\n"
    body += f"--{boundary}--\r\n".encode("ascii")
    media_type = f'{MULTIPART_RELATED}; type="{frames[0].media_type}"; boundary={boundary}'
    return Response(bytes(body), media_type=media_type)
