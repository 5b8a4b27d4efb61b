"""VR length limits and clipping (dicomcloud.domain.vr)."""

from __future__ import annotations

import pytest

from dicomcloud.domain.values import InvalidValue
from dicomcloud.domain.vr import MAX_LENGTHS, clip, max_length


@pytest.mark.parametrize(
    ("vr", "limit"),
    [
        ("AE", 16),
        ("AS", 4),
        ("CS", 16),
        ("DA", 8),
        ("DS", 16),
        ("DT", 26),
        ("IS", 12),
        ("LO", 64),
        ("LT", 10240),
        ("PN", 64),
        ("SH", 16),
        ("ST", 1024),
        ("TM", 14),
        ("UI", 64),
        ("UC", None),
        ("UR", None),
        ("UT", None),
    ],
)
def test_ps3_5_limits(vr: str, limit: int | None) -> None:
    assert max_length(vr) == limit
    assert MAX_LENGTHS[vr] == limit


@pytest.mark.parametrize("vr", ["OB", "US", "SQ", "XX", ""])
def test_non_string_vr_is_rejected(vr: str) -> None:
    with pytest.raises(InvalidValue, match="is not a string VR"):
        max_length(vr)
    with pytest.raises(InvalidValue):
        clip("x", vr)


def test_long_chinese_text_is_clipped_by_characters() -> None:
    text = "胸部CT平扫" * 60  # 360 characters, 3 bytes each in UTF-8
    clipped, was_clipped = clip(text, "LO")
    assert was_clipped
    assert len(clipped) == 64
    assert text.startswith(clipped)
    clipped.encode("utf-8")  # whole characters only


def test_value_at_the_limit_is_untouched() -> None:
    assert clip("中" * 64, "LO") == ("中" * 64, False)
    assert clip("A" * 16, "SH") == ("A" * 16, False)
    assert clip("A" * 17, "SH") == ("A" * 16, True)


def test_multi_valued_strings_are_clipped_value_by_value() -> None:
    value = "ORIGINAL\\PRIMARY\\" + "X" * 20
    assert clip(value, "CS") == ("ORIGINAL\\PRIMARY\\" + "X" * 16, True)


def test_single_valued_text_vrs_keep_backslashes() -> None:
    text = "a\\" * 600  # 1200 characters, backslash is text in ST
    clipped, was_clipped = clip(text, "ST")
    assert was_clipped
    assert clipped == text[:1024]


def test_unlimited_vrs_are_never_clipped() -> None:
    text = "x" * 100_000
    assert clip(text, "UT") == (text, False)
    assert clip(text, "UC") == (text, False)


def test_trailing_space_left_by_the_cut_is_removed() -> None:
    assert clip("ABCDEFGHIJKLMNO PQR", "SH") == ("ABCDEFGHIJKLMNO", True)


def test_pn_is_clipped_per_component_group() -> None:
    value = "Doe^John=" + "山" * 70
    assert clip(value, "PN") == ("Doe^John=" + "山" * 64, True)
