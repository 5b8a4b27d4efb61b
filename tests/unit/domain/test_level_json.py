"""The per-level DICOM JSON kept for QIDO-RS includefield (PS3.18 F.2) equals pydicom's
own JSON of the same attributes, for pydicom's test files in many VRs, byte orders and
character sets; bulk data and File Meta are left out."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file

from dicomcloud.domain.charsets import python_encodings
from dicomcloud.domain.level_json import LEVEL_TAGS, MAX_VALUE_BYTES, level_json

FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "rtplan.dcm",
    "test-SR.dcm",
    "waveform_ecg.dcm",
    "JPEG2000.dcm",
    "liver_1frame.dcm",
]


def _paths() -> list[Path]:
    found = [Path(str(get_testdata_file(name))) for name in FILES]
    return found + sorted(Path(p) for p in get_charset_files("chr*.dcm"))


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def _ours(path: Path) -> dict[str, dict[str, Any]]:
    ds = _read(path)
    terms = ds.get("SpecificCharacterSet")
    encodings, _ = python_encodings(
        [] if not terms else [terms] if isinstance(terms, str) else list(terms)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        texts = level_json(ds, encodings)
    return {level: json.loads(text) if text else {} for level, text in texts.items()}


@pytest.mark.parametrize("path", _paths(), ids=lambda p: p.name)
def test_equals_pydicoms_json_without_bulk_data(path: Path) -> None:
    levels = _ours(path)
    ours = {tag: value for level in levels.values() for tag, value in level.items()}
    reference = _read(path)

    for tag, value in ours.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = reference[int(tag, 16)].to_json_dict(None, MAX_VALUE_BYTES)
        assert value == expected, tag
    assert "7FE00010" not in ours
    assert not [tag for tag in ours if tag.startswith("0002")]
    for tag, raw in _read(path).items():  # every small top-level attribute is kept
        size = getattr(raw, "length", None)  # converted elements (SpecificCharacterSet)
        small = raw.VR != "SQ" and (size is None or size <= MAX_VALUE_BYTES)
        if small and tag >> 16 != 2 and tag & 0xFFFF != 0 and tag != 0x7FE00010:
            assert f"{tag:08X}" in ours, tag


def test_each_attribute_lands_on_its_level() -> None:
    levels = _ours(Path(str(get_testdata_file("CT_small.dcm"))))

    assert "00100010" in levels["patient"]  # PatientName
    assert "0020000D" in levels["study"]  # StudyInstanceUID
    assert "00080070" in levels["series"]  # Manufacturer (Equipment IE)
    assert "00080018" in levels["instance"]  # SOPInstanceUID
    assert "00431028" in levels["instance"]  # a private attribute
    for level, tags in LEVEL_TAGS.items():
        assert all(int(tag, 16) in tags for tag in levels[level])


def test_large_values_are_left_out() -> None:
    ds = _read(Path(str(get_testdata_file("MR_small.dcm"))))
    ds.add_new(0x00204000, "LT", "x" * (MAX_VALUE_BYTES + 1))  # ImageComments
    ds.add_new(0x00181030, "LO", "small")  # ProtocolName

    levels = level_json(ds, ["iso8859"])

    assert "00204000" not in json.loads(levels["instance"] or "{}")
    assert json.loads(levels["series"] or "{}")["00181030"] == {"vr": "LO", "Value": ["small"]}
