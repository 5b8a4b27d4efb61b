"""Dates and times: VRs DA, TM and DT (PS3.5 6.2, table 6.2-1).

The parsers return the normalised strings the index stores (see
:mod:`dicomcloud.domain.records`), so that range matching is a string comparison:

* DA -> ``YYYYMMDD`` (only for a real calendar date);
* TM -> ``HHMMSS`` or ``HHMMSS.FFFFFF`` (partial values padded with zeros to ``HHMMSS``,
  a fraction padded with zeros to six digits);
* DT -> the value itself, validated component by component.

Every parser raises :class:`~dicomcloud.domain.values.InvalidValue` for a value that
does not conform.  The ``*_to_*`` helpers convert to :mod:`datetime` objects.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re

from dicomcloud.domain.values import InvalidValue, show

__all__ = [
    "da_to_date",
    "dt_to_datetime",
    "parse_da",
    "parse_dt",
    "parse_tm",
    "tm_to_time",
]

# [0-9] rather than \d: \d also matches non-ASCII digits.
_DA_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
_DA_LEGACY_RE = re.compile(r"([0-9]{4})\.([0-9]{2})\.([0-9]{2})")
_TM_RE = re.compile(r"([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:\.([0-9]{1,6}))?)?)?")
_TM_LEGACY_RE = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?")
_DT_RE = re.compile(
    r"([0-9]{4})"
    r"(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})(?:([0-9]{2})"
    r"(?:\.([0-9]{1,6}))?)?)?)?)?)?"
    r"(?:([+-])([0-9]{2})([0-9]{2}))?"
)
_PADDING = " \x00"


def _date_problem(year: int, month: int, day: int) -> str | None:
    if year < 1:
        return "has year 0000"
    if not 1 <= month <= 12:
        return f"has month {month:02d}"
    last = calendar.monthrange(year, month)[1]
    if not 1 <= day <= last:
        return f"has day {day:02d} (month {month:02d} of {year:04d} has {last} days)"
    return None


def parse_da(text: str) -> str:
    """Validate a Date (VR DA, PS3.5 6.2) and return it as ``YYYYMMDD``.

    Accepts ``YYYYMMDD`` and the ACR-NEMA form ``YYYY.MM.DD`` (PS3.5 6.2, note on DA),
    surrounded by optional space padding.  The date must exist in the Gregorian
    calendar (``20240230`` is rejected).
    """
    value = text.strip(_PADDING)
    match = _DA_RE.fullmatch(value) or _DA_LEGACY_RE.fullmatch(value)
    if match is None:
        raise InvalidValue(f"DA {show(text)} is not YYYYMMDD")
    year, month, day = (int(group) for group in match.groups())
    problem = _date_problem(year, month, day)
    if problem is not None:
        raise InvalidValue(f"DA {show(text)} {problem}")
    return f"{year:04d}{month:02d}{day:02d}"


def da_to_date(text: str) -> _dt.date:
    """Parse a DA value (see :func:`parse_da`) into a :class:`datetime.date`."""
    value = parse_da(text)
    return _dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))


def _time_parts(text: str) -> tuple[int, int, int, str | None]:
    value = text.strip(_PADDING)
    match = _TM_RE.fullmatch(value) or _TM_LEGACY_RE.fullmatch(value)
    if match is None:
        raise InvalidValue(f"TM {show(text)} is not HH[MM[SS[.FFFFFF]]]")
    hours, minutes, seconds, fraction = match.groups()
    hour, minute, second = int(hours), int(minutes or 0), int(seconds or 0)
    if hour > 23:
        raise InvalidValue(f"TM {show(text)} has hour {hour:02d}")
    if minute > 59:
        raise InvalidValue(f"TM {show(text)} has minute {minute:02d}")
    if second > 60:  # 60 is allowed for a leap second (PS3.5 6.2, TM)
        raise InvalidValue(f"TM {show(text)} has second {second:02d}")
    return hour, minute, second, fraction


def parse_tm(text: str) -> str:
    """Validate a Time (VR TM, PS3.5 6.2) and return it as ``HHMMSS[.FFFFFF]``.

    Accepts the partial forms ``HH``, ``HHMM``, ``HHMMSS`` and ``HHMMSS.F`` to
    ``HHMMSS.FFFFFF``, and the ACR-NEMA form ``HH:MM[:SS[.F...]]``.  Missing minutes and
    seconds become ``00``; a fraction is padded with zeros to six digits.  Seconds may
    be ``60`` (leap second).
    """
    hour, minute, second, fraction = _time_parts(text)
    normalised = f"{hour:02d}{minute:02d}{second:02d}"
    if fraction is not None:
        normalised += "." + fraction.ljust(6, "0")
    return normalised


def tm_to_time(text: str) -> _dt.time:
    """Parse a TM value (see :func:`parse_tm`) into a :class:`datetime.time`.

    A leap second (``SS`` = 60) becomes ``59.999999`` since :class:`datetime.time`
    cannot represent it.
    """
    hour, minute, second, fraction = _time_parts(text)
    micro = int(fraction.ljust(6, "0")) if fraction else 0
    if second == 60:
        second, micro = 59, 999_999
    return _dt.time(hour, minute, second, micro)


def _dt_match(text: str) -> re.Match[str]:
    value = text.strip(_PADDING)
    match = _DT_RE.fullmatch(value)
    if match is None:
        raise InvalidValue(f"DT {show(text)} is not YYYY[MM[DD[HH[MM[SS[.FFFFFF]]]]]][&ZZXX]")
    year, month, day, hour, minute, second, _f, sign, off_h, off_m = match.groups()
    problem = _date_problem(int(year), int(month or 1), int(day or 1))
    if problem is not None:
        raise InvalidValue(f"DT {show(text)} {problem}")
    if hour is not None and int(hour) > 23:
        raise InvalidValue(f"DT {show(text)} has hour {hour}")
    if minute is not None and int(minute) > 59:
        raise InvalidValue(f"DT {show(text)} has minute {minute}")
    if second is not None and int(second) > 60:
        raise InvalidValue(f"DT {show(text)} has second {second}")
    if sign is not None:
        offset = int(off_h) * 60 + int(off_m)
        if int(off_m) > 59 or (sign == "-" and offset > 12 * 60) or offset > 14 * 60:
            raise InvalidValue(
                f"DT {show(text)} has UTC offset {sign}{off_h}{off_m} "
                "(must be within -1200 and +1400)"
            )
    return match


def parse_dt(text: str) -> str:
    """Validate a Date Time (VR DT, PS3.5 6.2) and return it without padding.

    ``YYYY[MM[DD[HH[MM[SS[.F{1-6}]]]]]]`` optionally followed by a UTC offset
    ``&ZZXX`` (``&`` is ``+`` or ``-``, range -1200 to +1400).  Each present component
    is checked (``20240230`` is rejected).
    """
    _dt_match(text)
    return text.strip(_PADDING)


def dt_to_datetime(text: str) -> _dt.datetime:
    """Parse a DT value (see :func:`parse_dt`) into a :class:`datetime.datetime`.

    Missing components take their smallest value (month and day 1, time 00:00:00).
    With a UTC offset suffix the result is timezone-aware, otherwise naive.  A leap
    second becomes ``59.999999``.
    """
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = _dt_match(text).groups()
    sec = int(second or 0)
    micro = int(fraction.ljust(6, "0")) if fraction else 0
    if sec == 60:
        sec, micro = 59, 999_999
    tz: _dt.timezone | None = None
    if sign is not None:
        delta = _dt.timedelta(hours=int(off_h), minutes=int(off_m))
        tz = _dt.timezone(-delta if sign == "-" else delta)
    return _dt.datetime(
        int(year),
        int(month or 1),
        int(day or 1),
        int(hour or 0),
        int(minute or 0),
        sec,
        micro,
        tzinfo=tz,
    )
