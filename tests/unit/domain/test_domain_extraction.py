"""Index records from data sets (dicomcloud.domain.extraction)."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

import pydicom
import pytest
from domain_dataset_builders import (
    CT_IMAGE,
    EXPLICIT_LE,
    SERIES_UID,
    SOP_UID,
    STUDY_UID,
    element,
    read,
    read_with_uids,
    uids,
)
from pydicom import Dataset, config
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.valuerep import DSdecimal

from dicomcloud.domain.extraction import IDENTIFYING_UIDS, extract_instance
from dicomcloud.domain.records import ExtractedInstance, ExtractionWarning
from dicomcloud.domain.values import InvalidValue
from dicomcloud.errors import CannotUnderstand

TAGS = {
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "SOPInstanceUID": 0x00080018,
    "SOPClassUID": 0x00080016,
}


def extract(ds: Dataset, **kwargs: object) -> ExtractedInstance:
    return extract_instance(ds, tenant_id="acme", transfer_syntax_uid=EXPLICIT_LE, **kwargs)  # type: ignore[arg-type]


def warned(result: ExtractedInstance) -> dict[str, str]:
    return {w.keyword: w.reason for w in result.warnings}


def full_dataset() -> Dataset:
    """An in-memory data set with every indexed attribute (no file meta)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.SOPInstanceUID = SOP_UID
    ds.SOPClassUID = CT_IMAGE
    ds.PatientID = "PID-42"
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientName = "Müller^Jürgen"
    ds.PatientBirthDate = "19700102"
    ds.PatientBirthTime = "0830"
    ds.PatientSex = "M"
    ds.StudyDate = "20240229"
    ds.StudyTime = "143000.5"
    ds.AccessionNumber = "ACC1"
    ds.StudyID = "S1"
    ds.StudyDescription = "CT Thorax"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.PatientAge = "054Y"
    ds.PatientSize = "1.82"
    ds.PatientWeight = "80"
    ds.Modality = "CT"
    ds.SeriesNumber = "3"
    ds.SeriesDate = "20240229"
    ds.SeriesTime = "1431"
    ds.SeriesDescription = "Axial 1mm"
    ds.BodyPartExamined = "CHEST"
    ds.ProtocolName = "Thorax routine"
    ds.PerformedProcedureStepStartDate = "20240229"
    ds.PerformedProcedureStepStartTime = "14"
    ds.InstanceNumber = "12"
    ds.ContentDate = "20240229"
    ds.ContentTime = "143101"
    ds.NumberOfFrames = "1"
    ds.Rows = 512
    ds.Columns = 256
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = ["-125.5", "-130", "42.25"]
    ds.SliceThickness = "1.0"
    ds.SpacingBetweenSlices = "0.8"
    ds.SliceLocation = "-42.5"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = ["40", "400"]
    ds.WindowWidth = ["400", "2000"]
    return ds


