"""Index records from a pydicom Dataset, charset-aware and never failing on content.

Policy (DESIGN.md, "Domain model"):

* the four identifying UIDs (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID,
  SOPClassUID) must be present and valid (PS3.5 9.1), otherwise
  :class:`~dicomcloud.errors.CannotUnderstand` is raised naming the attribute;
* every other attribute is descriptive: a missing, malformed, over-long, undecodable
  or wrongly encoded value becomes ``None`` or a clipped value in the record, with an
  :class:`~dicomcloud.domain.records.ExtractionWarning`; the stored file keeps it.

Values are read from the elements without pydicom's value conversion (which may warn
or raise on bad values, depending on global configuration): text is decoded here
following (0008,0005) Specific Character Set, including ISO 2022 code extensions
(PS3.5 6.1.2.5 and PS3.3 C.12.1.1.2), and binary US values are unpacked here.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from pydicom import Dataset, config
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.valuerep import PersonName as PydicomPersonName

from dicomcloud.domain.charsets import (
    PN_DELIMITERS,
    TEXT_DELIMITERS,
    decode_text,
    python_encodings,
)
from dicomcloud.domain.dates import parse_da, parse_tm
from dicomcloud.domain.level_json import level_json
from dicomcloud.domain.records import (
    ExtractedInstance,
    ExtractionWarning,
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    StudyRecord,
)
from dicomcloud.domain.values import InvalidValue, parse_tenant_id, parse_uid, show
from dicomcloud.domain.vr import MAX_LENGTHS, MULTI_VALUED_VRS, clip
from dicomcloud.errors import CannotUnderstand

__all__ = ["IDENTIFYING_UIDS", "extract_instance"]

#: Attributes whose absence or invalidity rejects the instance.
IDENTIFYING_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")

_STRING_VRS = frozenset(MAX_LENGTHS)
_INT_VRS = {"US": "H", "SS": "h", "UN": "H"}
_DS_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_IS_RE = re.compile(r"[+-]?[0-9]+")
_IS_FLOAT_RE = re.compile(r"([+-]?[0-9]+)\.0*")
_AS_RE = re.compile(r"[0-9]{3}[DWMY]")
_DS_MAX = 16  # PS3.5 table 6.2-1


@functools.cache
def _tag_and_vr(keyword: str) -> tuple[int, str]:
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - keywords are constants of this module
        raise KeyError(keyword)
    return tag, dictionary_VR(tag)


def _is_values(value: object) -> bool:
    """A list of values (list, tuple, pydicom MultiValue), not str or bytes."""
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _tidy_person_name(value: str) -> str:
    """Groups of one PN value with padding and trailing empty groups removed, as
    pydicom's PersonName presents them."""
    name = PydicomPersonName(value, validation_mode=config.IGNORE)
    groups = [group.strip(" ") for group in name.components]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


_T = TypeVar("_T")


def _never_fails(
    method: Callable[[_Reader, str], _T | None],
) -> Callable[[_Reader, str], _T | None]:
    """A descriptive attribute that cannot be read becomes None plus a warning."""

    @functools.wraps(method)
    def read(self: _Reader, keyword: str) -> _T | None:
        try:
            return method(self, keyword)
        except Exception as exc:
            self.warn(keyword, f"not indexed: {type(exc).__name__}: {exc}")
            return None

    return read


