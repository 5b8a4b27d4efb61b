"""QIDO-RS query parsing into the backend-neutral tree (dicomcloud.domain.query)."""

from __future__ import annotations

import pytest

from dicomcloud.domain.query import (
    Query,
    QueryError,
    QueryLevel,
    Range,
    SingleValue,
    UidList,
    Universal,
    Wildcard,
    parse_qido,
    resolve_keyword,
)

STUDY_KEYS = {
    "PatientName": "PN",
    "PatientID": "LO",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "AccessionNumber": "SH",
    "ModalitiesInStudy": "CS",
    "StudyInstanceUID": "UI",
    "StudyDescription": "LO",
    "ReferringPhysicianName": "PN",
}


def parse(*params: tuple[str, str], known: dict[str, str] | None = None) -> Query:
    return parse_qido(QueryLevel.STUDY, params, known=STUDY_KEYS if known is None else known)


def error(*params: tuple[str, str], known: dict[str, str] | None = None) -> str:
    with pytest.raises(QueryError) as info:
        parse(*params, known=known)
    return str(info.value)


def test_no_parameters_is_an_unrestricted_query() -> None:
    assert parse() == Query(QueryLevel.STUDY, (), (), False, None, 0, False)


# --- matching types (PS3.4 C.2.2.2) ---------------------------------------------------


def test_single_value() -> None:
    assert parse(("PatientID", "PAT-1")).matches == (SingleValue("PatientID", "PAT-1"),)


def test_single_value_keeps_value_exactly() -> None:
    query = parse(("PatientName", "Müller^Hans"), ("ModalitiesInStudy", "CT\\MR"))
    assert query.matches == (
        SingleValue("PatientName", "Müller^Hans"),
        SingleValue("ModalitiesInStudy", "CT\\MR"),
    )


def test_single_uid_is_single_value_without_padding() -> None:
    query = parse(("StudyInstanceUID", "1.2.840.10008\x00"))
    assert query.matches == (SingleValue("StudyInstanceUID", "1.2.840.10008"),)


@pytest.mark.parametrize("separator", ["\\", ","])
def test_uid_list(separator: str) -> None:
    query = parse(("StudyInstanceUID", separator.join(["1.2.3", "1.2.4", "2.25.7"])))
    assert query.matches == (UidList("StudyInstanceUID", ("1.2.3", "1.2.4", "2.25.7")),)


@pytest.mark.parametrize("value", ["1.2.03", "1.2\\", "1.2*", "abc"])
def test_invalid_uid_names_key_and_value(value: str) -> None:
    message = error(("StudyInstanceUID", value))
    assert message.startswith("StudyInstanceUID: ")
    assert "StudyInstanceUID" in message.partition(": ")[2]


@pytest.mark.parametrize("key", ["PatientName", "StudyDate", "StudyInstanceUID", "StudyTime"])
def test_universal(key: str) -> None:
    assert parse((key, "")).matches == (Universal(key),)


@pytest.mark.parametrize("pattern", ["Doe*", "D?e^J*", "*", "?", "*son"])
def test_wildcard(pattern: str) -> None:
    assert parse(("PatientName", pattern)).matches == (Wildcard("PatientName", pattern),)


def test_wildcard_on_other_string_vrs() -> None:
    query = parse(("AccessionNumber", "A12?"), ("StudyDescription", "*chest*"))
    assert query.matches == (
        Wildcard("AccessionNumber", "A12?"),
        Wildcard("StudyDescription", "*chest*"),
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [("StudyDate", "2024*"), ("StudyTime", "12?"), ("StudyInstanceUID", "1.2.*")],
)
def test_no_wildcard_for_da_tm_ui(key: str, value: str) -> None:
    message = error((key, value))
    assert message.startswith(f"{key}: ")
    assert repr(value) in message