def test_every_record_field_is_filled() -> None:
    result = extract(full_dataset(), blob_key="acme/1/2/3.dcm", size=1234)
    assert result.warnings == ()
    p, st, se, i = result.patient, result.study, result.series, result.instance
    assert (p.tenant_id, p.patient_id, p.issuer_of_patient_id) == ("acme", "PID-42", "HOSP")
    assert (p.patient_name, p.patient_birth_date, p.patient_birth_time, p.patient_sex) == (
        "Müller^Jürgen",
        "19700102",
        "083000",
        "M",
    )
    assert (st.tenant_id, st.study_instance_uid, st.patient_id) == ("acme", STUDY_UID, "PID-42")
    assert (st.study_date, st.study_time) == ("20240229", "143000.500000")
    assert (st.accession_number, st.study_id, st.study_description) == ("ACC1", "S1", "CT Thorax")
    assert st.referring_physician_name == "House^Gregory"
    assert (st.patient_age, st.patient_size, st.patient_weight) == ("054Y", 1.82, 80.0)
    assert (se.tenant_id, se.study_instance_uid, se.series_instance_uid) == (
        "acme",
        STUDY_UID,
        SERIES_UID,
    )
    assert (se.modality, se.series_number, se.series_date, se.series_time) == (
        "CT",
        3,
        "20240229",
        "143100",
    )
    assert (se.series_description, se.body_part_examined, se.protocol_name) == (
        "Axial 1mm",
        "CHEST",
        "Thorax routine",
    )
    assert se.performed_procedure_step_start_date == "20240229"
    assert se.performed_procedure_step_start_time == "140000"
    assert (i.tenant_id, i.study_instance_uid, i.series_instance_uid) == (
        "acme",
        STUDY_UID,
        SERIES_UID,
    )
    assert (i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid) == (
        SOP_UID,
        CT_IMAGE,
        EXPLICIT_LE,
    )
    assert (i.blob_key, i.size) == ("acme/1/2/3.dcm", 1234)
    assert (i.instance_number, i.content_date, i.content_time, i.number_of_frames) == (
        12,
        "20240229",
        "143101",
        1,
    )
    assert (i.rows, i.columns, i.bits_allocated, i.bits_stored, i.high_bit) == (
        512,
        256,
        16,
        12,
        11,
    )
    assert (i.pixel_representation, i.samples_per_pixel) == (1, 1)
    assert i.photometric_interpretation == "MONOCHROME2"
    assert i.image_type == "ORIGINAL\\PRIMARY\\AXIAL"
    assert i.image_orientation_patient == "1\\0\\0\\0\\1\\0"
    assert i.image_position_patient == "-125.5\\-130\\42.25"
    assert (i.slice_thickness, i.spacing_between_slices, i.slice_location) == (1.0, 0.8, -42.5)
    assert (i.rescale_intercept, i.rescale_slope, i.rescale_type) == (-1024.0, 1.0, "HU")
    assert (i.window_center, i.window_width) == ("40\\400", "400\\2000")


def test_same_values_from_bytes_as_from_memory() -> None:
    ds = read_with_uids(
        element(0x00100020, "LO", "PID-42"),
        element(0x00100010, "PN", "Doe^John"),
        element(0x00280010, "US", struct.pack("<H", 512)),
        element(0x00080008, "CS", "ORIGINAL\\PRIMARY"),
        element(0x00281050, "DS", "40\\400"),
        element(0x00200013, "IS", " 7"),
        element(0x00080030, "TM", "14:30:00"),
    )
    result = extract(ds)
    assert result.warnings == ()
    assert result.patient.patient_id == "PID-42"
    assert result.patient.patient_name == "Doe^John"
    assert result.instance.rows == 512
    assert result.instance.image_type == "ORIGINAL\\PRIMARY"
    assert result.instance.window_center == "40\\400"
    assert result.instance.instance_number == 7
    assert result.study.study_time == "143000"


def test_big_endian_us_values() -> None:
    elements = [*uids(), element(0x00280010, "US", struct.pack(">H", 512))]
    assert extract(read(elements, little_endian=False)).instance.rows == 512


def test_only_the_four_uids() -> None:
    result = extract(read(uids()))
    assert result.warnings == ()
    assert result.patient.patient_id == ""
    assert result.study.patient_id == ""
    assert result.patient.patient_name is None
    assert result.study.study_date is None
    assert result.instance.rows is None
    assert result.instance.sop_instance_uid == SOP_UID


def test_uid_padding_is_removed() -> None:
    ds = read(uids(sop="1.2.3"))  # odd length: written with a trailing NUL
    assert extract(ds).instance.sop_instance_uid == "1.2.3"


@pytest.mark.parametrize("keyword", IDENTIFYING_UIDS)
def test_missing_identifying_uid_is_rejected(keyword: str) -> None:
    ds = read([e for e in uids() if e[0] != TAGS[keyword]])
    with pytest.raises(CannotUnderstand, match=f"^{keyword} is missing$") as caught:
        extract(ds)
    assert caught.value.dimse_status == 0xC000