class _Reader:
    """Reads single attributes of one dataset, collecting warnings."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.warnings: list[ExtractionWarning] = []
        self.encodings: list[str] = [default_encoding]
        try:
            self.encodings = self._encodings()
        except Exception as exc:
            self.warn("SpecificCharacterSet", f"not usable: {type(exc).__name__}: {exc}")

    def warn(self, keyword: str, reason: str) -> None:
        self.warnings.append(ExtractionWarning(keyword, reason))

    # --- element access ---------------------------------------------------------

    def _element(self, keyword: str) -> tuple[str, Any, bool] | None:
        """The element's (VR, value) without value conversion, or None if absent."""
        tag, expected = _tag_and_vr(keyword)
        try:
            elem = self.ds.get_item(tag)
            if elem is None:
                return None
            vr = elem.VR or expected
            value = elem.value
        except Exception as exc:
            self.warn(keyword, f"cannot be read: {type(exc).__name__}: {exc}")
            return None
        big_endian = isinstance(elem, RawDataElement) and not elem.is_little_endian
        return str(vr), value, big_endian

    def _text_of(self, keyword: str, value: Any, delimiters: frozenset[int]) -> str | None:
        if isinstance(value, bytes | bytearray | memoryview):
            text, lossy = decode_text(bytes(value), self.encodings, delimiters)
            if lossy:
                self.warn(
                    keyword,
                    f"bytes not decodable with {'/'.join(self.encodings)}; replaced by U+FFFD",
                )
            return text
        if isinstance(value, str):
            return value
        if isinstance(value, PydicomPersonName):
            return "=".join(value.components)
        if isinstance(value, int | float | Decimal):
            return str(value)
        if isinstance(value, Sequence):  # list, tuple, pydicom MultiValue
            parts = [self._text_of(keyword, item, delimiters) for item in value]
            return "\\".join(part or "" for part in parts)
        self.warn(keyword, f"has a value of type {type(value).__name__}; not indexed")
        return None

    def text(self, keyword: str) -> str | None:
        """The decoded value with padding removed per value, or None if empty."""
        found = self._element(keyword)
        if found is None:
            return None
        vr, value, _ = found
        expected = _tag_and_vr(keyword)[1]
        if value is None:
            return None
        if vr not in _STRING_VRS and vr != "UN":
            self.warn(keyword, f"has VR {vr}, expected {expected}; not indexed")
            return None
        if vr not in (expected, "UN"):
            self.warn(keyword, f"has VR {vr}, expected {expected}; read as {expected}")
        delimiters = PN_DELIMITERS if expected == "PN" else TEXT_DELIMITERS
        try:
            text = self._text_of(keyword, value, delimiters)
        except Exception as exc:
            self.warn(keyword, f"cannot be decoded: {type(exc).__name__}: {exc}")
            return None
        if text is None:
            return None
        if expected in MULTI_VALUED_VRS:
            parts = [part.strip(" \x00") for part in text.split("\\")]
            if not any(parts):
                return None
            return "\\".join(parts)
        return text.rstrip(" \x00") or None

    def _single(self, keyword: str) -> str | None:
        text = self.text(keyword)
        if text is not None and "\\" in text:
            self.warn(keyword, f"has {text.count(chr(92)) + 1} values, expected 1; not indexed")
            return None
        return text

    # --- typed readers ----------------------------------------------------------

    @_never_fails
    def string(self, keyword: str) -> str | None:
        """LO, SH, CS, PN...: clipped to the VR's length (PS3.5 6.2)."""
        text = self.text(keyword)
        if text is None:
            return None
        vr = _tag_and_vr(keyword)[1]
        if vr == "PN":
            text = "\\".join(_tidy_person_name(value) for value in text.split("\\"))
        clipped, was_clipped = clip(text, vr)
        if was_clipped:
            unit = "per component group" if vr == "PN" else "per value"
            self.warn(
                keyword,
                f"longer than {MAX_LENGTHS[vr]} characters {unit} ({vr}, PS3.5 6.2); clipped",
            )
        return clipped or None

    @_never_fails
    def age(self, keyword: str) -> str | None:
        text = self._single(keyword)
        if text is not None and _AS_RE.fullmatch(text) is None:
            self.warn(keyword, f"{show(text)} is not an AS value (nnnD/W/M/Y); not indexed")
            return None
        return text

    @_never_fails
    def date(self, keyword: str) -> str | None:
        return self._parsed(keyword, parse_da)

    @_never_fails
    def time(self, keyword: str) -> str | None:
        return self._parsed(keyword, parse_tm)

    def _parsed(self, keyword: str, parse: Any) -> str | None:
        text = self._single(keyword)
        if text is None:
            return None
        try:
            result: str = parse(text)
        except InvalidValue as exc:
            self.warn(keyword, f"{exc}; not indexed")
            return None
        return result

    @_never_fails
    def decimal(self, keyword: str) -> float | None:
        text = self._single(keyword)
        if text is None or not self._valid_ds(keyword, text):
            return None
        return float(text)

    @_never_fails
    def decimals(self, keyword: str) -> str | None:
        """Multi-valued DS kept as text (``1\\0\\0``), if every value is numeric."""
        text = self.text(keyword)
        if text is None:
            return None
        if not all(self._valid_ds(keyword, part) for part in text.split("\\")):
            return None
        return text

    def _valid_ds(self, keyword: str, text: str) -> bool:
        if _DS_RE.fullmatch(text) is None or not math.isfinite(float(text)):
            self.warn(keyword, f"{show(text)} is not a decimal string (DS); not indexed")
            return False
        if len(text) > _DS_MAX:
            self.warn(keyword, f"{show(text)} is longer than 16 characters (DS, PS3.5 6.2)")
        return True

    @_never_fails
    def integer(self, keyword: str) -> int | None:
        """IS values (PS3.5 6.2: a signed 32-bit integer as text)."""
        return self._int_text(keyword, self._single(keyword))

    def _int_text(self, keyword: str, text: str | None) -> int | None:
        if text is None:
            return None
        if _IS_RE.fullmatch(text) is not None:
            number = int(text)
        elif (match := _IS_FLOAT_RE.fullmatch(text)) is not None:
            number = int(match.group(1))
            self.warn(keyword, f"{show(text)} is not an integer string (IS); read as {number}")
        else:
            self.warn(keyword, f"{show(text)} is not an integer string (IS); not indexed")
            return None
        if not -(2**31) <= number < 2**31:
            self.warn(keyword, f"{number} is out of the IS range (PS3.5 6.2); not indexed")
            return None
        return number

    @_never_fails
    def unsigned(self, keyword: str) -> int | None:
        """US values (binary, little or big endian; UN read as little endian)."""
        found = self._element(keyword)
        if found is None or found[1] is None:
            return None
        vr, value, big_endian = found
        if vr in _STRING_VRS:
            number = self._int_text(keyword, self._single(keyword))
        elif isinstance(value, bytes | bytearray | memoryview) and vr in _INT_VRS:
            raw = bytes(value)
            if not raw:
                return None
            if len(raw) % 2:
                self.warn(keyword, f"has {len(raw)} bytes, not a multiple of 2; not indexed")
                return None
            order = ">" if big_endian and vr != "UN" else "<"
            numbers = struct.unpack(f"{order}{len(raw) // 2}{_INT_VRS[vr]}", raw)
            number = self._first(keyword, list(numbers))
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif _is_values(value) and all(isinstance(v, int) for v in value):
            number = self._first(keyword, list(value))
        else:
            self.warn(keyword, f"has VR {vr} and value type {type(value).__name__}; not indexed")
            return None
        if number is not None and not 0 <= number <= 0xFFFF:
            self.warn(keyword, f"{number} is out of the US range 0-65535; not indexed")
            return None
        return number

    def _first(self, keyword: str, numbers: list[int]) -> int | None:
        if not numbers:
            return None
        if len(numbers) > 1:
            self.warn(keyword, f"has {len(numbers)} values, expected 1; first indexed")
        return numbers[0]

    def uid(self, keyword: str) -> str:
        """An identifying UID; raises CannotUnderstand when missing or invalid."""
        found = self._element(keyword)
        if found is None:
            raise CannotUnderstand(f"{keyword} is missing")
        vr, value, _ = found
        if value is None:
            raise CannotUnderstand(f"{keyword} is empty")
        if vr not in _STRING_VRS and vr != "UN":
            raise CannotUnderstand(f"{keyword} has VR {vr}, expected UI")
        if isinstance(value, bytes | bytearray | memoryview):
            try:
                value = bytes(value).decode("ascii")
            except UnicodeDecodeError:
                raise CannotUnderstand(f"{keyword} contains non-ASCII bytes") from None
        elif _is_values(value):
            value = "\\".join(str(v) for v in value)
        if not isinstance(value, str):
            raise CannotUnderstand(f"{keyword} has VR {vr}, not a UID value")
        try:
            return parse_uid(value, name=keyword)
        except InvalidValue as exc:
            raise CannotUnderstand(str(exc)) from None

    # --- Specific Character Set ---------------------------------------------------

    def _encodings(self) -> list[str]:
        keyword = "SpecificCharacterSet"
        text = self.text(keyword)  # decoded with the default repertoire
        encodings, problems = python_encodings(text.split("\\") if text else [])
        for problem in problems:
            self.warn(keyword, problem)
        return encodings


