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

import calendar
import enum
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from dicomcloud.domain.dates import parse_da, parse_dt, parse_tm
from dicomcloud.domain.values import InvalidValue, parse_uid, show

if TYPE_CHECKING:
    from dicomcloud.domain.extended_tags import ExtendedTag

__all__ = [
    "DATE_TIME_PAIRS",
    "DECIMAL_VRS",
    "INCLUDE_ALL",
    "INTEGER_VRS",
    "DateTimeRange",
    "Match",
    "Query",
    "QueryError",
    "QueryLevel",
    "Range",
    "SingleValue",
    "UidList",
    "Universal",
    "Wildcard",
    "decimal_key",
    "match_keywords",
    "parse_qido",
    "resolve_keyword",
    "resolve_path",
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
#: VRs indexed as integers: only single value (and universal) matching applies
#: (PS3.4 C.2.2.2.4 excludes them from wildcard matching, C.2.2.2.5 from ranges).
INTEGER_VRS = frozenset({"IS", "US", "SS", "SL", "UL", "SV", "UV"})
#: VRs indexed as decimal numbers (``decimal_key``): single value matching only, too.
DECIMAL_VRS = frozenset({"DS", "FD", "FL"})
#: Integers an index column holds (64-bit signed); UV values above are not indexed.
INT64 = range(-(1 << 63), 1 << 63)
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
    after), never both.  Bounds are normalised (:mod:`dicomcloud.domain.dates`) so that
    they compare as strings against the values the index stores; a TM or DT upper
    bound covers its whole precision (``-1100`` ends at ``110059.999999``).  A TM range
    whose low bound is later than its high bound crosses midnight (``22-02``).
    """

    keyword: str
    low: str | None
    high: str | None


@dataclass(frozen=True, slots=True)
class DateTimeRange:
    """A date and its time given together as ranges, matched as one date-time range
    (PS3.4 C.2.2.2.5.1): ``(low_date, low_time) <= (date, time) <= (high_date,
    high_time)``; a missing time counts as midnight.  ``keyword`` is the date (DA)
    attribute, ``time_keyword`` its time (TM); either end may be ``None``."""

    keyword: str
    time_keyword: str
    low: tuple[str, str] | None
    high: tuple[str, str] | None


#: One matching key of a query (PS3.4 C.2.2.2).
Match = SingleValue | UidList | Universal | Wildcard | Range | DateTimeRange

#: Date attributes and the time attribute that completes each (PS3.4 C.2.2.2.5.1).
DATE_TIME_PAIRS: Mapping[str, str] = {
    "StudyDate": "StudyTime",
    "SeriesDate": "SeriesTime",
    "ContentDate": "ContentTime",
    "AcquisitionDate": "AcquisitionTime",
    "PerformedProcedureStepStartDate": "PerformedProcedureStepStartTime",
    "PatientBirthDate": "PatientBirthTime",
}
#: The earliest time of a day, as the index stores it.
MIDNIGHT = "000000"


def match_keywords(node: Match) -> tuple[str, ...]:
    """The attributes one match node is about (two for a :class:`DateTimeRange`)."""
    if isinstance(node, DateTimeRange):
        return (node.keyword, node.time_keyword)
    return (node.keyword,)


@dataclass(frozen=True, slots=True)
class Query:
    """A search at one level (PS3.4 C.2.2.2 and C.4.1; PS3.18 10.6).

    ``matches`` holds one node per matching key, in the order given; every matched
    attribute is also returned.  ``return_keys`` are the further attributes asked for
    (``includefield``), as keywords; ``include_all`` is true for ``includefield=all``.
    ``fuzzy`` asks for fuzzy person-name matching; ``limit`` (``None``: no limit asked)
    and ``offset`` page through the results.  ``with_attributes`` asks the index for the
    stored DICOM JSON of each level (``includefield`` beyond the indexed attributes).
    ``extended`` are the configured extended query tags among the matching keys (their
    match nodes use :attr:`ExtendedTag.key` as keyword).
    """

    level: QueryLevel
    matches: tuple[Match, ...] = ()
    return_keys: tuple[str, ...] = ()
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    include_all: bool = False
    with_attributes: bool = False
    extended: tuple[ExtendedTag, ...] = ()


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


def resolve_path(key: str) -> list[str] | None:
    """The keywords of a dotted attribute path (``RequestAttributesSequence.
    RequestedProcedureID`` or ``0040A370.00401001``, PS3.18 8.3.4.1), or ``None``
    unless every part is a public attribute."""
    keywords = [resolve_keyword(part) for part in key.split(".")]
    if len(keywords) < 2 or any(k is None for k in keywords):
        return None
    return [k for k in keywords if k is not None]


_TM_DIGITS_RE = re.compile(r"([0-9]{2,6})(?:\.([0-9]{1,6}))?")
_DT_TEXT_RE = re.compile(r"([0-9]{4,14})(?:\.([0-9]{1,6}))?([+-][0-9]{4})?")
#: The latest value of each DT component after the year: month, day, hours, minutes,
#: seconds (the day is clamped to the month below).
_DT_MAX_TAIL = "1231235959"


def tm_high(text: str) -> str:
    """The last instant a TM range's upper bound covers, at the index's precision
    (PS3.4 C.2.2.2.5: ``-11`` includes 11:59:59.999999, ``-1100`` 11:00:59.999999)."""
    normalised = parse_tm(text)  # validates
    match = _TM_DIGITS_RE.fullmatch(text.strip(" ").replace(":", ""))
    if match is None:  # pragma: no cover - parse_tm accepted it
        return normalised
    digits, fraction = match.groups()
    whole = digits + "5959"[len(digits) - 2 :]
    return f"{whole}.{(fraction or '').ljust(6, '9')}"


def tm_low(text: str) -> str:
    """The first instant a TM range's lower bound covers, in the index's form: a
    fraction of zeros is dropped so that a stored ``HHMMSS`` compares equal."""
    normalised = parse_tm(text)
    return normalised.removesuffix(".000000")


def _dt_bound(text: str, *, high: bool) -> str:
    """A DT range bound as ``YYYYMMDDHHMMSS.FFFFFF``: missing components take their
    first (low) or last (high) value; a UTC offset is kept as given (PS3.4
    C.2.2.2.5: offsets are compared as written, the index holds no DT yet)."""
    parse_dt(text)  # validates
    match = _DT_TEXT_RE.fullmatch(text.strip(" "))
    if match is None:  # pragma: no cover - parse_dt accepted it
        return text
    digits, fraction, offset = match.groups()
    if high:
        full = digits + _DT_MAX_TAIL[len(digits) - 4 :]
        last_day = calendar.monthrange(int(full[:4]), int(full[4:6]))[1]
        if len(digits) < 8:
            full = f"{full[:6]}{last_day:02d}{full[8:]}"
        tail = (fraction or "").ljust(6, "9")
    else:
        full = digits + "0101000000"[len(digits) - 4 :]
        tail = (fraction or "").ljust(6, "0")
    return f"{full}.{tail}{offset or ''}"


_LOW: Mapping[str, Callable[[str], str]] = {
    "DA": parse_da,
    "TM": tm_low,
    "DT": lambda text: _dt_bound(text, high=False),
}
_HIGH: Mapping[str, Callable[[str], str]] = {
    "DA": parse_da,
    "TM": tm_high,
    "DT": lambda text: _dt_bound(text, high=True),
}


def _parse_range(key: str, keyword: str, vr: str, value: str) -> Range:
    candidates: list[Range] = []
    for index, char in enumerate(value):
        if char != "-":
            continue
        low_text, high_text = value[:index], value[index + 1 :]
        if not low_text and not high_text:
            continue
        try:
            low = _LOW[vr](low_text) if low_text else None
            high = _HIGH[vr](high_text) if high_text else None
        except InvalidValue:
            continue
        if low is not None and high is not None and low > high and vr != "TM":
            continue  # a TM range may cross midnight (22-02), see Range
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
        if _INT_RE.fullmatch(value) is None or int(value) not in INT64:
            raise QueryError(key, f"{show(value)} is not an integer ({vr})")
        return SingleValue(keyword, str(int(value)))
    if vr in DECIMAL_VRS:
        try:
            return SingleValue(keyword, decimal_key(vr, value))
        except ValueError as exc:
            raise QueryError(key, f"{show(value)} is not a decimal number ({vr})") from exc
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


def _combine_date_times(matches: dict[str, Match], separate: Mapping[str, object]) -> None:
    """Replace a date range and its time range by one :class:`DateTimeRange`
    (PS3.4 C.2.2.2.5.1), in place, at the position of the date key; keys in
    ``separate`` (extended query tags, matched on their own) stay apart."""
    for date_keyword, time_keyword in DATE_TIME_PAIRS.items():
        if date_keyword in separate or time_keyword in separate:
            continue
        date, time = matches.get(date_keyword), matches.get(time_keyword)
        if not isinstance(date, Range) or not isinstance(time, Range):
            continue
        low = None if date.low is None else (date.low, time.low or MIDNIGHT)
        high = None if date.high is None else (date.high, time.high or tm_high("23"))
        matches[date_keyword] = DateTimeRange(date_keyword, time_keyword, low, high)
        del matches[time_keyword]


def parse_qido(
    level: QueryLevel,
    params: Sequence[tuple[str, str]],
    *,
    known: Mapping[str, str],
    extended: Sequence[ExtendedTag] = (),
) -> Query:
    """Parse QIDO-RS query parameters (PS3.18 8.3.4 and 10.6.1) into a :class:`Query`.

    ``params`` are the decoded ``(name, value)`` pairs in request order; ``known`` maps
    each keyword searchable at ``level`` to its VR.  Attribute keys may be keywords or
    tags; ``includefield`` (repeatable, comma-separated, or ``all``),
    ``fuzzymatching``, ``limit`` and ``offset`` are the other parameters.  Raises
    :class:`QueryError` naming the key for an unknown or unsearchable attribute, a
    malformed value, or a key given twice.  ``extended`` are the tenant's extended
    query tags; those of ``level`` and above become matching keys too, by tag or (public
    ones) by keyword.
    """
    from dicomcloud.domain.extended_tags import searchable_at

    by_key = {tag.key: tag for tag in searchable_at(extended, level)}
    known = {**known, **{key: tag.vr for key, tag in by_key.items()}}
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
                if keyword is None and _TAG_RE.fullmatch(item) and int(item[3], 16) % 2:
                    keyword = item.upper()  # a private attribute, returned if stored
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
        if keyword is None and name.upper() in by_key:
            keyword = name.upper()  # a configured private tag
        if keyword is None and "." in name:
            path = resolve_path(name)  # an attribute in a sequence (PS3.4 C.2.2.2.6)
            keyword = ".".join(path) if path is not None else None
            if keyword is not None and keyword not in by_key:
                raise QueryError(
                    name, "sequence matching needs the path configured as an extended query tag"
                )
        if keyword is None:
            raise QueryError(name, "is not a known DICOM attribute or query parameter")
        vr = known.get(keyword)
        if vr is None:
            raise QueryError(name, f"{keyword} is not searchable at the {level.value} level")
        if keyword in matches:
            raise QueryError(name, f"{keyword} is given more than once")
        matches[keyword] = _parse_match(name, keyword, vr, value)

    _combine_date_times(matches, by_key)
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
        extended=tuple(by_key[k] for k in matches if k in by_key),
    )


_DECIMAL_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def decimal_key(vr: str, value: str | float) -> str:
    """The form in which a DS, FD or FL value is indexed and compared, so that equal
    numbers match however they were written: ``1.50``, ``1.5`` and ``15E-1`` are one
    DS value (PS3.5 6.2: a decimal string is a number, not its text).  FL values are
    rounded to single precision first, as the element stores them, so ``0.1`` finds
    the float32 0.1 that DICOM JSON spells ``0.10000000149011612``.  Raises
    ``ValueError`` for what is not a finite number."""
    if isinstance(value, str):
        text = value.strip(" ")
        if _DECIMAL_RE.fullmatch(text) is None:
            raise ValueError(f"not a decimal number: {value!r}")
        number = float(text)
    else:
        number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    if vr == "FL":
        number = struct.unpack("<f", struct.pack("<f", number))[0]
    if number == 0:
        return "0"  # -0 and 0 are one value
    return repr(number)
