"""Decoding of string values per (0008,0005) Specific Character Set.

PS3.3 C.12.1.1.2 lists the Defined Terms; PS3.5 6.1.2.5 describes code extensions:
the first value is the default repertoire, further values are character sets
designated by ISO 2022 escape sequences inside a value, and the initial repertoire
is restored at each delimiter (PS3.5 6.1.2.5.3).  Decoding never raises: bytes that
cannot be decoded are replaced by U+FFFD and reported to the caller, who decides how
to warn.  The term-to-codec tables are pydicom's (``pydicom.charset``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydicom.charset import CODES_TO_ENCODINGS, default_encoding, handled_encodings, python_encoding

from dicomcloud.domain.values import show

__all__ = ["PN_DELIMITERS", "TEXT_DELIMITERS", "decode_text", "python_encodings"]

_ESC = b"\x1b"
_ESC_FRAGMENTS = re.compile(rb"^[^\x1b]+|\x1b[^\x1b]*")
#: Terms that cannot be combined with code extensions (PS3.3 table C.12-5).
_STAND_ALONE = frozenset({"ISO_IR 192", "GB18030", "GBK"})
#: Characters after which the initial character set is in force again (PS3.5
#: 6.1.2.5.3): value separator and control characters of text values ...
TEXT_DELIMITERS = frozenset(b"\\\r\n\t\f")
#: ... and, in PN values, the component and component group separators.
PN_DELIMITERS = frozenset(b"\\^=")


def _decode_with(raw: bytes, codec: str) -> tuple[str, bool]:
    """Decode ``raw``; on error, replace bad bytes and report the loss."""
    try:
        return raw.decode(codec), False
    except UnicodeDecodeError:
        return raw.decode(codec, errors="replace"), True


def _decode_fragment(
    fragment: bytes, encodings: Sequence[str], delimiters: frozenset[int]
) -> tuple[str, bool]:
    if not fragment.startswith(_ESC):
        return _decode_with(fragment, encodings[0])
    size = 4 if fragment.startswith((b"\x1b$(", b"\x1b$)")) else 3
    codec = CODES_TO_ENCODINGS.get(fragment[:size])
    if codec is None or (codec not in encodings and codec != default_encoding):
        text, _ = _decode_with(fragment[1:], encodings[0])
        return "\ufffd" + text, True
    if codec in handled_encodings:  # Python's codec reads the escape sequence itself
        return _decode_with(fragment, codec)
    body = fragment[size:]
    cut = next((i for i, byte in enumerate(body) if byte in delimiters), len(body))
    head, head_lossy = _decode_with(body[:cut], codec)
    tail, tail_lossy = _decode_with(body[cut:], encodings[0])
    return head + tail, head_lossy or tail_lossy


def decode_text(
    raw: bytes, encodings: Sequence[str], delimiters: frozenset[int] = TEXT_DELIMITERS
) -> tuple[str, bool]:
    """Decode an encoded string value with the Python ``encodings`` derived from
    Specific Character Set (first = default repertoire, others = code extensions
    selected by escape sequences, PS3.5 6.1.2.5).  Returns the text and whether bytes
    had to be replaced because they could not be decoded."""
    if _ESC not in raw:
        return _decode_with(raw, encodings[0])
    texts: list[str] = []
    lossy = False
    for fragment in _ESC_FRAGMENTS.findall(raw):
        text, bad = _decode_fragment(fragment, encodings, delimiters)
        texts.append(text)
        lossy = lossy or bad
    return "".join(texts), lossy


def _corrected_term(term: str) -> str | None:
    """Common misspellings of Specific Character Set terms ("ISO-IR 100")."""
    match = re.fullmatch(r"ISO[ _-]?IR[ _-]?([0-9]+)", term)
    if match is not None:
        return f"ISO_IR {match.group(1)}"
    match = re.fullmatch(r"ISO[ _-]?2022[ _-]?IR[ _-]?([0-9]+)", term)
    if match is not None:
        return f"ISO 2022 IR {match.group(1)}"
    return None


def python_encodings(terms: Sequence[str]) -> tuple[list[str], list[str]]:
    """Python codecs for the values of Specific Character Set, and the problems found.

    An empty first value (or no value) means the default repertoire (ISO_IR 6, read
    as ISO 8859-1 like pydicom does).  Misspelt terms (``ISO-IR 100``) are corrected,
    unknown terms replaced by the default, and stand-alone terms (UTF-8, GB18030, GBK)
    combined with others are handled as PS3.3 table C.12-5 allows; each of these is
    reported in the returned problems.
    """
    terms = [term.strip(" ") for term in terms] or [""]
    problems: list[str] = []
    if not terms[0]:
        terms[0] = "ISO_IR 6"
    if terms[0] in _STAND_ALONE and len(terms) > 1:
        problems.append(f"{terms[0]} allows no code extensions; the other values are ignored")
        terms = terms[:1]
    encodings: list[str] = []
    for index, term in enumerate(terms):
        if index and term in _STAND_ALONE:
            problems.append(f"{term} cannot be a code extension; ignored")
            continue
        codec = python_encoding.get(term)
        if codec is None:
            corrected = _corrected_term(term)
            codec = python_encoding.get(corrected) if corrected else None
            if codec is not None:
                problems.append(f"{show(term)} is misspelt; read as {corrected!r}")
        if codec is None:
            problems.append(f"unknown term {show(term)}; read as ISO_IR 100")
            codec = default_encoding
        encodings.append(codec)
    return encodings, problems