@pytest.mark.parametrize("keyword", IDENTIFYING_UIDS)
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"", "is empty"),
        (b"1..2", "has an empty component"),
        (b"1.02", "has a component with a leading zero"),
        (b"../../etc/passwd", "contains the character '/'"),
        (b"1.2/3", "contains the character '/'"),
        (b"1.2\x00.3", "contains the character '\\x00'"),
        (b"1.2\\1.3", "contains the character '\\\\'"),
        ("1.\u0662".encode(), "non-ASCII"),
        (b"1." + b"2" * 63, "is 65 characters long"),
    ],
)
def test_invalid_identifying_uid_is_rejected(keyword: str, value: bytes, problem: str) -> None:
    elements = [e if e[0] != TAGS[keyword] else element(e[0], "UI", value) for e in uids()]
    with pytest.raises(CannotUnderstand) as caught:
        extract(read(elements))
    assert caught.value.reason.startswith(keyword + " ")
    assert problem in caught.value.reason


def test_identifying_uid_with_a_sequence_vr_is_rejected() -> None:
    elements = [e for e in uids() if e[0] != TAGS["SOPClassUID"]]
    elements.append(element(TAGS["SOPClassUID"], "SQ", b""))
    with pytest.raises(CannotUnderstand, match="SOPClassUID has VR SQ, expected UI"):
        extract(read(elements))


def test_invalid_uid_in_memory_is_rejected() -> None:
    ds = full_dataset()
    ds["SeriesInstanceUID"] = DataElement(
        0x0020000E, "UI", "1.2.3.04", validation_mode=config.IGNORE
    )
    with pytest.raises(
        CannotUnderstand, match=re.escape("SeriesInstanceUID '1.2.3.04' has a component")
    ):
        extract(ds)


def test_invalid_transfer_syntax_uid_is_rejected() -> None:
    with pytest.raises(
        CannotUnderstand, match=re.escape("TransferSyntaxUID '1.2..1' has an empty")
    ):
        extract_instance(read(uids()), tenant_id="acme", transfer_syntax_uid="1.2..1")


def test_invalid_tenant_is_a_caller_error() -> None:
    with pytest.raises(InvalidValue, match=re.escape("tenant id '../x'")):
        extract_instance(read(uids()), tenant_id="../x", transfer_syntax_uid=EXPLICIT_LE)


def test_not_a_dataset_is_rejected() -> None:
    with pytest.raises(CannotUnderstand, match="not a DICOM data set"):
        extract_instance(b"DICM", tenant_id="acme", transfer_syntax_uid=EXPLICIT_LE)  # type: ignore[arg-type]


# --- descriptive values never reject ---------------------------------------------------


def test_long_chinese_study_description_is_clipped_to_64_characters() -> None:
    description = "胸部CT平扫" * 50  # 300 characters
    ds = read_with_uids(
        element(0x00080005, "CS", "ISO_IR 192"),
        element(0x00081030, "LO", description.encode("utf-8")),
    )
    result = extract(ds)
    assert result.study.study_description == description[:64]
    assert warned(result) == {
        "StudyDescription": "longer than 64 characters per value (LO, PS3.5 6.2); clipped"
    }


def test_long_chinese_text_in_memory_and_gb18030() -> None:
    ds = read_with_uids(
        element(0x00080005, "CS", "GB18030"),
        element(0x0008103E, "LO", ("肺" * 300).encode("gb18030")),
    )
    result = extract(ds)
    assert result.series.series_description == "肺" * 64
    assert "SeriesDescription" in warned(result)


@pytest.mark.parametrize(
    ("tag", "vr", "value", "field", "keyword", "reason"),
    [
        (0x00101020, "DS", "abc", "patient_size", "PatientSize", "'abc' is not a decimal"),
        (0x00101030, "DS", "nan", "patient_weight", "PatientWeight", "'nan' is not a decimal"),
        (0x00180050, "DS", "1e999", "slice_thickness", "SliceThickness", "is not a decimal"),
        (0x00200013, "IS", "1.5", "instance_number", "InstanceNumber", "'1.5' is not an integer"),
        (0x00200011, "IS", "x", "series_number", "SeriesNumber", "'x' is not an integer"),
        (0x00200011, "IS", "99999999999", "series_number", "SeriesNumber", "out of the IS range"),
        (0x00080020, "DA", "2024-13-45", "study_date", "StudyDate", "DA '2024-13-45' is not"),
        (0x00080020, "DA", "20240230", "study_date", "StudyDate", "has day 30"),
        (0x00080030, "TM", "25", "study_time", "StudyTime", "has hour 25"),
        (0x00101010, "AS", "54Y", "patient_age", "PatientAge", "is not an AS value"),
        (0x00080020, "DA", "20240101\\20240102", "study_date", "StudyDate", "has 2 values"),
        (0x00281050, "DS", "40\\x", "window_center", "WindowCenter", "'x' is not a decimal"),
    ],
)
def test_malformed_descriptive_values_become_none_with_warning(
    tag: int, vr: str, value: str, field: str, keyword: str, reason: str
) -> None:
    result = extract(read_with_uids(element(tag, vr, value)))
    records = (result.patient, result.study, result.series, result.instance)
    owner = next(r for r in records if hasattr(r, field))
    assert getattr(owner, field) is None
    assert reason in warned(result)[keyword]
    assert len(result.warnings) == 1


