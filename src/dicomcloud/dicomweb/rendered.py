"""Rendered and thumbnail resources (PS3.18 10.4.1.1.x rendered, Supplement 203 thumbnails;
query parameters of PS3.18 8.3.5.1).

* ``.../instances/{i}/rendered``: the first frame as one image;
* ``.../instances/{i}/frames/{list}/rendered``: one image, or a multipart of images;
* ``.../series/{se}/rendered``, ``.../studies/{s}/rendered``: the first frame of every
  image instance, as ``multipart/related; type="image/jpeg"`` (or png); a single
  image when there is exactly one and the bare type is acceptable;
* ``.../thumbnail`` at each level: one small image of a representative frame (the
  middle frame of the middle instance of the first series with images).

``image/jpeg`` (default) and ``image/png``; ``window=center,width[,function]``,
``viewport=vw,vh[,sx,sy,sw,sh]`` (with a source image region) and ``quality=1..100``; a
malformed value is a 400 naming it.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import cast

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicomcloud.dicomweb.media import MULTIPART_RELATED, parse_accept
from dicomcloud.dicomweb.request_context import accept_of, archive_of, on_cpu, path_uid, tenant_of
from dicomcloud.domain.records import InstanceRecord
from dicomcloud.errors import BadRequest, DicomCloudError, NotAcceptable, NotFound
from dicomcloud.services.rendering import (
    JPEG,
    PNG,
    VOI_FUNCTIONS,
    FrameNotFound,
    MediaType,
    NotRenderable,
    RenderParams,
    render_frame,
)

log = logging.getLogger(__name__)

#: A thumbnail fits into this box unless a viewport is asked for.
THUMBNAIL_SIZE = 128
_FRAMES = re.compile(r"[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*")


# --- query parameters (PS3.18 8.3.5.1) -------------------------------------------------------


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"{name}: given more than once")
    return values[0] if values else None


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name}: {text!r} is not a finite number")
    return value


def parse_render_params(
    request: Request, media_type: MediaType, *, default_viewport: int | None = None
) -> RenderParams:
    """``window``, ``viewport`` and ``quality`` (PS3.18 8.3.5.1.2-4); 400 if malformed."""
    window = None
    text = _single(request, "window")
    if text is not None:
        parts = text.split(",")
        if len(parts) not in (2, 3):
            raise BadRequest(f"window: {text!r} is not center,width[,function]")
        center, width = _number("window", parts[0]), _number("window", parts[1])
        function = parts[2].strip().upper() if len(parts) == 3 else "LINEAR"
        if function not in VOI_FUNCTIONS:
            raise BadRequest(
                f"window: function {parts[2]!r} is not one of {', '.join(VOI_FUNCTIONS)}"
            )
        if width <= 0 or (function == "LINEAR" and width < 1):
            raise BadRequest(f"window: width {parts[1]!r} is too small for {function}")
        window = (center, width, function)
    viewport = (default_viewport, default_viewport) if default_viewport else None
    region = None
    text = _single(request, "viewport")
    if text is not None:
        viewport, region = parse_viewport(text)
    quality = None
    text = _single(request, "quality")
    if text is not None:
        if not text.strip().isdigit() or not 1 <= int(text) <= 100:
            raise BadRequest(f"quality: {text!r} is not an integer from 1 to 100")
        quality = int(text)
    return RenderParams(media_type, window, viewport, quality, region)


_VIEWPORT_SIZE = re.compile(r"[0-9]{1,5}")
_REGION_VALUE = re.compile(r"-?[0-9]{1,5}")


def parse_viewport(
    text: str,
) -> tuple[tuple[int, int], tuple[int | None, int | None, int | None, int | None] | None]:
    """``vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3) as ((rows, columns), region): the
    viewport in pixels, and the source image region, each of its four values None where
    left empty (``viewport=256,256,,,128,128``); 400 if malformed."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6) or not all(_VIEWPORT_SIZE.fullmatch(p) for p in parts[:2]):
        raise BadRequest(
            f"viewport: {text!r} is not vw,vh or vw,vh,sx,sy,sw,sh (vw and vh positive integers)"
        )
    columns, rows = int(parts[0]), int(parts[1])
    if not (0 < columns <= 16384 and 0 < rows <= 16384):
        raise BadRequest(f"viewport: {text!r} must be between 1 and 16384 pixels")
    if len(parts) == 2:
        return (rows, columns), None
    values: list[int | None] = []
    for name, part in zip(("sx", "sy", "sw", "sh"), parts[2:], strict=True):
        if part == "":
            values.append(None)
            continue
        if not _REGION_VALUE.fullmatch(part):
            raise BadRequest(f"viewport: {name} {part!r} is not an integer")
        value = int(part)
        if name in ("sx", "sy") and value < 0:
            raise BadRequest(f"viewport: {name} {part!r} must not be negative")
        if name in ("sw", "sh") and value == 0:
            raise BadRequest(f"viewport: {name} must not be 0")
        values.append(value)
    sx, sy, sw, sh = values
    return (rows, columns), (sx, sy, sw, sh)


def _choices(request: Request) -> list[tuple[bool, MediaType]]:
    """Acceptable (multipart?, media type) pairs, best first (PS3.18 8.7.4)."""
    accept = accept_of(request)
    out: list[tuple[bool, MediaType]] = []
    for media in parse_accept(accept):
        if media.type in ("*/*", "image/*"):
            out.append((False, JPEG))
            if media.type == "*/*":
                out.append((True, JPEG))
        elif media.type in (JPEG, PNG):
            out.append((False, cast(MediaType, media.type)))
        elif media.type in (MULTIPART_RELATED, "multipart/*"):
            part = media.params.get("type", JPEG).lower()
            if part in ("image/*", "*/*"):
                part = JPEG
            if part in (JPEG, PNG):
                out.append((True, cast(MediaType, part)))
    if not out:
        raise NotAcceptable(
            "rendered images are available as image/jpeg or image/png (bare or in "
            f"multipart/related); Accept was {accept!r}"
        )
    return out