def test_date_single_value_is_normalised() -> None:
    assert parse(("StudyDate", "2024.02.29")).matches == (SingleValue("StudyDate", "20240229"),)


def test_time_single_value_is_normalised() -> None:
    assert parse(("StudyTime", "1230")).matches == (SingleValue("StudyTime", "123000"),)


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("20240101-20241231", "20240101", "20241231"),
        ("20240101-", "20240101", None),
        ("-20241231", None, "20241231"),
        ("2024.01.01-2024.01.31", "20240101", "20240131"),
        ("20240301-20240301", "20240301", "20240301"),
    ],
)
def test_date_range(value: str, low: str | None, high: str | None) -> None:
    assert parse(("StudyDate", value)).matches == (Range("StudyDate", low, high),)


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        # an upper bound covers its precision: 17:30 ends at 17:30:59.999999
        ("08-1730", "080000", "173059.999999"),
        ("093000.5-", "093000.500000", None),
        ("-12", None, "125959.999999"),
        ("-120000.5", None, "120000.599999"),
    ],
)
def test_time_range(value: str, low: str | None, high: str | None) -> None:
    assert parse(("StudyTime", value)).matches == (Range("StudyTime", low, high),)


@pytest.mark.parametrize(
    "value",
    ["-", "20240230-", "2024-01-01", "20241231-20240101", "20240101--20240102", "x-20240101"],
)
def test_malformed_date_range(value: str) -> None:
    message = error(("StudyDate", value))
    assert message.startswith("StudyDate: ")
    assert repr(value) in message


def test_invalid_date_names_key_and_value() -> None:
    message = error(("StudyDate", "20240230"))
    assert message.startswith("StudyDate: ")
    assert "'20240230'" in message


def test_invalid_time_names_key_and_value() -> None:
    message = error(("StudyTime", "2500"))
    assert message.startswith("StudyTime: ")
    assert "'2500'" in message


def test_dt_range_and_negative_utc_offset() -> None:
    known = {"AcquisitionDateTime": "DT"}
    ranged = parse(("AcquisitionDateTime", "2023-2024"), known=known)
    low, high = "20230101000000.000000", "20241231235959.999999"  # bounds per precision
    assert ranged.matches == (Range("AcquisitionDateTime", low, high),)
    single = parse(("AcquisitionDateTime", "20240101120000-0500"), known=known)
    assert single.matches == (SingleValue("AcquisitionDateTime", "20240101120000-0500"),)
    open_low = parse(("AcquisitionDateTime", "-20240101120000"), known=known)
    high = "20240101120000.999999"
    assert open_low.matches == (Range("AcquisitionDateTime", None, high),)


# --- keys: keyword or tag -------------------------------------------------------------


@pytest.mark.parametrize("tag", ["00100020"])
def test_tag_key_resolves_to_keyword(tag: str) -> None:
    assert parse((tag, "PAT-1")).matches == (SingleValue("PatientID", "PAT-1"),)


def test_tag_key_lower_case_hex() -> None:
    # (0020,000D) StudyInstanceUID
    assert parse(("0020000d", "1.2.3")).matches == (SingleValue("StudyInstanceUID", "1.2.3"),)


def test_tag_key_range_uses_keyword() -> None:
    assert parse(("00080020", "20240101-")).matches == (Range("StudyDate", "20240101", None),)


def test_resolve_keyword() -> None:
    assert resolve_keyword("PatientID") == "PatientID"
    assert resolve_keyword("00100010") == "PatientName"
    assert resolve_keyword("PatientId") is None
    assert resolve_keyword("00091010") is None  # private: not in the dictionary
    assert resolve_keyword("0010002") is None
    assert resolve_keyword("") is None


@pytest.mark.parametrize("key", ["PatientId", "NoSuchThing", "0010002", "00091010", "_", ""])
def test_unknown_key_is_named(key: str) -> None:
    message = error((key, "x"))
    assert message == f"{key}: is not a known DICOM attribute or query parameter"