def test_integer_valued_decimal_in_is_is_read_with_a_warning() -> None:
    result = extract(read_with_uids(element(0x00200013, "IS", "12.00")))
    assert result.instance.instance_number == 12
    assert warned(result) == {"InstanceNumber": "'12.00' is not an integer string (IS); read as 12"}


def test_over_long_ds_is_kept_with_warning() -> None:
    value = "-0.99999999999999998"
    result = extract(read_with_uids(element(0x00201041, "DS", value)))
    assert result.instance.slice_location == float(value)
    assert "longer than 16 characters" in warned(result)["SliceLocation"]


@pytest.mark.parametrize(
    ("tag", "vr", "value", "check"),
    [
        (0x00080020, "LO", b"20240101", ("study", "study_date", "20240101")),
        (0x00080020, "UN", b"20240101", ("study", "study_date", "20240101")),
        (0x00081030, "SH", b"Knee", ("study", "study_description", "Knee")),
        (0x00280010, "IS", b"512", ("instance", "rows", 512)),
        (0x00280010, "UN", struct.pack("<H", 64), ("instance", "rows", 64)),
        (0x00280010, "SS", struct.pack("<h", 64), ("instance", "rows", 64)),
    ],
)
def test_wrong_but_readable_vr(
    tag: int, vr: str, value: bytes, check: tuple[str, str, object]
) -> None:
    result = extract(read_with_uids(element(tag, vr, value)))
    record, field, expected = check
    assert getattr(getattr(result, record), field) == expected


@pytest.mark.parametrize(
    ("tag", "vr", "value", "keyword", "reason"),
    [
        (0x00081030, "OB", b"\x01\x02", "StudyDescription", "has VR OB, expected LO"),
        (0x00081030, "SQ", b"", "StudyDescription", "has VR SQ, expected LO"),
        (0x00280010, "OW", b"\x01\x02", "Rows", "has VR OW"),
        (0x00280010, "FL", struct.pack("<f", 1.0), "Rows", "has VR FL"),
    ],
)
def test_unreadable_vr_becomes_none_with_warning(
    tag: int, vr: str, value: bytes, keyword: str, reason: str
) -> None:
    result = extract(read_with_uids(element(tag, vr, value)))
    assert reason in warned(result)[keyword]
    assert result.study.study_description is None
    assert result.instance.rows is None


def test_odd_length_us_becomes_none_with_warning() -> None:
    ds = read([*uids(), element(0x00280010, "US", b"\x01\x02\x03")], pad=False)
    result = extract(ds)
    assert result.instance.rows is None
    assert warned(result) == {"Rows": "has 3 bytes, not a multiple of 2; not indexed"}


def test_multi_valued_us_keeps_the_first_value() -> None:
    result = extract(read_with_uids(element(0x00280010, "US", struct.pack("<3H", 1, 2, 3))))
    assert result.instance.rows == 1
    assert warned(result) == {"Rows": "has 3 values, expected 1; first indexed"}


def test_over_long_values_of_each_string_vr_are_clipped() -> None:
    result = extract(
        read_with_uids(
            element(0x00080050, "SH", "A" * 20),
            element(0x00080060, "CS", "B" * 20),
            element(0x00100020, "LO", "C" * 70),
            element(0x00100010, "PN", "D" * 70 + "=" + "E" * 10),
        )
    )
    assert result.study.accession_number == "A" * 16
    assert result.series.modality == "B" * 16
    assert result.patient.patient_id == "C" * 64
    assert result.study.patient_id == "C" * 64
    assert result.patient.patient_name == "D" * 64 + "=" + "E" * 10
    assert set(warned(result)) == {"AccessionNumber", "Modality", "PatientID", "PatientName"}
    assert "per component group (PN" in warned(result)["PatientName"]


