"""Media types and content negotiation (RFC 9110 8.3 and 12.5.1, PS3.18 8.7)."""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import parse_options_header

from dicomcloud.errors import NotAcceptable
from dicomcloud.services.retrieve import AS_STORED, DEFAULT

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
JSON = "application/json"
MULTIPART_RELATED = "multipart/related"


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One media range of an Accept header, or a parsed Content-Type."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def matches(self, media_type: str) -> bool:
        if self.type in ("*/*", media_type):
            return True
        major = media_type.split("/", 1)[0]
        return self.type == f"{major}/*"


def parse_content_type(value: str | None) -> MediaRange:
    """``multipart/related; type="application/dicom"; boundary=x`` -> MediaRange."""
    main, params = parse_options_header(value or "")
    return MediaRange(
        main.decode("latin-1").strip().lower(),
        {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in params.items()},
    )


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def parse_accept(value: str | None) -> list[MediaRange]:
    """Media ranges of an Accept header, best first (q-value, then specificity).

    An absent or empty header accepts anything (RFC 9110 12.5.1).
    """
    if not value or not value.strip():
        return [MediaRange("*/*")]
    ranges: list[tuple[float, int, int, MediaRange]] = []
    for position, item in enumerate(_split_outside_quotes(value, ",")):
        if not item.strip():
            continue
        parsed = parse_content_type(item)
        q = 1.0
        params = dict(parsed.params)
        if "q" in params:
            try:
                q = max(0.0, min(1.0, float(params.pop("q"))))
            except ValueError:
                q = 0.0
        if q == 0.0 or not parsed.type:
            continue
        specificity = 0 if parsed.type == "*/*" else 1 if parsed.type.endswith("/*") else 2
        ranges.append((q, specificity, -position, MediaRange(parsed.type, params, q)))
    ranges.sort(key=lambda r: (r[0], r[1], r[2]), reverse=True)
    return [r[3] for r in ranges]


# --- WADO-RS negotiation (PS3.18 8.7.5, 8.7.3.5) -------------------------------------------

OCTET_STREAM = "application/octet-stream"
ZIP = "application/zip"


@dataclass(frozen=True, slots=True)
class DicomChoice:
    """How instances are sent: ``multipart`` (multipart/related; type=application/dicom),
    ``single`` (one application/dicom body) or ``zip``; with the acceptable transfer
    syntaxes, best first."""

    container: str
    syntaxes: tuple[str, ...]


def _syntax_param(media: MediaRange) -> str:
    return media.params.get("transfer-syntax", DEFAULT).strip()


def negotiate_instances(accept: str | None, *, single: bool) -> DicomChoice:
    """The representation of a study, series or instance resource (PS3.18 10.4.1.2,
    8.7.5): the best acceptable media range decides the container; every acceptable
    range of that container adds its transfer syntax, in preference order.

    ``multipart/related`` with a part type of ``application/dicom``, ``application/*``
    or ``*/*`` (or none), ``multipart/*`` and ``*/*`` mean multipart DICOM; a single
    ``application/dicom`` body is offered for one instance (``single``);
    ``application/zip`` gives a ZIP archive of Part-10 files.
    """
    choices: list[tuple[str, str]] = []
    for media in parse_accept(accept):
        container = ""
        if media.type == MULTIPART_RELATED:
            part = media.params.get("type", DICOM).strip().lower()
            if part in (DICOM, "application/*", "*/*"):
                container = "multipart"
        elif media.type in ("*/*", "multipart/*"):
            container = "multipart"
        elif media.type == DICOM and single:
            container = "single"
        elif media.type == ZIP or media.type == "application/*":
            container = "single" if media.type == "application/*" and single else "zip"
        if container:
            syntax = AS_STORED if container == "zip" else _syntax_param(media)
            choices.append((container, syntax))
    if not choices:
        offered = 'multipart/related; type="application/dicom" or application/zip'
        if single:
            offered += " or application/dicom"
        raise NotAcceptable(f"this resource is available as {offered}; Accept was {accept!r}")
    container = choices[0][0]
    syntaxes = tuple(dict.fromkeys(s for c, s in choices if c == container))
    return DicomChoice(container, syntaxes)


@dataclass(frozen=True, slots=True)
class FrameChoice:
    """How frames are sent: multipart or one single-part body, with the acceptable
    (media type, transfer syntax preference) pairs; media type "*" means any."""

    multipart: bool
    options: tuple[tuple[str, str], ...]


def negotiate_frames(accept: str | None, *, count: int) -> FrameChoice:
    """The representation of a frame list (PS3.18 10.4.1.1.4, 8.7.3.3.2, 8.7.5).

    ``multipart/related; type="*/*"`` (dicomweb-client), a missing part type, ``*/*``
    and ``application/octet-stream; transfer-syntax=*`` (OHIF) take the frames as
    stored; ``type="image/jls"`` etc. ask for that media type in its default or named
    syntax.  A single-part ``application/octet-stream`` or ``image/...`` body is
    offered when one frame is asked for.
    """
    multipart: list[tuple[str, str]] = []
    single: list[tuple[str, str]] = []
    first = ""
    for media in parse_accept(accept):
        syntax = _syntax_param(media)
        if media.type == MULTIPART_RELATED:
            part = media.params.get("type", "*/*").strip().lower()
            target = multipart
        elif media.type in ("*/*", "multipart/*"):
            part, target = "*/*", multipart
        elif count == 1 and (media.type == OCTET_STREAM or media.type.startswith("image/")):
            part, target = media.type, single
        else:
            continue
        if part in ("*/*", "image/*", "application/*"):
            part, syntax = "*", syntax or AS_STORED
        elif part == OCTET_STREAM and not syntax:
            syntax = DEFAULT
        target.append((part, syntax))
        first = first or ("multipart" if target is multipart else "single")
    if not first:
        raise NotAcceptable(
            'frames are available as multipart/related; type="application/octet-stream" or '
            f'type="image/..." (PS3.18 8.7.3.3.2); Accept was {accept!r}'
        )
    if first == "multipart":
        return FrameChoice(True, tuple(multipart))
    return FrameChoice(False, tuple(single))
