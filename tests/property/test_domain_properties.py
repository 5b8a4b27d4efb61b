"""Property tests of the domain value types and of extraction robustness."""

from __future__ import annotations

import datetime as dt
import re
import struct
import warnings
from io import BytesIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.filereader import read_dataset

from dicomcloud.domain.dates import da_to_date, parse_da, parse_tm, tm_to_time
from dicomcloud.domain.extraction import extract_instance
from dicomcloud.domain.person_names import PersonName, PersonNameGroup, parse_person_name
from dicomcloud.domain.values import InvalidValue, is_valid_uid, parse_tenant_id, parse_uid
from dicomcloud.domain.vr import MAX_LENGTHS, MULTI_VALUED_VRS, clip
from dicomcloud.errors import CannotUnderstand

_component = st.one_of(
    st.just("0"),
    st.from_regex(r"[1-9][0-9]{0,38}", fullmatch=True),
)
valid_uids = (
    st.lists(_component, min_size=1, max_size=20).map(".".join).filter(lambda uid: len(uid) <= 64)
)


@given(valid_uids, st.sampled_from(["", "\x00", " "]))
def test_parse_uid_accepts_every_valid_uid(uid: str, padding: str) -> None:
    assert parse_uid(uid + padding) == uid
    assert is_valid_uid(uid + padding)


@given(st.text(), st.text(min_size=1).filter(lambda s: bool(set(s) - set("0123456789."))))
def test_parse_uid_rejects_any_foreign_character(prefix: str, foreign: str) -> None:
    # the foreign part is followed by a digit, so it is never trailing padding
    text = prefix + foreign + "1"
    with pytest.raises(InvalidValue):
        parse_uid(text)


@given(st.text(max_size=80))
def test_accepted_uids_are_safe_path_components(text: str) -> None:
    try:
        uid = parse_uid(text)
    except InvalidValue:
        return
    assert re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*", uid, flags=re.ASCII)
    assert len(uid) <= 64
    assert text.startswith(uid)


@given(st.text(max_size=80))
def test_accepted_tenant_ids_are_safe_path_components(text: str) -> None:
    try:
        tenant = parse_tenant_id(text)
    except InvalidValue:
        return
    assert tenant == text
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", tenant, flags=re.ASCII)


_text_with_separators = st.text(
    alphabet=st.sampled_from("ab 中文字\\=^é\U0001f600"), max_size=400
) | st.text(max_size=200)


@given(_text_with_separators, st.sampled_from(sorted(MAX_LENGTHS)))
def test_clip_never_exceeds_the_limit_and_is_a_prefix(value: str, vr: str) -> None:
    clipped, was_clipped = clip(value, vr)
    limit = MAX_LENGTHS[vr]
    if vr == "PN" or vr in MULTI_VALUED_VRS:
        originals, results = value.split("\\"), clipped.split("\\")
    else:
        originals, results = [value], [clipped]
    assert len(results) == len(originals)
    for original, result in zip(originals, results, strict=True):
        assert original.startswith(result)
        if vr == "PN":
            assert all(len(group) <= 64 for group in result.split("="))
            assert len(result.split("=")) == len(original.split("="))
        elif limit is not None:
            assert len(result) <= limit
    assert was_clipped == (clipped != value)


@given(st.dates(min_value=dt.date(1, 1, 1)))
def test_da_round_trip(date: dt.date) -> None:
    text = f"{date.year:04d}{date.month:02d}{date.day:02d}"
    assert parse_da(text) == text
    assert parse_da(f"{text[:4]}.{text[4:6]}.{text[6:]}") == text
    assert da_to_date(text) == date


@given(st.times())
def test_tm_round_trip(time: dt.time) -> None:
    text = f"{time.hour:02d}{time.minute:02d}{time.second:02d}.{time.microsecond:06d}"
    assert parse_tm(text) == text
    assert tm_to_time(text) == time
    assert parse_tm(text[:2]) == text[:2] + "0000"


