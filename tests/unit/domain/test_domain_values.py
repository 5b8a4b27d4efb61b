"""UIDs and tenant ids (dicomcloud.domain.values)."""

from __future__ import annotations

import re

import pytest

from dicomcloud.domain.values import (
    InvalidValue,
    is_valid_tenant_id,
    is_valid_uid,
    parse_tenant_id,
    parse_uid,
)

# --- UIDs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uid",
    [
        "0",
        "1.2",
        "1.2.840.10008.1.2.1",
        "2.25.329800735698586629295641978511506172918",
        "1.0.0.0",
        "1." + "2" * 62,  # exactly 64
    ],
)
def test_valid_uids_are_returned_unchanged(uid: str) -> None:
    assert parse_uid(uid) == uid
    assert is_valid_uid(uid)


@pytest.mark.parametrize(("padded", "uid"), [("1.2.3\x00", "1.2.3"), ("1.2.3 ", "1.2.3")])
def test_trailing_padding_is_removed(padded: str, uid: str) -> None:
    assert parse_uid(padded) == uid
    assert is_valid_uid(padded)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "SOPInstanceUID '' is empty"),
        ("\x00", "SOPInstanceUID '\\x00' is empty"),
        ("1..2", "SOPInstanceUID '1..2' has an empty component"),
        (".1.2", "SOPInstanceUID '.1.2' has an empty component"),
        ("1.2.", "SOPInstanceUID '1.2.' has an empty component"),
        ("1.02", "SOPInstanceUID '1.02' has a component with a leading zero ('02'"),
        ("00", "SOPInstanceUID '00' has a component with a leading zero ('00'"),
        ("1." + "2" * 63, "is 65 characters long (at most 64"),
        ("1.2a", "contains the character 'a'"),
        ("../../x", "contains the character '/'"),
        ("1.2/3", "contains the character '/'"),
        ("1.2\\3", "contains the character '\\\\'"),
        ("1.2\x00.3", "contains the character '\\x00'"),
        ("1\x002", "contains the character '\\x00'"),
        (" 1.2", "contains the character ' '"),
        ("1.2\n", "contains the character '\\n'"),
        ("1.\u0662", "contains the character '\u0662'"),  # Arabic-Indic digit two
        ("\u0661.\u0662", "contains the character '\u0661'"),
        ("1.\uff12", "contains the character '\uff12'"),  # fullwidth digit two
        ("1.²", "contains the character '²'"),
        ("-1.2", "contains the character '-'"),
        ("+1", "contains the character '+'"),
    ],
)
def test_invalid_uids_are_rejected_with_precise_message(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_uid(text, name="SOPInstanceUID")
    assert message in str(caught.value)
    assert str(caught.value).startswith("SOPInstanceUID ")
    assert not is_valid_uid(text)


def test_unicode_digits_that_isdigit_accepts_are_rejected() -> None:
    arabic_indic = "\u0661\u0662\u0663"
    assert arabic_indic.isdigit()  # the trap the explicit check avoids
    with pytest.raises(InvalidValue):
        parse_uid(f"1.{arabic_indic}")


def test_invalid_value_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=re.escape("UID '1..2' has an empty component")):
        parse_uid("1..2")


def test_long_value_is_shortened_in_message() -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_uid("9" * 1000, name="StudyInstanceUID")
    assert len(str(caught.value)) < 250
    assert "(1000 characters)" in str(caught.value)


# --- tenant ids -------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["a", "A", "0", "hospital-1", "north_wing", "x" * 64, "Ab9_-"])
def test_valid_tenant_ids(tenant: str) -> None:
    assert parse_tenant_id(tenant) == tenant
    assert is_valid_tenant_id(tenant)


@pytest.mark.parametrize(
    ("tenant", "message"),
    [
        ("", "tenant id is empty"),
        ("x" * 65, "is 65 characters long"),
        ("-abc", "starts with '-'"),
        ("_abc", "starts with '_'"),
        ("a/b", "contains characters other than"),
        ("../etc", "contains characters other than"),
        ("a.b", "contains characters other than"),
        ("a b", "contains characters other than"),
        ("abc\n", "contains characters other than"),
        ("t\u0661", "contains characters other than"),
        ("é", "contains characters other than"),
        ("K\u212a", "contains characters other than"),  # Kelvin sign
    ],
)
def test_invalid_tenant_ids(tenant: str, message: str) -> None:
    with pytest.raises(InvalidValue, match="tenant id") as caught:
        parse_tenant_id(tenant)
    assert message in str(caught.value)
    assert not is_valid_tenant_id(tenant)
