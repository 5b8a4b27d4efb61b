"""Media types and content negotiation (RFC 9110 8.3 and 12.5.1, PS3.18 8.7)."""

from __future__ import annotations

import pytest

from dicomcloud.dicomweb.media import MediaRange, parse_accept, parse_content_type


def test_content_type_with_quoted_parameters() -> None:
    media = parse_content_type(
        'Multipart/Related; type="application/dicom"; Boundary="a b;c"; start=x'
    )

    assert media.type == "multipart/related"
    assert media.params == {"type": "application/dicom", "boundary": "a b;c", "start": "x"}


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_content_type_is_empty(value: str | None) -> None:
    assert parse_content_type(value).type == ""


def test_accept_is_ordered_by_quality_then_specificity_then_position() -> None:
    ranges = parse_accept(
        "*/*;q=0.1, application/*;q=0.5, application/dicom+xml;q=0.5, "
        "application/dicom+json, application/json"
    )

    assert [r.type for r in ranges] == [
        "application/dicom+json",
        "application/json",
        "application/dicom+xml",
        "application/*",
        "*/*",
    ]
    assert [r.q for r in ranges] == [1.0, 1.0, 0.5, 0.5, 0.1]


def test_accept_drops_refused_and_malformed_ranges() -> None:
    ranges = parse_accept("application/dicom+xml;q=0, application/json;q=abc, image/png")

    assert [r.type for r in ranges] == ["image/png"]


def test_accept_keeps_quoted_commas_inside_parameters() -> None:
    (media,) = parse_accept('multipart/related; type="application/dicom"; x="a,b"')

    assert media.type == "multipart/related"
    assert media.params == {"type": "application/dicom", "x": "a,b"}


@pytest.mark.parametrize("value", [None, "", "   "])
def test_absent_accept_accepts_anything(value: str | None) -> None:
    (media,) = parse_accept(value)

    assert media.type == "*/*"
    assert media.matches("application/dicom+json")


def test_accept_of_only_empty_items_accepts_nothing() -> None:
    assert parse_accept(" , ") == []


@pytest.mark.parametrize(
    ("media_range", "media_type", "expected"),
    [
        ("*/*", "application/dicom", True),
        ("application/*", "application/dicom", True),
        ("application/*", "multipart/related", False),
        ("application/dicom", "application/dicom", True),
        ("application/dicom", "application/dicom+json", False),
    ],
)
def test_media_range_matches(media_range: str, media_type: str, expected: bool) -> None:
    assert MediaRange(media_range).matches(media_type) is expected
