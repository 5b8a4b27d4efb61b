"""WADO-URI (PS3.18 9): ``/wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``.

``contentType=application/dicom`` returns the instance as one PS3.10 file in the
``transferSyntax`` asked for, Explicit VR Little Endian by default (PS3.18 9.1.2.3.1
and 8.7.3.4).  Without ``contentType`` the Selected Media Type is ``image/jpeg``
(PS3.18 9.3): ``image/jpeg`` and ``image/png`` are rendered (``windowCenter``,
``windowWidth``, ``rows``, ``columns``, ``frameNumber``, ``imageQuality`` of PS3.18
9.1.2.4) by the same renderer as the WADO-RS rendered resources.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from dicomcloud.dicomweb.media import DICOM, parse_accept
from dicomcloud.domain.values import is_valid_uid
from dicomcloud.errors import BadRequest, NotAcceptable
from dicomcloud.services.rendering import JPEG, PNG, RenderParams
from dicomcloud.services.retrieve import DEFAULT

#: Query parameters of PS3.18 table 9.1.2-1 that name the instance.
_UID_PARAMETERS = ("studyUID", "seriesUID", "objectUID")
RENDERED = ("image/jpeg", "image/png", "image/gif", "image/jp2")
#: The rendered types this server produces.
RENDERABLE = (JPEG, PNG)


@dataclass(frozen=True, slots=True)
class WadoUriRequest:
    study_uid: str
    series_uid: str
    sop_uid: str
    content_type: str
    transfer_syntax: str


def parse_wado_uri(request: Request) -> WadoUriRequest:
    """The request's parameters, checked (400 with the parameter named otherwise)."""
    params = request.query_params
    request_type = params.get("requestType")
    if request_type != "WADO":
        raise BadRequest(f"requestType must be WADO (PS3.18 9.1.2.1.1), not {request_type!r}")
    uids: list[str] = []
    for name in _UID_PARAMETERS:
        value = params.get(name)
        if not value:
            raise BadRequest(f"the {name} parameter is required (PS3.18 table 9.1.2-1)")
        if not is_valid_uid(value):
            raise BadRequest(f"{name} {value!r} is not a valid UID (PS3.5 9.1)")
        uids.append(value)
    content_type = _content_type(params.get("contentType"), request.headers.get("accept"))
    syntax = params.get("transferSyntax", DEFAULT).strip()
    if syntax and content_type != DICOM:
        raise BadRequest("transferSyntax is only allowed with contentType=application/dicom")
    if syntax and syntax != "*" and not is_valid_uid(syntax):
        raise BadRequest(f"transferSyntax {syntax!r} is not a valid UID")
    return WadoUriRequest(uids[0], uids[1], uids[2], content_type, syntax)


def _content_type(requested: str | None, accept: str | None) -> str:
    """PS3.18 9.1.2.3.1: the first acceptable type of ``contentType``; without it,
    image/jpeg (9.3)."""
    candidates = [c.split(";")[0].strip().lower() for c in (requested or "").split(",")]
    candidates = [c for c in candidates if c] or ["image/jpeg"]
    ranges = parse_accept(accept)
    for candidate in candidates:
        if any(r.matches(candidate) for r in ranges):
            return candidate
    raise NotAcceptable(f"contentType {requested!r} does not match Accept {accept!r}")


def check_supported(request: WadoUriRequest, *, rendering: bool) -> None:
    if request.content_type == DICOM:
        return
    if request.content_type in RENDERABLE and rendering:
        return
    if request.content_type in RENDERED:
        raise NotAcceptable(
            f"rendered {request.content_type} is not available; ask for image/jpeg, "
            "image/png or application/dicom"
        )
    raise NotAcceptable(f"contentType {request.content_type} is not supported (PS3.18 9)")


def _positive_int(params: dict[str, str], name: str, upper: int) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not text.strip().isdigit() or not 1 <= int(text) <= upper:
        raise BadRequest(f"{name}: {text!r} is not an integer from 1 to {upper}")
    return int(text)


def _decimal(params: dict[str, str], name: str) -> float | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{name}: {text!r} is not a decimal number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise BadRequest(f"{name}: {text!r} is not a finite number")
    return value


def render_parameters(request: Request, content_type: str) -> tuple[int, RenderParams]:
    """The 0-based frame index and rendering of a rendered WADO-URI request (PS3.18
    9.1.2.4: ``frameNumber``, ``windowCenter`` with ``windowWidth``, ``rows``,
    ``columns``, ``region``, ``imageQuality``); 400 naming the parameter otherwise."""
    params = dict(request.query_params)
    frame = _positive_int(params, "frameNumber", 2**31 - 1) or 1
    center, width = _decimal(params, "windowCenter"), _decimal(params, "windowWidth")
    if (center is None) != (width is None):
        raise BadRequest("windowCenter and windowWidth go together (PS3.18 9.1.2.4.9)")
    window = None
    if center is not None and width is not None:
        if width < 1:
            raise BadRequest(f"windowWidth {width} must be at least 1")
        window = (center, width, "LINEAR")
    rows = _positive_int(params, "rows", 16384)
    columns = _positive_int(params, "columns", 16384)
    viewport = None
    if rows is not None or columns is not None:
        # One given: the other is unconstrained (the aspect ratio decides).
        viewport = (rows or 16384, columns or 16384)
    quality = _positive_int(params, "imageQuality", 100)
    return frame - 1, RenderParams(
        PNG if content_type == PNG else JPEG,
        window,
        viewport,
        quality,
        relative_region=_region(params),
    )


def _region(params: dict[str, str]) -> tuple[float, float, float, float] | None:
    """``region=left,top,right,bottom``: fractions 0.0-1.0 of the image, top left
    origin, left < right and top < bottom (PS3.18 9.1.2.4)."""
    text = params.get("region")
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 4:
        raise BadRequest(f"region: {text!r} is not left,top,right,bottom")
    values = []
    for part in parts:
        value = _decimal({"region": part}, "region")
        if value is None or not 0.0 <= value <= 1.0:
            raise BadRequest(f"region: {part!r} is not a fraction from 0.0 to 1.0")
        values.append(value)
    left, top, right, bottom = values
    if not (left < right and top < bottom):
        raise BadRequest(f"region: {text!r} needs left < right and top < bottom")
    return left, top, right, bottom