def test_empty_and_padding_only_values_are_none() -> None:
    result = extract(
        read_with_uids(
            element(0x00100010, "PN", b""),
            element(0x00081030, "LO", b"    "),
            element(0x00080008, "CS", b"\\"),
            element(0x00100020, "LO", b"  "),
        )
    )
    assert result.patient.patient_name is None
    assert result.study.study_description is None
    assert result.instance.image_type is None
    assert result.patient.patient_id == ""
    assert result.warnings == ()


def test_values_are_stripped_per_value() -> None:
    result = extract(read_with_uids(element(0x00080008, "CS", " ORIGINAL \\ PRIMARY")))
    assert result.instance.image_type == "ORIGINAL\\PRIMARY"


def test_undecodable_bytes_are_replaced_with_warning() -> None:
    ds = read_with_uids(
        element(0x00080005, "CS", "ISO_IR 192"),
        element(0x00081030, "LO", b"Knee \xff\xfe left"),
    )
    result = extract(ds)
    assert result.study.study_description == "Knee \ufffd\ufffd left"
    assert "not decodable" in warned(result)["StudyDescription"]


def test_unknown_character_set_falls_back_with_warning() -> None:
    with pytest.warns(UserWarning, match="Unknown encoding 'ISO_IR 999'"):  # pydicom's reader
        ds = read_with_uids(
            element(0x00080005, "CS", "ISO_IR 999"), element(0x00100010, "PN", b"M\xfcller")
        )
    result = extract(ds)
    assert result.patient.patient_name == "Müller"
    assert "unknown term 'ISO_IR 999'" in warned(result)["SpecificCharacterSet"]


def test_misspelt_character_set_is_corrected_with_warning() -> None:
    with pytest.warns(UserWarning, match="assuming 'ISO_IR 144'"):  # pydicom's reader
        ds = read_with_uids(
            element(0x00080005, "CS", "ISO-IR 144"),
            element(0x00100010, "PN", "Люк".encode("iso8859_5")),
        )
    result = extract(ds)
    assert result.patient.patient_name == "Люк"
    assert "read as 'ISO_IR 144'" in warned(result)["SpecificCharacterSet"]


def test_sequences_and_private_tags_are_ignored() -> None:
    ds = full_dataset()
    item = Dataset()
    item.PatientName = "Not^This"
    item.StudyInstanceUID = "9.9.9"
    ds.ReferencedStudySequence = Sequence([item])
    ds.add_new(0x00090010, "LO", "ACME PRIVATE")
    ds.add_new(0x00091001, "UN", b"\x00\x01\x02\x03")
    ds.add_new(0x00091002, "OB", b"\xff" * 10)
    result = extract(ds)
    assert result.warnings == ()
    assert result.study.study_instance_uid == STUDY_UID
    assert result.patient.patient_name == "Müller^Jürgen"


def test_dataset_with_file_meta_uses_the_dataset_values() -> None:
    ds = full_dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = SOP_UID
    ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
    assert extract(ds).instance.sop_instance_uid == SOP_UID


def test_numeric_values_set_as_numbers_in_memory() -> None:
    ds = full_dataset()
    ds.PatientWeight = 72.5
    ds.WindowCenter = [40.0, 400.0]
    ds.SeriesNumber = 7
    result = extract(ds)
    assert result.study.patient_weight == 72.5
    assert result.instance.window_center == "40.0\\400.0"
    assert result.series.series_number == 7
    assert result.warnings == ()


def test_decimal_ds_values_in_memory() -> None:
    ds = full_dataset()
    ds.add_new(0x00101030, "DS", DSdecimal("80.25"))
    assert extract(ds).study.patient_weight == 80.25


def test_multi_valued_person_names_are_joined() -> None:
    ds = full_dataset()
    ds.ReferringPhysicianName = ["House^Gregory", "Wilson^James"]
    assert extract(ds).study.referring_physician_name == "House^Gregory\\Wilson^James"