# --- rendering ---------------------------------------------------------------------------


async def _render(
    request: Request, targets: Sequence[tuple[InstanceRecord, int]], *, thumbnail: bool = False
) -> Response:
    choices = _choices(request)
    single = len(targets) == 1
    multipart, media_type = next(
        ((m, t) for m, t in choices if m or single),
        (None, None),
    )
    if media_type is None or multipart is None:
        raise NotAcceptable(
            f"{len(targets)} images are rendered: accept multipart/related; type=image/jpeg "
            "or image/png"
        )
    record = targets[0][0]
    large = (record.rows or 0) > THUMBNAIL_SIZE or (record.columns or 0) > THUMBNAIL_SIZE
    # A thumbnail is made smaller, never larger, unless a viewport says otherwise.
    params = parse_render_params(
        request, media_type, default_viewport=THUMBNAIL_SIZE if thumbnail and large else None
    )
    archive = archive_of(request)

    async def render(record: InstanceRecord, frame: int) -> bytes:
        try:
            part10 = await archive.blobs.get(record.blob_key)
        except NotFound as exc:
            raise NotFound(
                f"the stored object of instance {record.sop_instance_uid} is missing"
            ) from exc
        return await on_cpu(request, render_frame, part10, frame, params)

    # The first image decides the status (a missing object or an unrenderable instance
    # is an error response); the others are rendered while the body streams, one at a
    # time, so memory stays bounded for a study of any size.
    first = await render(*targets[0])
    if not multipart:
        return Response(first, 200, media_type=media_type)
    boundary = uuid.uuid4().hex

    async def body() -> AsyncIterator[bytes]:
        header = f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode()
        yield header + first + b"\r\n"
        for record, frame in targets[1:]:
            try:
                image = await render(record, frame)
            except DicomCloudError as exc:  # after the status: cut the stream, log it
                log.error("rendered response cut at %s: %s", record.sop_instance_uid, exc.reason)
                return
            yield header + image + b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    content_type = f'{MULTIPART_RELATED}; type="{media_type}"; boundary={boundary}'
    return StreamingResponse(body(), 200, media_type=content_type)


def _has_image(record: InstanceRecord) -> bool:
    return record.rows is not None and record.columns is not None


def _middle_frame(record: InstanceRecord) -> int:
    return max(1, record.number_of_frames or 1) // 2


async def _instance(request: Request) -> InstanceRecord:
    study, series = path_uid(request, "study"), path_uid(request, "series")
    sop = path_uid(request, "sop")
    return await archive_of(request).metadata.instance_record(
        tenant_of(request), study, series, sop
    )


async def _series_records(request: Request) -> list[InstanceRecord]:
    study, series = path_uid(request, "study"), path_uid(request, "series")
    state = await archive_of(request).metadata.series_state(tenant_of(request), study, series, "")
    return list(state.records)


async def _study_series(request: Request) -> list[list[InstanceRecord]]:
    study = path_uid(request, "study")
    states = await archive_of(request).metadata.study_states(tenant_of(request), study, "")
    return [list(s.records) for s in states]


def _frames(request: Request, record: InstanceRecord) -> list[int]:
    text = request.path_params["frames"]
    if not _FRAMES.fullmatch(text):
        raise BadRequest(f"frame list {text!r} is not comma-separated frame numbers from 1")
    numbers = [int(n) for n in text.split(",")]
    count = max(1, record.number_of_frames or 1)
    for number in numbers:
        if number > count:
            raise FrameNotFound(f"frame {number} does not exist; the instance has {count}")
    return [n - 1 for n in numbers]


def _images_only(records: Sequence[InstanceRecord]) -> list[InstanceRecord]:
    images = [r for r in records if _has_image(r)]
    if not images:
        raise NotRenderable("no instance here has pixel data to render")
    return images


# --- routes ---------------------------------------------------------------------------------


async def instance_rendered(request: Request) -> Response:
    """Rendered instance: its first frame."""
    return await _render(request, [(await _instance(request), 0)])


async def frames_rendered(request: Request) -> Response:
    """Rendered frames: each frame of the list, in order."""
    record = await _instance(request)
    return await _render(request, [(record, f) for f in _frames(request, record)])


async def series_rendered(request: Request) -> Response:
    """Rendered series: the first frame of each image instance."""
    records = _images_only(await _series_records(request))
    return await _render(request, [(r, 0) for r in records])


async def study_rendered(request: Request) -> Response:
    """Rendered study: the first frame of each image instance, series by series."""
    records = _images_only([r for series in await _study_series(request) for r in series])
    return await _render(request, [(r, 0) for r in records])


async def instance_thumbnail(request: Request) -> Response:
    record = await _instance(request)
    return await _render(request, [(record, _middle_frame(record))], thumbnail=True)


async def frames_thumbnail(request: Request) -> Response:
    record = await _instance(request)
    return await _render(request, [(record, _frames(request, record)[0])], thumbnail=True)


async def series_thumbnail(request: Request) -> Response:
    images = _images_only(await _series_records(request))
    record = images[len(images) // 2]
    return await _render(request, [(record, _middle_frame(record))], thumbnail=True)


async def study_thumbnail(request: Request) -> Response:
    for series in await _study_series(request):
        images = [r for r in series if _has_image(r)]
        if images:
            record = images[len(images) // 2]
            return await _render(request, [(record, _middle_frame(record))], thumbnail=True)
    raise NotRenderable("no instance of the study has pixel data to render")
