"""Date and time range matching (PS3.4 C.2.2.2.5) on every backend: TM bounds over
their whole precision, ranges across midnight, open ends, and a date range given with
its time range matched as one date-time range (PS3.4 C.2.2.2.5.1)."""

from __future__ import annotations

import pytest

from backends import IndexUnderTest as Index
from dicomcloud.domain.query import (
    DateTimeRange,
    QueryError,
    QueryLevel,
    Range,
    parse_qido,
)
from dicomcloud.services.query import SERIES_SEARCH_KEYS, STUDY_SEARCH_KEYS

from .records import STUDY, write

# name: (StudyDate, StudyTime)
STUDIES = {
    "E": ("20240101", "230000"),
    "F": ("20240102", "010000"),
    "G": ("20240102", "120000.500000"),
    "H": ("20240103", None),
    "I": (None, "100000"),
}


async def seed(index: Index) -> None:
    writes = []
    for name, (date, time) in STUDIES.items():
        study = f"{STUDY}.{ord(name)}"
        writes.append(
            write(
                f"{study}.1.1",
                study=study,
                series=f"{study}.1",
                study_attrs={"study_date": date, "study_time": time},
                series_attrs={"series_date": date, "series_time": time},
            )
        )
    await index.store_instances(writes)


async def found(index: Index, *params: tuple[str, str]) -> set[str]:
    query = parse_qido(QueryLevel.STUDY, params, known=STUDY_SEARCH_KEYS)
    names = {f"{STUDY}.{ord(n)}": n for n in STUDIES}
    return {names[r.study.study_instance_uid] for r in await index.search_studies("t1", query)}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ((("StudyTime", "12-12"),), {"G"}),  # 12:00:00 to 12:59:59.999999
        ((("StudyTime", "-1200"),), {"F", "G", "I"}),
        ((("StudyTime", "-120000"),), {"F", "G", "I"}),
        ((("StudyTime", "-115959.999"),), {"F", "I"}),
        ((("StudyTime", "120000.5-120000.5"),), {"G"}),
        ((("StudyTime", "120000.6-"),), {"E"}),
        ((("StudyTime", "100000.000-100000"),), {"I"}),
        ((("StudyTime", "2300-0100"),), {"E", "F"}),  # across midnight
        ((("StudyDate", "20240102-"),), {"F", "G", "H"}),
        # combined: from 2024-01-01 22:00 to 2024-01-02 01:00:59.999999
        ((("StudyDate", "20240101-20240102"), ("StudyTime", "2200-0100")), {"E", "F"}),
        ((("StudyTime", "2200-0100"), ("StudyDate", "20240101-20240102")), {"E", "F"}),
        ((("StudyDate", "20240102-"), ("StudyTime", "110000-")), {"G", "H"}),
        ((("StudyDate", "-20240102"), ("StudyTime", "-01")), {"E", "F"}),
        ((("StudyDate", "20240101-20240101"), ("StudyTime", "2300-")), {"E"}),
        ((("StudyDate", "20240103-"), ("StudyTime", "000000-")), {"H"}),  # no time: midnight
        # a single date with a time range is not combined: both must match
        ((("StudyDate", "20240102"), ("StudyTime", "11-")), {"G"}),
    ],
)
async def test_ranges(
    index: Index, params: tuple[tuple[str, str], ...], expected: set[str]
) -> None:
    await seed(index)

    assert await found(index, *params) == expected


async def test_series_date_and_time_combine_too(index: Index) -> None:
    await seed(index)
    params = [("SeriesDate", "20240101-20240102"), ("SeriesTime", "2200-0100")]
    query = parse_qido(QueryLevel.SERIES, params, known=SERIES_SEARCH_KEYS)

    results = await index.search_series("t1", query)

    assert {r.series.series_date for r in results} == {"20240101", "20240102"}
    assert {r.series.series_time for r in results} == {"230000", "010000"}


def test_the_query_tree_of_a_combined_range() -> None:
    params = [("StudyDate", "20240101-20240315"), ("StudyTime", "0830-")]
    query = parse_qido(QueryLevel.STUDY, params, known=STUDY_SEARCH_KEYS)

    low, high = ("20240101", "083000"), ("20240315", "235959.999999")
    assert query.matches == (DateTimeRange("StudyDate", "StudyTime", low, high),)


def test_bounds_keep_their_precision() -> None:
    params = [("StudyTime", "08-0930")]
    (node,) = parse_qido(QueryLevel.STUDY, params, known=STUDY_SEARCH_KEYS).matches

    assert node == Range("StudyTime", "080000", "093059.999999")


@pytest.mark.parametrize(
    ("key", "value"),
    [("StudyDate", "20240301-20240201"), ("StudyTime", "2500-"), ("StudyTime", "1200-2400")],
)
def test_bad_ranges_name_the_key(key: str, value: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_qido(QueryLevel.STUDY, [(key, value)], known=STUDY_SEARCH_KEYS)

    assert caught.value.key == key


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2024-202402", "20240101000000.000000", "20240229235959.999999"),
        ("20230215-", "20230215000000.000000", None),
        ("-2023021510", None, "20230215105959.999999"),
        ("20240101083000.5-20240101", "20240101083000.500000", "20240101235959.999999"),
    ],
)
def test_dt_range_bounds_cover_their_precision(
    value: str, low: str | None, high: str | None
) -> None:
    known = {"AcquisitionDateTime": "DT"}
    (node,) = parse_qido(QueryLevel.IMAGE, [("AcquisitionDateTime", value)], known=known).matches

    assert node == Range("AcquisitionDateTime", low, high)
