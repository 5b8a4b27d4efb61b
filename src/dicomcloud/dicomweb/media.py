"""Media types and content negotiation (RFC 9110 8.3 and 12.5.1, PS3.18 8.7)."""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import parse_options_header

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
