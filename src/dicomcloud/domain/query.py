"""The backend-neutral query tree shared by QIDO-RS (PS3.18 10.6) and C-FIND (PS3.4 C.4.1).

A search is parsed once into a :class:`Query`: the level, one match node per matching
key (PS3.4 C.2.2.2 names the matching types), the extra attributes to return, and the
paging and fuzzy-matching options.  Index backends compile the tree to their own
dialect; nothing here knows about SQL or HTTP.

:func:`parse_qido` builds a :class:`Query` from QIDO-RS query parameters.  Every
problem raises :class:`QueryError`, whose message names the offending key or parameter
(it becomes the reason of a 400 response).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from dicomcloud.domain.dates import parse_da, parse_dt, parse_tm
from dicomcloud.domain.values import InvalidValue, parse_uid, show

__all__ = [
    "INCLUDE_ALL",
    "INTEGER_VRS",
    "Match",
    "Query",
    "QueryError",
    "QueryLevel",
    "Range",
    "SingleValue",
    "UidList",
    "Universal",
    "Wildcard",
    "parse_qido",
    "resolve_keyword",
]

#: The ``includefield`` value that asks for every attribute stored at the level
#: (PS3.18 8.3.4.3).
INCLUDE_ALL = "all"

_TAG_RE = re.compile(r"[0-9A-Fa-f]{8}")
_UINT_RE = re.compile(r"[0-9]+")  # ASCII digits only: int() also takes "+1", " 1", "١"
_RANGE_VRS = frozenset({"DA", "TM", "DT"})
# PS3.4 C.2.2.2.4: wildcard matching is not defined for these VRs.
_NO_WILDCARD_VRS = frozenset({"UI", "DA", "TM", "DT", "SQ"})
_WILDCARDS = frozenset("*?")
#: VRs indexed as integers: only single value (and universal) matching applies.
INTEGER_VRS = frozenset({"IS", "US"})
_INT_RE = re.compile(r"[+-]?[0-9]+")
_NORMALISERS: Mapping[str, Callable[[str], str]] = {
    "DA": parse_da,
    "TM": parse_tm,
    "DT": parse_dt,
}


class QueryError(ValueError):
    """A query key or parameter that cannot be understood: an unknown attribute, one not
    searchable at the level, or a malformed value (PS3.18 10.6: 400 Bad Request).

    ``key`` is the query key or parameter as the client sent it.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class QueryLevel(enum.Enum):
    """Query/Retrieve level (PS3.4 C.3: PATIENT, STUDY, SERIES, IMAGE)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


@dataclass(frozen=True, slots=True)
class SingleValue:
    """Single Value Matching (PS3.4 C.2.2.2.1): the attribute equals ``value``.

    DA and TM values are normalised (see :mod:`dicomcloud.domain.dates`), UI values have
    their padding removed; other values are kept exactly as given.
    """

    keyword: str
    value: str


@dataclass(frozen=True, slots=True)
class UidList:
    """List of UID Matching (PS3.4 C.2.2.2.2): the attribute equals one of ``uids``."""

    keyword: str
    uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Universal:
    """Universal Matching (PS3.4 C.2.2.2.3): an empty value matches everything; the
    attribute is only asked to be returned."""

    keyword: str


@dataclass(frozen=True, slots=True)
class Wildcard:
    """Wildcard Matching (PS3.4 C.2.2.2.4): ``*`` matches any sequence of characters
    (including none), ``?`` exactly one character; all other characters match
    themselves."""

    keyword: str
    pattern: str


@dataclass(frozen=True, slots=True)
class Range:
    """Range Matching (PS3.4 C.2.2.2.5) for DA, TM and DT: ``low <= value <= high``.

    Either bound may be ``None`` (``-20240101``: on or before; ``20240101-``: on or
    after), never both.  Bounds are normalised by :mod:`dicomcloud.domain.dates`, so
    that DA and TM bounds compare as strings against the values the index stores.
    """

    keyword: str
    low: str | None
    high: str | None


#: One matching key of a query (PS3.4 C.2.2.2).
Match = SingleValue | UidList | Universal | Wildcard | Range


@dataclass(frozen=True, slots=True)
class Query:
    """A search at one level (PS3.4 C.2.2.2 and C.4.1; PS3.18 10.6).

    ``matches`` holds one node per matching key, in the order given; every matched
    attribute is also returned.  ``return_keys`` are the further attributes asked for
    (``includefield``), as keywords; ``include_all`` is true for ``includefield=all``.
    ``fuzzy`` asks for fuzzy person-name matching; ``limit`` (``None``: no limit asked)
    and ``offset`` page through the results.
    """

    level: QueryLevel
    matches: tuple[Match, ...] = ()
    return_keys: tuple[str, ...] = ()
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    include_all: bool = False


def resolve_keyword(key: str) -> str | None:
    """The attribute keyword for ``key``, given as a keyword (``PatientID``) or as eight
    hexadecimal digits (``00100020``), or ``None`` if pydicom's data dictionary does not
    know it."""
    if _TAG_RE.fullmatch(key):
        return keyword_for_tag(int(key, 16)) or None
    tag = tag_for_keyword(key) if key else None
    # The round trip rejects dictionary entries without a keyword (retired ones).
    if tag is not None and keyword_for_tag(tag) == key:
        return key
    return None


def _parse_range(key: str, keyword: str, vr: str, value: str) -> Range:
    normalise = _NORMALISERS[vr]
    candidates: list[Range] = []
    for index, char in enumerate(value):
        if char != "-":
            continue
        low_text, high_text = value[:index], value[index + 1 :]
        if not low_text and not high_text:
            continue
        try:
            low = normalise(low_text) if low_text else None
            high = normalise(high_text) if high_text else None
        except InvalidValue:
            continue
        if low is not None and high is not None and low > high:
            continue
        candidates.append(Range(keyword, low, high))
    if len(candidates) != 1:
        # Zero: no valid split.  Several: only possible for DT, whose UTC offset also
        # uses '-'; refusing is safer than guessing.
        raise QueryError(
            key, f"{show(value)} is not a valid {vr} range (low-high, either side optional)"
        )
    return candidates[0]


def _parse_match(key: str, keyword: str, vr: str, value: str) -> Match:
    """Choose the matching type for one key from its value and VR (PS3.4 C.2.2.2)."""
    if value == "":
        return Universal(keyword)
    if vr in INTEGER_VRS:
        if _INT_RE.fullmatch(value) is None:
            raise QueryError(key, f"{show(value)} is not an integer ({vr})")
        return SingleValue(keyword, str(int(value)))
    if vr == "UI":
        parts = re.split(r"[\\,]", value)  # PS3.18 8.3.4.1: backslash or comma
        try:
            uids = tuple(parse_uid(part, name=keyword) for part in parts)
        except InvalidValue as exc:
            raise QueryError(key, str(exc)) from exc
        if len(uids) > 1:
            return UidList(keyword, uids)
        return SingleValue(keyword, uids[0])
    if vr in _RANGE_VRS:
        normalise = _NORMALISERS[vr]
        if "-" not in value:
            try:
                return SingleValue(keyword, normalise(value))
            except InvalidValue as exc:
                raise QueryError(key, str(exc)) from exc
        if vr == "DT":
            # A DT value may carry a negative UTC offset (PS3.5 6.2, "&ZZXX").
            try:
                return SingleValue(keyword, normalise(value))
            except InvalidValue:
                pass
        return _parse_range(key, keyword, vr, value)
    if vr not in _NO_WILDCARD_VRS and not _WILDCARDS.isdisjoint(value):
        return Wildcard(keyword, value)
    return SingleValue(keyword, value)


def _parse_bool(name: str, value: str) -> bool:
    if value == "true":
        return True
    if value == "false":
        return False
    raise QueryError(name, f"{show(value)} is not 'true' or 'false'")


def _parse_count(name: str, value: str, minimum: int) -> int:
    if _UINT_RE.fullmatch(value) is None or int(value) < minimum:
        kind = "a positive integer" if minimum > 0 else "an integer >= 0"
        raise QueryError(name, f"{show(value)} is not {kind}")
    return int(value)


def parse_qido(
    level: QueryLevel,
    params: Sequence[tuple[str, str]],
    *,
    known: Mapping[str, str],
) -> Query:
    """Parse QIDO-RS query parameters (PS3.18 8.3.4 and 10.6.1) into a :class:`Query`.

    ``params`` are the decoded ``(name, value)`` pairs in request order; ``known`` maps
    each keyword searchable at ``level`` to its VR.  Attribute keys may be keywords or
    tags; ``includefield`` (repeatable, comma-separated, or ``all``),
    ``fuzzymatching``, ``limit`` and ``offset`` are the other parameters.  Raises
    :class:`QueryError` naming the key for an unknown or unsearchable attribute, a
    malformed value, or a key given twice.
    """
    matches: dict[str, Match] = {}
    return_keys: dict[str, None] = {}
    include_all = False
    options: dict[str, str] = {}
    for name, value in params:
        if name == "includefield":
            for item in value.split(","):
                if item == INCLUDE_ALL:
                    include_all = True
                    continue
                keyword = resolve_keyword(item)
                if keyword is None:
                    raise QueryError(name, f"{show(item)} is not a known DICOM attribute")
                return_keys[keyword] = None
            continue
        if name in ("fuzzymatching", "limit", "offset"):
            if name in options:
                raise QueryError(name, "is given more than once")
            options[name] = value
            continue
        keyword = resolve_keyword(name)
        if keyword is None:
            raise QueryError(name, "is not a known DICOM attribute or query parameter")
        vr = known.get(keyword)
        if vr is None:
            raise QueryError(name, f"{keyword} is not searchable at the {level.value} level")
        if keyword in matches:
            raise QueryError(name, f"{keyword} is given more than once")
        matches[keyword] = _parse_match(name, keyword, vr, value)

    fuzzy = "fuzzymatching" in options and _parse_bool("fuzzymatching", options["fuzzymatching"])
    limit = _parse_count("limit", options["limit"], 1) if "limit" in options else None
    offset = _parse_count("offset", options["offset"], 0) if "offset" in options else 0
    return Query(
        level=level,
        matches=tuple(matches.values()),
        return_keys=tuple(return_keys),
        fuzzy=fuzzy,
        limit=limit,
        offset=offset,
        include_all=include_all,
    )
