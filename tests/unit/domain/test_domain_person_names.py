"""PN component groups (dicomcloud.domain.person_names)."""

from __future__ import annotations

import pytest

from dicomcloud.domain.person_names import (
    PersonName,
    PersonNameGroup,
    clip_person_name,
    parse_person_name,
)
from dicomcloud.domain.values import InvalidValue


def test_parse_three_groups() -> None:
    name = parse_person_name("Yamada^Tarou=山田^太郎=やまだ^たろう")
    assert name.alphabetic == PersonNameGroup("Yamada", "Tarou")
    assert name.ideographic == PersonNameGroup("山田", "太郎")
    assert name.phonetic == PersonNameGroup("やまだ", "たろう")
    assert name.format() == "Yamada^Tarou=山田^太郎=やまだ^たろう"


def test_parse_five_components() -> None:
    name = parse_person_name("Adams^John Robert Quincy^^Rev.^B.A. M.Div.")
    assert name.alphabetic == PersonNameGroup(
        family="Adams", given="John Robert Quincy", middle="", prefix="Rev.", suffix="B.A. M.Div."
    )
    assert name.ideographic.is_empty()
    assert str(name) == "Adams^John Robert Quincy^^Rev.^B.A. M.Div."


def test_empty_groups_and_trailing_separators_are_dropped_when_formatting() -> None:
    assert parse_person_name("Doe^John^^^").format() == "Doe^John"
    assert parse_person_name("=山田^太郎").format() == "=山田^太郎"
    assert parse_person_name("Doe==").format() == "Doe"
    assert parse_person_name("  Doe ^ John  ").format() == "Doe^John"
    assert parse_person_name("").format() == ""
    assert PersonName().format() == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=B=C=D", "has 4 component groups"),
        ("A^B^C^D^E^F", "with 6 components"),
        ("X" * 65, "component group of 65 characters"),
        ("Doe=" + "山" * 65, "component group of 65 characters"),
        ("A\\B", "has several values"),
    ],
)
def test_invalid_person_names(text: str, message: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_person_name(text)
    assert message in str(caught.value)


def test_group_of_exactly_64_characters_is_valid() -> None:
    assert parse_person_name("山" * 64).alphabetic.family == "山" * 64


def test_clip_person_name_per_group_and_value() -> None:
    long_ideographic = "山" * 70
    clipped, was_clipped = clip_person_name(f"Yamada^Tarou={long_ideographic}=やまだ")
    assert was_clipped
    assert clipped == f"Yamada^Tarou={'山' * 64}=やまだ"
    clipped, was_clipped = clip_person_name("A" * 65 + "\\" + "B" * 10)
    assert (clipped, was_clipped) == ("A" * 64 + "\\" + "B" * 10, True)
    assert clip_person_name("Doe^John=ドウ") == ("Doe^John=ドウ", False)