def extract_instance(
    ds: Dataset,
    *,
    tenant_id: str,
    transfer_syntax_uid: str,
    blob_key: str = "",
    size: int = 0,
) -> ExtractedInstance:
    """Build the index records of one instance (see the module docstring for the
    policy).  Raises :class:`~dicomcloud.errors.CannotUnderstand` for a missing or
    invalid identifying UID or transfer syntax UID, and
    :class:`~dicomcloud.domain.values.InvalidValue` for an invalid ``tenant_id``
    (a caller error, not the instance's)."""
    tenant = parse_tenant_id(tenant_id)
    if not isinstance(ds, Dataset):
        raise CannotUnderstand(f"not a DICOM data set ({type(ds).__name__})")
    try:
        transfer_syntax = parse_uid(transfer_syntax_uid, name="TransferSyntaxUID")
    except InvalidValue as exc:
        raise CannotUnderstand(str(exc)) from None
    try:
        return _extract(_Reader(ds), tenant, transfer_syntax, blob_key, size)
    except CannotUnderstand:
        raise
    except Exception as exc:  # a defect here must still not escape as a crash
        raise CannotUnderstand(f"data set could not be read: {type(exc).__name__}: {exc}") from exc


def _level_json(r: _Reader) -> dict[str, str | None]:
    """Each level's attributes as DICOM JSON text; never fails the instance."""
    try:
        return level_json(r.ds, r.encodings)
    except Exception as exc:
        r.warn("includefield", f"attributes not kept for search: {type(exc).__name__}: {exc}")
        return dict.fromkeys(("patient", "study", "series", "instance"))


