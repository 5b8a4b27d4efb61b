"""Properties of QIDO-RS query parsing (dicomcloud.domain.query)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from dicomcloud.domain.query import QueryError, QueryLevel, Range, parse_qido

KNOWN = {
    "PatientName": "PN",
    "PatientID": "LO",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "StudyInstanceUID": "UI",
    "AcquisitionDateTime": "DT",
}
KEYS = st.sampled_from(
    [*KNOWN, "00100020", "00080020", "includefield", "limit", "offset", "fuzzymatching", "X"]
)


def _da(day: dt.date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"  # strftime does not pad year 999


dates = st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31))


@given(st.lists(st.tuples(KEYS, st.text(max_size=30)), max_size=6))
def test_only_query_error_escapes(params: list[tuple[str, str]]) -> None:
    error: QueryError | None = None
    try:
        parse_qido(QueryLevel.STUDY, params, known=KNOWN)
    except QueryError as exc:
        error = exc
    if error is not None:
        assert str(error).startswith(f"{error.key}: ")
        assert error.key in {name for name, _ in params}


@given(dates, dates, st.booleans(), st.booleans())
def test_date_range_bounds_round_trip(
    first: dt.date, second: dt.date, open_low: bool, open_high: bool
) -> None:
    low, high = sorted((first, second))
    low_text = "" if open_low else _da(low)
    high_text = "" if open_high else _da(high)
    if not low_text and not high_text:
        return
    query = parse_qido(QueryLevel.STUDY, [("StudyDate", f"{low_text}-{high_text}")], known=KNOWN)
    assert query.matches == (Range("StudyDate", low_text or None, high_text or None),)
