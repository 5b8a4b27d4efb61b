"""DA / TM / DT parsing (dicomcloud.domain.dates)."""

from __future__ import annotations

import datetime as dt

import pytest

from dicomcloud.domain.dates import (
    da_to_date,
    dt_to_datetime,
    parse_da,
    parse_dt,
    parse_tm,
    tm_to_time,
)
from dicomcloud.domain.values import InvalidValue


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240229", "20240229"),
        ("19000101", "19000101"),
        ("20241231 ", "20241231"),
        (" 20241231", "20241231"),
        ("2024.02.29", "20240229"),  # ACR-NEMA form
    ],
)
def test_parse_da(text: str, expected: str) -> None:
    assert parse_da(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2024-13-45", "is not YYYYMMDD"),
        ("20241345", "has month 13"),
        ("20230229", "has day 29 (month 02 of 2023 has 28 days)"),
        ("20240431", "has day 31"),
        ("20240100", "has day 00"),
        ("00000101", "has year 0000"),
        ("2024010", "is not YYYYMMDD"),
        ("202401011", "is not YYYYMMDD"),
        ("", "is not YYYYMMDD"),
        ("2024\u0660101", "is not YYYYMMDD"),  # Arabic-Indic zero
        ("2024.1.01", "is not YYYYMMDD"),
        ("20240101-20240102", "is not YYYYMMDD"),  # a range is a query, not a value
    ],
)
def test_parse_da_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_da(text)
    assert message in str(caught.value)
    assert str(caught.value).startswith("DA ")


def test_da_to_date() -> None:
    assert da_to_date("2024.02.29") == dt.date(2024, 2, 29)
    with pytest.raises(InvalidValue):
        da_to_date("20240230")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("14", "140000"),
        ("1430", "143000"),
        ("143000", "143000"),
        ("143000.123456", "143000.123456"),
        ("143000.1", "143000.100000"),
        ("235960", "235960"),  # leap second
        ("000000", "000000"),
        ("14:30:00", "143000"),  # ACR-NEMA form
        ("14:30", "143000"),
        ("14:30:00.5", "143000.500000"),
        ("1430 ", "143000"),
    ],
)
def test_parse_tm(text: str, expected: str) -> None:
    assert parse_tm(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("24", "has hour 24"),
        ("1260", "has minute 60"),
        ("123061", "has second 61"),
        ("1", "is not HH"),
        ("143", "is not HH"),
        ("143000.", "is not HH"),
        ("143000.1234567", "is not HH"),
        ("14.5", "is not HH"),
        ("ab", "is not HH"),
        ("", "is not HH"),
        ("14:3", "is not HH"),
        ("1430:00", "is not HH"),
    ],
)
def test_parse_tm_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_tm(text)
    assert message in str(caught.value)


def test_tm_to_time() -> None:
    assert tm_to_time("14") == dt.time(14, 0)
    assert tm_to_time("143001.25") == dt.time(14, 30, 1, 250000)
    assert tm_to_time("235960") == dt.time(23, 59, 59, 999999)
    with pytest.raises(InvalidValue):
        tm_to_time("25")


@pytest.mark.parametrize(
    "text",
    [
        "2024",
        "202402",
        "20240229",
        "2024022913",
        "202402291330",
        "20240229133059",
        "20240229133059.123456",
        "20240229133059.1+0100",
        "2024-0500",
        "20240229+1400",
        "20240229-1200",
    ],
)
def test_parse_dt_accepts_partial_values(text: str) -> None:
    assert parse_dt(text + " ") == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("202", "is not YYYY"),
        ("202413", "has month 13"),
        ("20230229", "has day 29"),
        ("2024022924", "has hour 24"),
        ("202402291360", "has minute 60"),
        ("20240229130061", "has second 61"),
        ("20240229+1401", "UTC offset +1401"),
        ("20240229-1201", "UTC offset -1201"),
        ("20240229+0160", "UTC offset +0160"),
        ("20240229+01", "is not YYYY"),
        ("2024022913.5", "is not YYYY"),
    ],
)
def test_parse_dt_rejects(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_dt(text)
    assert message in str(caught.value)


def test_dt_to_datetime() -> None:
    assert dt_to_datetime("2024") == dt.datetime(2024, 1, 1)
    assert dt_to_datetime("20240229133059.5") == dt.datetime(2024, 2, 29, 13, 30, 59, 500000)
    aware = dt_to_datetime("202402291330+0100")
    assert aware == dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.UTC)
    assert aware.utcoffset() == dt.timedelta(hours=1)
    assert dt_to_datetime("2024-0530").utcoffset() == -dt.timedelta(hours=5, minutes=30)
    assert dt_to_datetime("20241231235960").second == 59