def _extract(
    r: _Reader, tenant: str, transfer_syntax: str, blob_key: str, size: int
) -> ExtractedInstance:
    study_uid = r.uid("StudyInstanceUID")
    series_uid = r.uid("SeriesInstanceUID")
    sop_uid = r.uid("SOPInstanceUID")
    sop_class = r.uid("SOPClassUID")
    patient_id = r.string("PatientID") or ""
    levels = _level_json(r)
    patient = PatientRecord(
        tenant_id=tenant,
        patient_id=patient_id,
        issuer_of_patient_id=r.string("IssuerOfPatientID"),
        patient_name=r.string("PatientName"),
        patient_birth_date=r.date("PatientBirthDate"),
        patient_birth_time=r.time("PatientBirthTime"),
        patient_sex=r.string("PatientSex"),
        attributes=levels["patient"],
    )
    study = StudyRecord(
        tenant_id=tenant,
        study_instance_uid=study_uid,
        patient_id=patient_id,
        study_date=r.date("StudyDate"),
        study_time=r.time("StudyTime"),
        accession_number=r.string("AccessionNumber"),
        study_id=r.string("StudyID"),
        study_description=r.string("StudyDescription"),
        referring_physician_name=r.string("ReferringPhysicianName"),
        patient_age=r.age("PatientAge"),
        patient_size=r.decimal("PatientSize"),
        patient_weight=r.decimal("PatientWeight"),
        attributes=levels["study"],
    )
    series = SeriesRecord(
        tenant_id=tenant,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        modality=r.string("Modality"),
        series_number=r.integer("SeriesNumber"),
        series_date=r.date("SeriesDate"),
        series_time=r.time("SeriesTime"),
        series_description=r.string("SeriesDescription"),
        body_part_examined=r.string("BodyPartExamined"),
        protocol_name=r.string("ProtocolName"),
        performed_procedure_step_start_date=r.date("PerformedProcedureStepStartDate"),
        performed_procedure_step_start_time=r.time("PerformedProcedureStepStartTime"),
        attributes=levels["series"],
    )
    instance = InstanceRecord(
        tenant_id=tenant,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
        blob_key=blob_key,
        size=size,
        instance_number=r.integer("InstanceNumber"),
        content_date=r.date("ContentDate"),
        content_time=r.time("ContentTime"),
        number_of_frames=r.integer("NumberOfFrames"),
        rows=r.unsigned("Rows"),
        columns=r.unsigned("Columns"),
        bits_allocated=r.unsigned("BitsAllocated"),
        bits_stored=r.unsigned("BitsStored"),
        high_bit=r.unsigned("HighBit"),
        pixel_representation=r.unsigned("PixelRepresentation"),
        samples_per_pixel=r.unsigned("SamplesPerPixel"),
        photometric_interpretation=r.string("PhotometricInterpretation"),
        image_type=r.string("ImageType"),
        image_orientation_patient=r.decimals("ImageOrientationPatient"),
        image_position_patient=r.decimals("ImagePositionPatient"),
        slice_thickness=r.decimal("SliceThickness"),
        spacing_between_slices=r.decimal("SpacingBetweenSlices"),
        slice_location=r.decimal("SliceLocation"),
        rescale_intercept=r.decimal("RescaleIntercept"),
        rescale_slope=r.decimal("RescaleSlope"),
        rescale_type=r.string("RescaleType"),
        window_center=r.decimals("WindowCenter"),
        window_width=r.decimals("WindowWidth"),
        attributes=levels["instance"],
    )
    return ExtractedInstance(patient, study, series, instance, tuple(r.warnings))
