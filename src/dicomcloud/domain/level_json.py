"""The DICOM JSON (PS3.18 F.2) of each level's attributes, kept in the index at ingest so
that QIDO-RS ``includefield`` (PS3.18 8.3.4.3) is answered without opening files.

Every top-level attribute goes to one level: the Patient IE modules to the patient, the
Study IE modules to the study, the Series, Frame of Reference and Equipment IE modules
to the series (PS3.3 A.1.2 and the modules named below), all others to the instance.
File Meta (group 0002), group lengths, Pixel Data and every value longer than
:data:`MAX_VALUE_BYTES` are left out: bulk data stays in the stored file.

Elements still in their encoded form (pydicom's ``RawDataElement``, the usual case after
parsing) are converted here, several times faster than pydicom's ``to_json_dict``
(measured 35 us per element there, ~5 us here); sequence items are converted the same
way, other converted elements go through pydicom.  A sequence whose encoding exceeds
64 KiB is left out unparsed.  ``tests/unit/domain/test_level_json.py`` checks the result against
pydicom's own JSON on its test files.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from dicomcloud.domain.charsets import (
    PN_DELIMITERS,
    TEXT_DELIMITERS,
    decode_text,
    python_encodings,
)

__all__ = ["LEVEL_TAGS", "MAX_VALUE_BYTES", "level_json"]

#: Longer values are bulk data: not kept in the index (PS3.18 8.3.4.3 lets the server
#: leave out what it does not store).
MAX_VALUE_BYTES: Final = 1024

#: Patient IE: Patient module (PS3.3 C.7.1.1), Clinical Trial Subject (C.7.1.3).
_PATIENT: Final = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthDateInAlternativeCalendar",
    "PatientDeathDateInAlternativeCalendar",
    "PatientAlternativeCalendar",
    "PatientSex",
    "QualityControlSubject",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientComments",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "BreedRegistrationSequence",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "EthnicGroup",
    "ReferencedPatientSequence",
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID",
)
#: Study IE: General Study (C.7.2.1), Patient Study (C.7.2.2), Clinical Trial Study
#: (C.7.2.3).
_STUDY: Final = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingService",
    "ReferencedStudySequence",
    "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientBodyMassIndex",
    "MeasuredAPDimension",
    "MeasuredLateralDimension",
    "MedicalAlerts",
    "Allergies",
    "SmokingStatus",
    "PregnancyStatus",
    "LastMenstrualDate",
    "Occupation",
    "AdditionalPatientHistory",
    "AdmissionID",
    "PatientState",
    "ClinicalTrialTimePointID",
    "ClinicalTrialTimePointDescription",
)
#: Series IE: General Series (C.7.3.1); Frame of Reference IE (C.7.4.1); Equipment IE:
#: General Equipment (C.7.5.1).
_SERIES: Final = (
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "Laterality",
    "SeriesDate",
    "SeriesTime",
    "PerformingPhysicianName",
    "ProtocolName",
    "SeriesDescription",
    "SeriesDescriptionCodeSequence",
    "OperatorsName",
    "ReferencedPerformedProcedureStepSequence",
    "RelatedSeriesSequence",
    "BodyPartExamined",
    "PatientPosition",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "RequestAttributesSequence",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepDescription",
    "PerformedProtocolCodeSequence",
    "CommentsOnThePerformedProcedureStep",
    "AnatomicalOrientationType",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Manufacturer",
    "InstitutionName",
    "InstitutionAddress",
    "StationName",
    "InstitutionalDepartmentName",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "SoftwareVersions",
    "SpatialResolution",
    "DateOfLastCalibration",
    "TimeOfLastCalibration",
    "PixelPaddingValue",
)


def _tags(keywords: Sequence[str]) -> frozenset[int]:
    tags = {tag_for_keyword(keyword) for keyword in keywords}
    assert None not in tags, "a keyword above is not in pydicom's dictionary"
    return frozenset(tag for tag in tags if tag is not None)


#: The tags kept at each level above the instance.
LEVEL_TAGS: Final[Mapping[str, frozenset[int]]] = {
    "patient": _tags(_PATIENT),
    "study": _tags(_STUDY),
    "series": _tags(_SERIES),
}
_LEVEL_OF: Final = {tag: level for level, tags in LEVEL_TAGS.items() for tag in tags}

_PIXEL_DATA = 0x7FE00010
_CHARSET_TAG = 0x00080005
#: A longer encoded sequence is left out without parsing it (many items or bulk data).
_MAX_SEQUENCE_BYTES = 64 * MAX_VALUE_BYTES
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_NUMBERS: Final[Mapping[str, str]] = {
    "US": "H",
    "SS": "h",
    "UL": "L",
    "SL": "l",
    "FL": "f",
    "FD": "d",
    "UV": "Q",
    "SV": "q",
}
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _number(text: str, vr: str) -> int | float | str:
    try:
        if vr == "IS":
            return int(text)
        number = float(text)
        return int(number) if number.is_integer() and "." not in text else number
    except ValueError:
        return text


def _text_values(vr: str, raw: bytes, encodings: Sequence[str]) -> list[Any]:
    if vr in _CHARSET_VRS:
        delimiters = PN_DELIMITERS if vr == "PN" else TEXT_DELIMITERS
        text, _ = decode_text(raw, encodings, delimiters)
    else:
        text = raw.decode("latin-1")
    if vr in _SINGLE_VALUED:
        return [text.rstrip(" \x00")]
    values: list[Any] = []
    for part in text.split("\\"):
        part = part.strip(" \x00") if vr not in ("SH", "LO", "UC", "PN") else part.rstrip(" ")
        if not part:
            values.append(None)
        elif vr in ("DS", "IS"):
            values.append(_number(part, vr))
        elif vr == "PN":
            groups = part.split("=")
            values.append({n: g for n, g in zip(_PN_GROUPS, groups, strict=False) if g})
        else:
            values.append(part)
    return values


def _raw_json(raw: RawDataElement, encodings: Sequence[str]) -> dict[str, Any] | None:
    """One encoded element as DICOM JSON; ``{}``: leave it out (bulk); None: let
    pydicom read it (sequences, private tags of implicit VR data sets)."""
    vr = raw.VR
    if vr in (None, "UN"):
        if (raw.tag >> 16) & 1:  # pydicom's private dictionary may know the VR
            return None
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            vr = "UN"
    value = raw.value
    if vr == "SQ" or not isinstance(value, bytes):
        return None
    if not value:
        return {"vr": vr}
    if len(value) > MAX_VALUE_BYTES:
        return {}
    if vr in _BINARY_VRS:
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
    if vr in _NUMBERS or vr == "AT":
        order = "<" if raw.is_little_endian else ">"
        code = "H" if vr == "AT" else _NUMBERS[vr]
        size = struct.calcsize("<" + code)  # standard sizes (native "l" is 8 bytes)
        if len(value) % size:
            return {}
        numbers = list(struct.unpack(f"{order}{len(value) // size}{code}", value))
        if vr == "AT":
            pairs = zip(numbers[::2], numbers[1::2], strict=True)
            return {"vr": vr, "Value": [f"{g:04X}{e:04X}" for g, e in pairs]}
        return {"vr": vr, "Value": numbers}
    values = _text_values(vr, value, encodings)
    if not any(v is not None for v in values):
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _element_json(ds: Dataset, tag: int, element: Any, encodings: Sequence[str]) -> dict[str, Any]:
    """One element of ``ds`` (raw or converted) as DICOM JSON (``{}``: left out)."""
    if isinstance(element, RawDataElement):
        if element.VR == "SQ" and isinstance(element.value, bytes):
            if len(element.value) > _MAX_SEQUENCE_BYTES:
                return {}
        else:
            fast = _raw_json(element, encodings)
            if fast is not None:
                return fast
    element = ds[tag]
    if element.VR == "SQ":
        items = [_dataset_json(item, encodings) for item in element.value]
        if any(item is None for item in items):
            return {}
        return {"vr": "SQ", "Value": items}
    value = element.value
    if isinstance(value, bytes | bytearray | str) and len(value) > MAX_VALUE_BYTES:
        return {}
    converted: dict[str, Any] = element.to_json_dict(None, MAX_VALUE_BYTES)
    return converted


def _charset_terms(ds: Dataset) -> list[str]:
    value = ds[_CHARSET_TAG].value
    if isinstance(value, str) or value is None:
        return [value or ""]
    return [str(term) for term in value]


def _dataset_json(ds: Dataset, encodings: Sequence[str]) -> dict[str, Any] | None:
    """A sequence item as DICOM JSON; None if it holds bulk data (left out whole)."""
    found: dict[str, Any] = {}
    if _CHARSET_TAG in ds:  # an item may have its own (PS3.5 6.1.2.5.3)
        encodings, _ = python_encodings(_charset_terms(ds))
    for key, element in ds.items():
        tag = int(key)
        if tag & 0xFFFF == 0:
            continue
        converted = _element_json(ds, tag, element, encodings)
        if not converted:
            return None
        found[f"{tag:08X}"] = converted
    return found


def level_json(ds: Dataset, encodings: Sequence[str]) -> dict[str, str | None]:
    """The DICOM JSON text of each level's attributes of ``ds`` (``patient``,
    ``study``, ``series``, ``instance``; None when a level has none), text decoded with
    the Python ``encodings`` of its Specific Character Set.  Attributes that cannot be
    converted are left out: this never fails an instance."""
    found: dict[str, dict[str, Any]] = {"patient": {}, "study": {}, "series": {}, "instance": {}}
    for key, element in ds.items():
        tag = int(key)  # plain int: pydicom's BaseTag compares in Python
        if tag >> 16 == 0x0002 or tag & 0xFFFF == 0 or tag == _PIXEL_DATA:
            continue
        try:
            converted = _element_json(ds, tag, element, encodings)
        except Exception:  # a value pydicom cannot read: the file keeps it
            continue
        if converted:
            found[_LEVEL_OF.get(tag, "instance")][f"{tag:08X}"] = converted
    return {
        level: json.dumps(values, ensure_ascii=False, separators=(",", ":")) if values else None
        for level, values in found.items()
    }