@given(st.dates(min_value=dt.date(1, 1, 1)), st.dates(min_value=dt.date(1, 1, 1)))
def test_normalised_dates_sort_like_dates(a: dt.date, b: dt.date) -> None:
    da = parse_da(f"{a.year:04d}.{a.month:02d}.{a.day:02d}")
    db = parse_da(f"{b.year:04d}{b.month:02d}{b.day:02d}")
    assert (da < db) == (a < b)


_name_part = st.text(alphabet=st.sampled_from("abcXYZ山田たろう.- "), max_size=8).map(
    lambda s: s.strip(" ")
)
_groups = st.builds(PersonNameGroup, _name_part, _name_part, _name_part, _name_part, _name_part)


@given(_groups, _groups, _groups)
def test_person_name_format_parse_round_trip(
    a: PersonNameGroup, i: PersonNameGroup, p: PersonNameGroup
) -> None:
    name = PersonName(a, i, p)
    assert parse_person_name(name.format()) == name


# --- extraction never raises anything but CannotUnderstand ---------------------------

_UIDS = [
    (0x00080016, b"1.2.840.10008.5.1.4.1.1.2"),
    (0x00080018, b"1.2.3.4.5.6"),
    (0x0020000D, b"1.2.3.4"),
    (0x0020000E, b"1.2.3.4.5"),
]
_DESCRIPTIVE = [
    (0x00100010, "PN"),
    (0x00100020, "LO"),
    (0x00081030, "LO"),
    (0x00080020, "DA"),
    (0x00080030, "TM"),
    (0x00101020, "DS"),
    (0x00200013, "IS"),
    (0x00280010, "US"),
    (0x00280010, "UN"),
    (0x00080008, "CS"),
    (0x00200037, "DS"),
    (0x00101010, "AS"),
    (0x00081030, "OB"),
    (0x00080020, "UT"),
]
_CHARSETS = [b"", b"ISO_IR 100", b"ISO_IR 192", b"GB18030", b"\\ISO 2022 IR 87", b"XX"]


def _encode(elements: dict[int, tuple[str, bytes]]) -> bytes:
    out = bytearray()
    for tag, (vr, value) in sorted(elements.items()):
        if len(value) % 2:
            value += b" "
        out += struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
        if vr in {"OB", "UN", "UT"}:
            out += b"\x00\x00" + struct.pack("<I", len(value))
        else:
            out += struct.pack("<H", len(value))
        out += value
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_CHARSETS),
    st.lists(st.tuples(st.sampled_from(_DESCRIPTIVE), st.binary(max_size=300)), max_size=8),
    st.one_of(st.none(), st.binary(max_size=70)),
)
def test_extraction_never_crashes(
    charset: bytes, values: list[tuple[tuple[int, str], bytes]], bad_uid: bytes | None
) -> None:
    elements = {tag: ("UI", uid) for tag, uid in _UIDS}
    elements[0x00080005] = ("CS", charset)
    for (tag, vr), value in values:
        elements[tag] = (vr, value)
    if bad_uid is not None:
        elements[0x00080018] = ("UI", bad_uid)
    with warnings.catch_warnings():  # pydicom's reader warns about unknown charsets
        warnings.simplefilter("ignore")
        ds = read_dataset(BytesIO(_encode(elements)), is_implicit_VR=False, is_little_endian=True)
    try:
        result = extract_instance(ds, tenant_id="t", transfer_syntax_uid="1.2.840.10008.1.2.1")
    except CannotUnderstand as exc:
        rejection = exc.reason
    else:
        rejection = None
    if rejection is not None:
        assert bad_uid is not None
        assert rejection.startswith("SOPInstanceUID ")
        return
    assert is_valid_uid(result.instance.sop_instance_uid)
    description = result.study.study_description
    assert description is None or len(description) <= 64
