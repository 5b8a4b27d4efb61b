"""Storage keys: built only from validated values, never escaping the root."""

from __future__ import annotations

import pytest

from dicomcloud.storage.keys import check_key, instance_key

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


def test_layout_is_tenant_study_series_sop() -> None:
    assert instance_key("default", STUDY, SERIES, SOP) == "default/1.2.3/1.2.3.4/1.2.3.4.5.dcm"


def test_a_version_keeps_a_replacement_apart() -> None:
    key = instance_key("t-1", STUDY, SERIES, SOP, "0a1b2c")

    assert key == "t-1/1.2.3/1.2.3.4/1.2.3.4.5.0a1b2c.dcm"
    assert key != instance_key("t-1", STUDY, SERIES, SOP)


@pytest.mark.parametrize(
    ("tenant", "study", "series", "sop", "version"),
    [
        ("../x", STUDY, SERIES, SOP, ""),
        ("", STUDY, SERIES, SOP, ""),
        ("_t", STUDY, SERIES, SOP, ""),
        ("t/u", STUDY, SERIES, SOP, ""),
        ("t", "../..", SERIES, SOP, ""),
        ("t", STUDY, "1.2/3", SOP, ""),
        ("t", STUDY, SERIES, "1." + "2" * 63, ""),
        ("t", STUDY, SERIES, "", ""),
        ("t", STUDY, SERIES, "1..2", ""),
        ("t", STUDY, SERIES, SOP, "../x"),
        ("t", STUDY, SERIES, SOP, "ABC"),
    ],
)
def test_invalid_parts_are_refused(
    tenant: str, study: str, series: str, sop: str, version: str
) -> None:
    with pytest.raises(ValueError, match="invalid"):
        instance_key(tenant, study, series, sop, version)


def test_check_key_splits_a_valid_key() -> None:
    assert check_key("default/1.2/1.2.3/1.2.3.4.dcm") == ["default", "1.2", "1.2.3", "1.2.3.4.dcm"]


@pytest.mark.parametrize(
    "key",
    ["../etc/passwd", "a/../b", "/abs/path", "a//b", "a/./b", ".hidden/x", "a/b/", "a\\b", ""],
)
def test_check_key_refuses_escapes(key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        check_key(key)