@pytest.mark.parametrize("key", ["SeriesInstanceUID", "0020000E", "0020000e"])
def test_key_not_searchable_at_level(key: str) -> None:
    message = error((key, "1.2.3"))
    assert message == f"{key}: SeriesInstanceUID is not searchable at the STUDY level"


@pytest.mark.parametrize(
    "params",
    [
        (("PatientID", "a"), ("PatientID", "b")),
        (("PatientID", "a"), ("00100020", "a")),
        (("StudyDate", ""), ("StudyDate", "20240101")),
    ],
)
def test_repeated_key(params: tuple[tuple[str, str], ...]) -> None:
    second = params[1][0]
    assert "more than once" in error(*params)
    assert error(*params).startswith(f"{second}: ")


def test_matches_keep_request_order() -> None:
    query = parse(("StudyDate", "20240101"), ("PatientID", "1"), ("PatientName", "A*"))
    assert [m.keyword for m in query.matches] == ["StudyDate", "PatientID", "PatientName"]


# --- includefield, fuzzymatching, limit, offset ---------------------------------------


def test_includefield_keywords_and_tags_repeated_and_comma_separated() -> None:
    query = parse(
        ("includefield", "00081030,NumberOfStudyRelatedSeries"),
        ("includefield", "00100030"),
        ("includefield", "StudyDescription"),  # duplicate of 00081030, kept once
    )
    assert query.return_keys == (
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "PatientBirthDate",
    )
    assert query.include_all is False
    assert query.matches == ()


def test_includefield_all() -> None:
    query = parse(("includefield", "all"), ("PatientID", "1"))
    assert query.include_all is True
    assert query.return_keys == ()
    assert query.matches == (SingleValue("PatientID", "1"),)


@pytest.mark.parametrize("value", ["Nope", "PatientID,,StudyDate", "", "ALL"])
def test_includefield_unknown_names_parameter(value: str) -> None:
    assert error(("includefield", value)).startswith("includefield: ")


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False)])
def test_fuzzymatching(value: str, expected: bool) -> None:
    assert parse(("fuzzymatching", value)).fuzzy is expected


def test_fuzzymatching_default_false() -> None:
    assert parse(("PatientName", "a*")).fuzzy is False


@pytest.mark.parametrize("value", ["True", "1", "yes", ""])
def test_malformed_fuzzymatching(value: str) -> None:
    assert error(("fuzzymatching", value)).startswith("fuzzymatching: ")


def test_limit_and_offset() -> None:
    query = parse(("limit", "25"), ("offset", "50"))
    assert (query.limit, query.offset) == (25, 50)
    assert parse(("offset", "0")).offset == 0
    assert parse().limit is None


@pytest.mark.parametrize("value", ["0", "-1", "+5", " 5", "five", "", "2.5", "١٢"])
def test_malformed_limit(value: str) -> None:
    message = error(("limit", value))
    assert message == f"limit: {value!r} is not a positive integer"


@pytest.mark.parametrize("value", ["-1", "+0", "x", "", "1e3"])
def test_malformed_offset(value: str) -> None:
    message = error(("offset", value))
    assert message == f"offset: {value!r} is not an integer >= 0"


@pytest.mark.parametrize("name", ["limit", "offset", "fuzzymatching"])
def test_repeated_option(name: str) -> None:
    value = "true" if name == "fuzzymatching" else "1"
    assert error((name, value), (name, value)) == f"{name}: is given more than once"


def test_query_is_frozen() -> None:
    query = parse(("PatientID", "1"))
    with pytest.raises(AttributeError):
        query.limit = 5  # type: ignore[misc]


def test_query_error_is_value_error_with_key() -> None:
    with pytest.raises(ValueError, match="StudyDate") as info:
        parse(("StudyDate", "nope"))
    assert isinstance(info.value, QueryError)
    assert info.value.key == "StudyDate"
