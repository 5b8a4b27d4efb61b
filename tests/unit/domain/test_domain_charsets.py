"""Specific Character Set handling of the extractor, against pydicom's charset files."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from domain_dataset_builders import EXPLICIT_LE, element, read_with_uids
from pydicom.data import get_charset_files

from dicomcloud.domain.charsets import PN_DELIMITERS, decode_text, python_encodings
from dicomcloud.domain.extraction import extract_instance
from dicomcloud.domain.records import ExtractedInstance
from dicomcloud.domain.vr import clip

CHARSET_FILES = sorted(get_charset_files("*.dcm"), key=lambda p: Path(p).name)

# keyword -> (record, field) for the text attributes the charset files carry
TEXT_FIELDS = {
    "PatientName": ("patient", "patient_name"),
    "PatientID": ("patient", "patient_id"),
    "AccessionNumber": ("study", "accession_number"),
    "ReferringPhysicianName": ("study", "referring_physician_name"),
    "StudyID": ("study", "study_id"),
    "StudyDescription": ("study", "study_description"),
    "SeriesDescription": ("series", "series_description"),
    "RescaleType": ("instance", "rescale_type"),
}


def _with_uids(ds: pydicom.Dataset) -> pydicom.Dataset:
    for keyword, uid in [
        ("StudyInstanceUID", "1.2.3"),
        ("SeriesInstanceUID", "1.2.3.4"),
        ("SOPInstanceUID", "1.2.3.4.5"),
        ("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7"),
    ]:
        if keyword not in ds:
            setattr(ds, keyword, uid)
    return ds


def _extract_file(name: str) -> ExtractedInstance:
    path = next(p for p in CHARSET_FILES if Path(p).name == name)
    ds = _with_uids(pydicom.dcmread(path))
    return extract_instance(ds, tenant_id="t", transfer_syntax_uid=EXPLICIT_LE)


def _pydicom_text(value: object, vr: str) -> str:
    values = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
    text = "\\".join(str(v).strip(" ") for v in values)
    return clip(text, vr)[0]


def test_pydicom_ships_the_charset_files() -> None:
    names = {Path(p).name for p in CHARSET_FILES}
    assert {"chrH31.dcm", "chrX1.dcm", "chrX2.dcm", "chrI2.dcm", "chrArab.dcm"} <= names
    assert len(names) >= 15


@pytest.mark.parametrize("path", CHARSET_FILES, ids=lambda p: Path(p).name)
def test_charset_file_decodes_like_pydicom(path: str) -> None:
    ds = _with_uids(pydicom.dcmread(path))
    result = extract_instance(ds, tenant_id="t", transfer_syntax_uid=EXPLICIT_LE)
    assert result.warnings == ()
    reference = pydicom.dcmread(path)
    compared = 0
    for keyword, (record, field) in TEXT_FIELDS.items():
        got = getattr(getattr(result, record), field)
        if keyword not in reference or reference[keyword].value in (None, ""):
            assert got in (None, "")
            continue
        expected = _pydicom_text(reference[keyword].value, reference[keyword].VR)
        assert got == expected, keyword
        compared += 1
    if "PatientName" in reference:
        assert compared >= 2


@pytest.mark.parametrize(
    ("name", "patient_name"),
    [
        ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("chrH32.dcm", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
        ("chrX1.dcm", "Wang^XiaoDong=王^小東"),
        ("chrX2.dcm", "Wang^XiaoDong=王^小东"),
        ("chrI2.dcm", "Hong^Gildong=洪^吉洞=홍^길동"),
        ("chrKoreanMulti.dcm", "김희중"),
        ("chrJapMulti.dcm", "やまだ^たろう"),
        ("chrRuss.dcm", "Люкceмбypг"),
        ("chrGreek.dcm", "Διονυσιος"),
        ("chrHbrw.dcm", "שרון^דבורה"),
        ("chrArab.dcm", "قباني^لنزار"),
        ("chrFren.dcm", "Buc^Jérôme"),
        ("chrGerm.dcm", "Äneas^Rüdiger"),
    ],
)
def test_known_patient_names(name: str, patient_name: str) -> None:
    assert _extract_file(name).patient.patient_name == patient_name


def test_sequence_only_charset_files_have_no_top_level_name() -> None:
    result = _extract_file("chrSQEncoding.dcm")
    assert result.patient.patient_name is None
    assert result.warnings == ()


def test_gbk() -> None:
    ds = read_with_uids(
        element(0x00080005, "CS", "GBK"),
        element(0x00100010, "PN", "Wang^XiaoDong=王^小东".encode("gbk")),
        element(0x00081030, "LO", "胸部平扫".encode("gbk")),
    )
    result = extract_instance(ds, tenant_id="t", transfer_syntax_uid=EXPLICIT_LE)
    assert result.patient.patient_name == "Wang^XiaoDong=王^小东"
    assert result.study.study_description == "胸部平扫"
    assert result.warnings == ()


def test_gbk_trail_byte_equal_to_backslash_does_not_split_values() -> None:
    text = "乗乗"  # 0x81 0x5C in GBK: the second byte is the code of '\\'
    assert b"\\" in text.encode("gbk")
    ds = read_with_uids(
        element(0x00080005, "CS", "GBK"), element(0x00081030, "LO", text.encode("gbk"))
    )
    result = extract_instance(ds, tenant_id="t", transfer_syntax_uid=EXPLICIT_LE)
    assert result.study.study_description == text


def test_thai() -> None:
    ds = read_with_uids(
        element(0x00080005, "CS", "ISO_IR 166"),
        element(0x00100010, "PN", "สมชาย^ใจดี".encode("tis_620")),
    )
    result = extract_instance(ds, tenant_id="t", transfer_syntax_uid=EXPLICIT_LE)
    assert result.patient.patient_name == "สมชาย^ใจดี"


def test_latin1_and_utf8() -> None:
    for charset, codec in [("ISO_IR 100", "latin-1"), ("ISO_IR 192", "utf-8")]:
        ds = read_with_uids(
            element(0x00080005, "CS", charset),
            element(0x00100010, "PN", "Müller^Zoë".encode(codec)),
        )
        result = extract_instance(ds, tenant_id="t", transfer_syntax_uid=EXPLICIT_LE)
        assert result.patient.patient_name == "Müller^Zoë"


# --- decode_text / python_encodings --------------------------------------------------


def test_escape_sequences_switch_character_sets() -> None:
    encodings, problems = python_encodings(["", "ISO 2022 IR 87"])
    assert problems == []
    raw = b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"
    assert decode_text(raw, encodings, PN_DELIMITERS) == ("Yamada^Tarou=山田^太郎", False)


def test_delimiter_resets_single_byte_code_extension() -> None:
    encodings, _ = python_encodings(["", "ISO 2022 IR 100"])
    # ESC - A designates Latin-1 to G1; after '^' the initial set is in force again
    raw = b"\x1b-A\xe9^\xe9"
    text, lossy = decode_text(raw, ["ascii", *encodings[1:]], PN_DELIMITERS)
    assert text == "é^\ufffd"
    assert lossy


def test_unknown_escape_sequence_is_reported() -> None:
    text, lossy = decode_text(b"abc\x1b%Gdef", ["iso8859"])
    assert lossy
    assert text.startswith("abc\ufffd")


def test_escape_for_an_undeclared_character_set_is_reported() -> None:
    _, lossy = decode_text(b"\x1b$B;3ED", ["iso8859"])
    assert lossy


@pytest.mark.parametrize(
    ("terms", "encodings", "problem"),
    [
        ([], ["iso8859"], None),
        ([""], ["iso8859"], None),
        (["ISO_IR 192"], ["UTF8"], None),
        (["ISO_IR 192", "ISO 2022 IR 87"], ["UTF8"], "allows no code extensions"),
        (["", "GB18030"], ["iso8859"], "cannot be a code extension"),
        (["ISO IR 100"], ["latin_1"], "is misspelt; read as 'ISO_IR 100'"),
        (["ISO 2022 IR87"], ["iso2022_jp"], "read as 'ISO 2022 IR 87'"),
        (["KLINGON"], ["iso8859"], "unknown term 'KLINGON'"),
    ],
)
def test_python_encodings(terms: list[str], encodings: list[str], problem: str | None) -> None:
    got, problems = python_encodings(terms)
    assert got == encodings
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problem in problems[0]