def test_trailing_empty_name_groups_are_dropped() -> None:
    result = extract(read_with_uids(element(0x00100010, "PN", "Doe^John==")))
    assert result.patient.patient_name == "Doe^John"


@pytest.fixture
def strict_pydicom() -> Iterator[None]:
    previous = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.RAISE
    try:
        yield
    finally:
        config.settings.reading_validation_mode = previous


def bad_values_dataset() -> Dataset:
    return read_with_uids(
        element(0x00080005, "CS", "ISO_IR 192"),
        element(0x00081030, "LO", ("中" * 300).encode("utf-8")),
        element(0x00200013, "IS", "1.5"),
        element(0x00101020, "DS", "abc"),
        element(0x00080020, "DA", "2024-13-45"),
        element(0x00100010, "PN", b"\xc3\x28"),  # invalid UTF-8
    )


def test_pydicom_complains_on_access_of_bad_values() -> None:
    """The reason the extractor does not use pydicom's value conversion."""
    ds = bad_values_dataset()
    with pytest.warns(UserWarning, match="exceeds the maximum length of 64"):
        _ = ds.StudyDescription
    with pytest.warns(UserWarning, match=re.escape("1.5")):
        _ = ds.InstanceNumber


def test_pydicom_raises_on_access_in_strict_mode(strict_pydicom: None) -> None:
    ds = bad_values_dataset()
    with pytest.raises(ValueError, match=re.escape("1.5")):
        _ = ds.InstanceNumber


@pytest.mark.usefixtures("strict_pydicom")
def test_extraction_of_bad_values_never_raises_even_in_strict_mode() -> None:
    result = extract(bad_values_dataset())
    assert result.study.study_description == "中" * 64
    assert result.instance.instance_number is None
    assert result.study.patient_size is None
    assert result.study.study_date is None
    assert result.patient.patient_name == "\ufffd("
    assert set(warned(result)) == {
        "StudyDescription",
        "InstanceNumber",
        "PatientSize",
        "StudyDate",
        "PatientName",
    }


def test_extraction_of_bad_values_with_default_settings() -> None:
    result = extract(bad_values_dataset())
    assert result.study.study_description == "中" * 64
    assert len(result.warnings) == 5


def test_already_accessed_values_are_read_too() -> None:
    ds = read_with_uids(
        element(0x00080005, "CS", "ISO_IR 100"), element(0x00100010, "PN", b"M\xfcller^J")
    )
    _ = ds.PatientName  # converted by pydicom now
    _ = ds.SpecificCharacterSet
    assert extract(ds).patient.patient_name == "Müller^J"


def test_element_that_cannot_be_read_becomes_a_warning() -> None:
    class Exploding(Dataset):
        def get_item(self, key, *, keep_deferred=False):  # type: ignore[no-untyped-def,override]
            if key == 0x00081030:
                raise OSError("disk went away")
            return super().get_item(key, keep_deferred=keep_deferred)

    ds = Exploding(full_dataset())
    result = extract(ds)
    assert result.study.study_description is None
    assert result.warnings == (
        ExtractionWarning("StudyDescription", "cannot be read: OSError: disk went away"),
    )


@pytest.mark.parametrize(
    ("name", "rows", "position", "window_center"),
    [
        ("CT_small.dcm", 128, "-158.135803\\-179.035797\\-75.699997", None),
        ("MR_small_bigendian.dcm", 64, "-83.9063\\-91.2000\\6.6406", "600"),
        ("MR_small_implicit.dcm", 64, "-83.9063\\-91.2000\\6.6406", "600"),
    ],
)
def test_pydicom_test_files(name: str, rows: int, position: str, window_center: str | None) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))
    result = extract_instance(ds, tenant_id="t", transfer_syntax_uid=ds.file_meta.TransferSyntaxUID)
    assert result.warnings == ()
    assert (result.instance.rows, result.instance.columns) == (rows, rows)
    assert result.instance.bits_stored == 16
    assert result.instance.image_position_patient == position
    assert result.instance.window_center == window_center
    assert result.instance.sop_instance_uid == ds.SOPInstanceUID
    assert result.patient.patient_name == str(ds.PatientName)
